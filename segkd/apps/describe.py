"""``segkd info`` and ``segkd list``: what a model is, what is registered."""
from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path
from typing import Optional

import torch
from rich.table import Table

from segkd.core.errors import SegkdError
from segkd.core.registry import CONNECTORS, DATASETS, LOSSES


def list_names(what: str, pattern: str = "*") -> list[str]:
    """Registered names of one kind, filtered by a glob."""
    import segkd.data  # noqa: F401  (registers datasets)
    import segkd.distill.distiller  # noqa: F401  (registers losses, connectors)
    from segkd.config.optimizers import OPTIMIZERS
    from segkd.config.schedules import SCHEDULES
    from segkd.models import list_encoders, list_models

    kinds = {"models": list_models, "encoders": lambda: list_encoders(pattern),
             "datasets": DATASETS.names, "losses": LOSSES.names, "connectors": CONNECTORS.names,
             "optimizers": OPTIMIZERS.names, "schedules": SCHEDULES.names}
    if what not in kinds:
        raise SegkdError(f"unknown kind '{what}': one of {', '.join(kinds)}")
    return [n for n in kinds[what]() if fnmatchcase(n, pattern)]


def name_summary(what: str, name: str) -> str:
    """The first docstring line of a registered loss, connector or schedule (its options and
    which is the default, e.g. kd's ``ignore_pixels``; a schedule's keys); '' for other kinds."""
    from segkd.config.schedules import SCHEDULES

    if what == "schedules":
        cls = SCHEDULES.get(name)
        keys = ", ".join(k for k in cls.model_fields if k != "name")
        return ((cls.__doc__ or "").strip().splitlines() or [""])[0] + (f" Keys: {keys}." if keys else "")
    if what == "optimizers":
        from segkd.config.optimizers import constructor_options, optimizer_class

        cls = optimizer_class(name)
        return f"torch.optim.{cls.__name__}; options: {', '.join(constructor_options(cls))}"
    registry = {"losses": LOSSES, "connectors": CONNECTORS}.get(what)
    doc = (registry.get(name).__doc__ or "") if registry is not None else ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def load_any_model(target: str, classes: int = 21) -> tuple[torch.nn.Module, str]:
    """A model from a checkpoint (.pt), a config (.yaml) or ``arch:encoder``."""
    from segkd.models.spec import build_from_spec, model_from_checkpoint, model_spec

    p = Path(target)
    if p.suffix in (".pt", ".pth", ".tar") or p.is_dir():
        return model_from_checkpoint(target)[0], f"checkpoint {target}"
    if p.suffix in (".yaml", ".yml"):
        from segkd.config.schema import load_config

        cfg = load_config(target)
        n = cfg.model.num_classes or _dataset_classes(cfg) or classes
        return build_from_spec(model_spec(cfg.model, n)), f"{cfg.model.arch} / {cfg.model.encoder}"
    arch, _, encoder = target.partition(":")
    return build_from_spec({"arch": arch, "kwargs": {"encoder": encoder or None, "num_classes": classes}
                            if encoder else {"num_classes": classes}}), target


def _dataset_classes(cfg) -> Optional[int]:
    """The dataset's class count, when the dataset can be opened (None when its files are not
    there or its options are wrong: the model is then built for ``--classes``)."""
    from segkd.data import dataset_from_config

    try:
        return dataset_from_config(cfg.data, cfg.data.train_split).num_classes
    except (SegkdError, OSError):
        return None


def paths_table(model: torch.nn.Module) -> Table:
    t = Table(title="module paths (for hooks, trainable globs, replacements)")
    for col in ("path", "type", "params"):
        t.add_column(col)
    for name, m in model.named_modules():
        if name:
            n = sum(p.numel() for p in m.parameters(recurse=True))
            t.add_row(name, type(m).__name__, f"{n:,}")
    return t


def info_command(target: str, size, classes: int, paths: bool, latency: bool,
                 compare: list[str], console, onnx: bool = False, data_root: str | None = None,
                 setup=None) -> None:
    from segkd.apps.deploy_compare import LatencySetup
    from segkd.models.cost import count_flops, count_params

    setup = setup or LatencySetup()
    where = setup.describe()

    if compare:
        from segkd.apps.deploy_compare import compare_models

        if len(compare) != 2:
            raise SegkdError("--compare takes TEACHER and STUDENT: --compare T --compare S")
        rows = compare_models(compare[0], compare[1], size=size or (512, 512), onnx=onnx,
                              data_root=data_root, setup=setup)
        t = Table(title=f"teacher vs student at {size[0]}x{size[1]} (latency ms: {where})")
        keys = [k for k in rows[0] if k not in ("path", "warnings")]
        for k in keys:
            t.add_column(k, no_wrap=True)
        for r in rows:
            t.add_row(*[f"{r[k]:,.4g}" if isinstance(r[k], float) else f"{r[k]:,}"
                        if isinstance(r[k], int) else str(r[k]) for k in keys])
        console.print(t)
        for r in rows:
            console.print(f"{r['name']}: {r['path']}", highlight=False)
        for warning in (w for r in rows for w in r["warnings"]):
            console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
        return
    if not target:
        raise SegkdError("give a model (config.yaml, checkpoint or arch:encoder) or --compare T --compare S")
    model, what = load_any_model(target, classes)
    size = size or (512, 512)
    t = Table(title=what)
    t.add_column("quantity")
    t.add_column("value")
    t.add_row("parameters", f"{count_params(model):,}")
    t.add_row(f"GFLOPs at {size[0]}x{size[1]} (2 x MACs)", f"{count_flops(model, size) / 1e9:.2f}")
    if latency:
        from segkd.apps.deploy_compare import spread_warning

        lat = setup.measure(model, size)
        t.add_row(f"latency ({where}) ms", f"{lat['mean_ms']:.1f} ± {lat['std_ms']:.1f}")
    console.print(t)
    for warning in spread_warning(what, "PyTorch", lat, setup.iters) if latency else []:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    if paths:
        console.print(paths_table(model))
