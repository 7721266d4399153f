"""``segkd cheap``: Plug-and-Play replacement plans and their cost tables."""
from __future__ import annotations

from typing import List, Optional

import typer
from rich.table import Table

from segkd.cli.base import out, pair

cheap = typer.Typer(no_args_is_help=True, help="Cheap-convolution students (Plug and Play).")


def plan_rows(model, paths: list[str], block: str, options: dict, size: tuple[int, int]):
    """(student, rows) for replacing ``paths`` (exact) in a copy of ``model``."""
    from segkd.models.cheap import make_cheap_student, replacement_table

    student, records = make_cheap_student(model, paths, block, **options)
    return student, replacement_table(records, model, student, size)


def _table(rows: list[dict], title: str) -> Table:
    t = Table(title=title)
    for c in ("module", "block", "params before", "params after", "GFLOPs before", "GFLOPs after"):
        t.add_column(c, justify="left" if c in ("module", "block") else "right")
    for r in rows:
        style = "bold" if r["path"].startswith(("sum", "total")) else None
        t.add_row(r["path"], r["block"], f"{r['params_before']:,}", f"{r['params_after']:,}",
                  f"{r['flops_before'] / 1e9:.3f}", f"{r['flops_after'] / 1e9:.3f}", style=style)
    return t


@cheap.command("plan")
def plan(model: str = typer.Argument(..., help="teacher checkpoint, config or arch:encoder"),
         paths: Optional[List[str]] = typer.Option(None, "--path", help="conv path or glob (repeatable)"),
         target_params: Optional[float] = typer.Option(None, "--target-params", help="keep this fraction"),
         target_flops: Optional[float] = typer.Option(None, "--target-flops"),
         block: str = typer.Option("dwsep", "--block", help="dwsep | lowrank | grouped"),
         kernel_size: Optional[int] = typer.Option(None, "--kernel-size"),
         dilation: Optional[int] = typer.Option(None, "--dilation"),
         size: str = typer.Option("512,512", "--size", help="H,W for FLOPs and latency"),
         classes: int = typer.Option(21, "--classes"),
         latency: bool = typer.Option(True, "--latency/--no-latency")) -> None:
    """Show what a replacement (explicit or automatic) does: per-conv and total params/FLOPs,
    and measured CPU latency of teacher vs student."""
    from segkd.apps.describe import load_any_model
    from segkd.models.cheap import auto_plan, resolve_paths
    from segkd.models.cost import measure_latency

    hw = pair(size) or (512, 512)  # before any loading: a bad --size is one line, at once
    teacher, what = load_any_model(model, classes)
    opts = {k: v for k, v in {"kernel_size": kernel_size, "dilation": dilation}.items() if v is not None}
    if paths:
        chosen = resolve_paths(teacher, paths)
    else:
        if target_params is None and target_flops is None:
            target_params = 0.6
        res = auto_plan(teacher, target_params=target_params, target_flops=target_flops,
                        input_size=hw, block=block, **opts)
        chosen = res["paths"]
        out.print(f"automatic plan: {len(chosen)} conv(s); target reached: {res['reached']}")
    student, rows = plan_rows(teacher, chosen, block, opts, hw)
    out.print(_table(rows, f"{what}: {block} replacement at {hw[0]}x{hw[1]}"))
    tot = rows[-1]
    out.print(f"params kept: {tot['params_after'] / tot['params_before']:.1%}   "
              f"FLOPs kept: {tot['flops_after'] / max(tot['flops_before'], 1):.1%}")
    if latency:
        lt, ls = measure_latency(teacher, hw), measure_latency(student, hw)
        out.print(f"CPU latency (batch 1): teacher {lt['mean_ms']:.1f} ms, student {ls['mean_ms']:.1f} ms")
    out.print("config snippet:  replace: [{paths: [" + ", ".join(chosen) + f"], block: {block}}}]",
              markup=False)


def register(app: typer.Typer) -> None:
    """Add the ``cheap`` command group to the ``segkd`` app."""
    app.add_typer(cheap, name="cheap")
