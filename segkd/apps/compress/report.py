"""The end of ``segkd compress``: the student exported (ONNX + safetensors, parity checked) and
a report of teacher vs student (vs baseline): mIoU per split and per class, params, FLOPs,
measured latency and the share of the teacher's score kept. report.md always; report.html from
``segkd report --html`` (segkd.apps.report.tables) when it is available: the hook is ``html_report``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch

from segkd.apps.compress.plan import measure


def export_student(best: Path, out: Path, size: Optional[tuple[int, int]]) -> dict:
    """ONNX (parity checked against PyTorch) and safetensors of ``best``, kept when present."""
    from segkd.apps.export import export_onnx, export_safetensors

    out.mkdir(parents=True, exist_ok=True)
    onnx, st = out / "student.onnx", out / "student.safetensors"
    res: dict[str, Any] = {"onnx": str(onnx), "safetensors": str(st)}
    if not onnx.is_file():
        info = export_onnx(best, onnx, size=size)
        res["parity"] = {k: info[k] for k in info if "err" in k or k in ("parity", "max_abs")}
    if not st.is_file():
        export_safetensors(best, st)
    return res


def score_teacher(teacher_path: str, data: dict, splits: list[str]) -> dict[str, dict]:
    """The teacher's metrics on ``splits`` of the compress data (same evaluation as the runs)."""
    from segkd.config.schema import DataCfg
    from segkd.data import dataset_from_config
    from segkd.engine.data import make_loader
    from segkd.eval.evaluate import evaluate, inference_forward
    from segkd.eval.inference import InferenceSpec
    from segkd.models.spec import model_from_checkpoint

    model = model_from_checkpoint(teacher_path)[0].eval()
    cfg, out = DataCfg(**data), {}
    for split in splits:
        ds = dataset_from_config(cfg, split)
        loader = make_loader(ds, cfg.batch_size, False, 0, 0)
        out[split] = evaluate(inference_forward(model, InferenceSpec()), loader, ds.num_classes,
                              ds.ignore_index, torch.device("cpu"))
    return out


def _row(label: str, model, splits: dict, size, device: str) -> dict:
    m = measure(model, size, device)
    return {"run": label, **m, "splits": {s: {"mIoU": v["mIoU"], "per_class_iou": v.get("per_class_iou")}
                                          for s, v in splits.items()}}


def finish(req, state: dict, console) -> dict:
    """Export, evaluate, measure, write report.md (+ report.html); returns what to record."""
    from segkd.config.schema import load_config
    from segkd.models.spec import load_model

    out = req.out
    cfg = load_config(out / "student.yaml")
    data = cfg.data.model_dump(mode="json", exclude_defaults=True)
    size, device = tuple(state["target"]["size"]), state["target"]["device"]
    splits = [s for s in cfg.eval.splits]
    best = out / "student" / "best.pt"
    exported = export_student(best, out / "export", tuple(cfg.data.size) if cfg.data.size else None)
    rows = [_row("teacher", load_model(state["teacher"])[0], score_teacher(state["teacher"], data, splits),
                 size, device)]
    for name in state["runs"]:
        summary = json.loads((out / name / "summary.json").read_text())
        rows.append(_row(name, load_model(out / name / "best.pt")[0],
                         {s: summary["splits"][s] for s in splits if s in summary["splits"]}, size, device))
    classes = json.loads((out / "student" / "summary.json").read_text()).get("classes", [])
    text = markdown(state, rows, splits, classes, exported)
    (out / "report.md").write_text(text)
    console.print(text, markup=False, highlight=False)
    html = html_report(out, state, console) if req.html else None
    return {"report": str(out / "report.md"), "html": html, "export": exported,
            "results": [{k: v for k, v in r.items()} for r in rows]}


def markdown(state: dict, rows: list[dict], splits: list[str], classes: list[str],
             exported: dict) -> str:
    """report.md: the comparison table, per-class IoU, the recipe and the files."""
    t = rows[0]
    lines = [f"# segkd compress: {state['teacher_model']} -> {state['candidate']}", "",
             f"Recipe: {state['reason']}", f"Budget: {state['budget']}.", "",
             "| run | " + " | ".join(f"{s} mIoU" for s in splits) +
             " | kept of teacher | params (M) | GFLOPs | latency (ms) |",
             "|---|" + "---|" * (len(splits) + 4)]
    ref = splits[0] if splits else None
    for r in rows:
        kept = (f"{100 * r['splits'][ref]['mIoU'] / t['splits'][ref]['mIoU']:.0f}%"
                if ref and t["splits"].get(ref, {}).get("mIoU") else "-")
        lat = "-" if r["latency_ms"] is None else f"{r['latency_ms']:.1f}"
        lines.append(f"| {r['run']} | " + " | ".join(
            f"{r['splits'].get(s, {}).get('mIoU', float('nan')):.4f}" for s in splits) +
            f" | {kept} | {r['params'] / 1e6:.2f} | {r['flops'] / 1e9:.3f} | {lat} |")
    size = state["target"]["size"]
    threads = t.get("threads")
    on = f"{state['target']['device']}" + (f", {threads} thread(s)" if threads and
                                            state["target"]["device"] == "cpu" else "")
    lines += ["", f"Latency: median of 10 batch-1 forwards after 3 warm-up ones on {on} at "
              f"{size[0]}x{size[1]}; kept of teacher: {ref} mIoU / the teacher's.", ""]
    if ref and classes:
        lines += [f"## Per-class IoU ({ref})", "", "| class | " + " | ".join(r["run"] for r in rows) + " |",
                  "|---|" + "---|" * len(rows)]
        for i, c in enumerate(classes):
            vals = [(r["splits"].get(ref, {}).get("per_class_iou") or [None] * len(classes))[i] for r in rows]
            lines.append(f"| {c} | " + " | ".join("-" if v is None else f"{v:.4f}" for v in vals) + " |")
    lines += ["", "## Files", "", "- student.yaml: the recipe (`segkd distill student.yaml` re-runs it)",
              "- student/best.pt: the student (epoch chosen on select/mIoU)",
              f"- {exported['onnx']}, {exported['safetensors']}: exports (ONNX parity checked)"]
    return "\n".join(lines) + "\n"


def html_report(out: Path, state: dict, console) -> Optional[str]:
    """The hook to ``segkd report RUNS --html``: report.html of the student (and baseline)
    runs when segkd.apps.report.tables supports it; None (and a note) otherwise."""
    try:
        from segkd.apps.report.tables import report

        runs = [str(out / name) for name in state["runs"]]
        teacher_run = Path(state["teacher"]).parent
        if (teacher_run / "summary.json").is_file():
            runs.insert(0, str(teacher_run))
        report(runs, out / "report", console=console, html=out / "report.html")
        return str(out / "report.html")
    except Exception as err:  # the HTML report is optional: report.md holds the results
        console.print(f"note: no report.html ({type(err).__name__}: {err}); report.md has the results",
                      highlight=False, markup=False)
        return None
