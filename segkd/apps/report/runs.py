"""Runs for the report: loading summary.json (+ config.yaml, study.json) and grouping them by
(model, method, fraction), with differing configs split into labelled variants and a seed run
twice counted once."""
from __future__ import annotations

import json
import re
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml

from segkd.apps.runs import RESUME_MAY_CHANGE, flatten
from segkd.config.schema import config_from_dict
from segkd.core.errors import ConfigError, SegkdError

_SEED_SUFFIX = re.compile(r"[-_.](s|seed)\d+$")


# ------------------------------------------------------------------------------ loading runs
def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SegkdError(f"cannot read {path}: {err}") from None
    if not isinstance(data, dict):
        raise SegkdError(f"{path}: expected a JSON object")
    return data


def _read_config(path: Path) -> Optional[dict]:
    """config.yaml as the current schema reads it, so that runs saved by an older segkd (e.g.
    optimiser keys written out at their defaults) group with the same config saved today; a
    config the schema refuses is kept as written."""
    if not path.is_file():
        return None
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        return None  # a config we cannot read only costs us nothing: grouping uses summary.json
    try:
        return config_from_dict(raw, str(path)).model_dump(mode="json")
    except ConfigError:
        return raw


def load_runs(paths: Iterable[str | Path]) -> list[dict]:
    """Find runs under ``paths`` (run directories or parents searched recursively).

    Returns ``[{"dir", "summary", "config", "study"}]`` sorted by directory; ``config`` is the
    parsed config.yaml and ``study`` the parsed study.json, or None when absent.
    """
    found: dict[Path, None] = {}
    for p in map(Path, paths):
        if not p.exists():
            raise SegkdError(f"no such run directory: {p}")
        hits = [p] if p.is_file() and p.name == "summary.json" else sorted(p.rglob("summary.json"))
        found.update((h.resolve(), None) for h in hits)
    if not found:
        raise SegkdError(f"no summary.json found under: {', '.join(map(str, paths))}")
    runs = []
    for s in sorted(found):
        study = s.parent / "study.json"
        runs.append({"dir": str(s.parent), "summary": _read_json(s),
                     "config": _read_config(s.parent / "config.yaml"),
                     "study": _read_json(study) if study.is_file() else None})
    return runs


# ---------------------------------------------------------------------------------- grouping
def model_label(summary: dict) -> str:
    """``<arch>-<encoder>`` from the summary's model spec (just the arch without an encoder);
    with replaced convolutions also the block and the parameter count, e.g.
    ``unet-kd_resnet34 +dwsep 9.6M``."""
    model = summary.get("model") or {}
    enc = (model.get("kwargs") or {}).get("encoder")
    arch = model.get("arch", "model")
    label = f"{arch}-{enc}" if enc else str(arch)
    # convolutions replaced by cheap blocks (Plug and Play) make another model: name its block and
    # size so that it is compared only with runs of the same architecture
    blocks = sorted({r.get("block", "cheap") for r in summary.get("replacements") or []})
    if blocks and summary.get("params"):
        label += f" +{'/'.join(blocks)} {summary['params'] / 1e6:.1f}M"
    return label


def recipe_label(config: dict) -> Optional[str]:
    """The method as the resolved config trains it: each stage's losses joined by '+', stages by
    ' > ' (n equal stages in a row: 'mse×n'), '+replace' for a stage that replaces convolutions;
    e.g. 'ce+kd', 'mse×10 > ce'. None without stages."""
    labels = []
    for st in config.get("stages") or []:
        losses = list(dict.fromkeys(str(t.get("loss")) for t in st.get("terms") or []))
        labels.append("+".join(losses or ["?"]) + ("+replace" if st.get("replace") else ""))
    runs: list[list] = []
    for lab in labels:
        if runs and runs[-1][0] == lab:
            runs[-1][1] += 1
        else:
            runs.append([lab, 1])
    return " > ".join(lab if n == 1 else f"{lab}×{n}" for lab, n in runs) or None


def method_label(run: dict) -> str:
    """study.json's method, else a top-level ``method`` in summary, else the recipe of the
    resolved config (config.yaml: what was trained, whatever the run was named), else the name
    minus ``-s<seed>``."""
    if run.get("study") and run["study"].get("method"):
        return str(run["study"]["method"])
    summary = run["summary"]
    if summary.get("method"):
        return str(summary["method"])
    recipe = recipe_label(run["config"]) if run.get("config") else None
    return recipe or _SEED_SUFFIX.sub("", str(summary.get("name", "run"))) or "run"


def group_key(run: dict) -> tuple[str, str, float]:
    """(model, method, fraction) of a run."""
    s = run["summary"]
    frac = (run.get("study") or {}).get("fraction", s.get("fraction", 1.0))
    return model_label(s), method_label(run), float(frac)


# Config keys that do not make two runs different experiments: the seed (the table's spread),
# where the run went and what the resume check allows to change (device, workers, threads, ...).
NOT_A_VARIANT = ("seed", *RESUME_MAY_CHANGE)


def _recipe(run: dict) -> Optional[dict[str, Any]]:
    """The run's resolved config as flat keys (NOT_A_VARIANT dropped, the name without its seed
    suffix); None without config.yaml."""
    if not run.get("config"):
        return None
    flat = {k: v for k, v in flatten(run["config"]).items()
            if not any(fnmatchcase(k, g) for g in NOT_A_VARIANT)}
    resolved = (run["summary"].get("precision") or {}) if isinstance(run["summary"].get("precision"), dict) else {}
    if resolved.get("value") and "trainer.precision" in flat:  # 'auto' -> what it resolved to
        flat["trainer.precision"] = resolved["value"]
    if "name" in flat:
        flat["name"] = _SEED_SUFFIX.sub("", str(flat["name"]))
    return flat


def _short(value: Any, width: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _variants(method: str, runs: list[dict]) -> dict[str, list[dict]]:
    """Split runs grouped under one method whose configs differ: each variant's label names the
    keys that differ, e.g. 'ce+kd (stages.0.optimizer.lr=0.01)' (at most 3 keys shown)."""
    recipes = [_recipe(r) for r in runs]
    known = [r for r in recipes if r is not None]
    if len({json.dumps(r, sort_keys=True) for r in known}) <= 1 and (len(known) in (0, len(runs))):
        return {method: runs}
    # a key only some configs have is a field added to segkd between the runs (its default is
    # what the older runs did), not a different experiment: only keys all configs carry count
    shared = set.intersection(*(set(r) for r in known)) if known else set()
    keys = sorted(k for k in shared if len({json.dumps(x.get(k)) for x in known}) > 1)
    if known and not keys and len(known) == len(runs):
        return {method: runs}
    out: dict[str, list[dict]] = {}
    for run, rec in zip(runs, recipes):
        if rec is None:
            label = f"{method} (no config.yaml)"
        else:
            parts = [f"{k}={_short(rec.get(k))}" for k in keys]
            label = f"{method} ({', '.join(parts[:3])}{', …' if len(parts) > 3 else ''})"
        out.setdefault(label, []).append(run)
    return out


def _newest_per_seed(runs: list[dict], notes: Optional[list[str]] = None, what: str = "") -> list[dict]:
    """One run per seed (the most recently finished) so a re-run never counts twice; each
    ignored re-run is named in ``notes``."""
    by_seed: dict[Any, list[dict]] = {}
    for r in sorted(runs, key=lambda r: str(r["summary"].get("finished", ""))):
        by_seed.setdefault(r["summary"].get("seed", r["dir"]), []).append(r)
    if notes is not None:
        for seed, same in by_seed.items():
            if len(same) > 1:
                notes.append(f"{what} seed {seed}: {len(same)} runs with the same config; "
                             f"kept the newest ({same[-1]['dir']}), ignored "
                             f"{', '.join(r['dir'] for r in same[:-1])}")
    return [same[-1] for same in by_seed.values()]


def group_runs(runs: list[dict], notes: Optional[list[str]] = None) -> dict[tuple[str, str, float], list[dict]]:
    """Runs by (model, method, fraction); runs of one method whose configs differ are separate
    groups (see ``_variants``); a seed run twice with the same config counts once (``notes``)."""
    base: dict[tuple[str, str, float], list[dict]] = {}
    for r in runs:
        base.setdefault(group_key(r), []).append(r)
    groups: dict[tuple[str, str, float], list[dict]] = {}
    for (model, method, frac), members in base.items():
        for label, variant in _variants(method, members).items():
            groups[(model, label, frac)] = _newest_per_seed(variant, notes, f"{model} {label} f{frac:g}")
    return groups


def selection_label(summary: dict) -> str:
    """How a run's reported epoch was chosen, in words (from summary.json's ``selected``)."""
    sel = summary.get("selected") or {}
    metric = sel.get("metric") or "val/mIoU"
    if metric == "last":
        return "the last epoch"
    if metric.startswith("select/"):
        frac = sel.get("select_fraction")
        held = f"a held-out {frac:.0%} of train, seed {sel.get('select_seed')}" if frac else "a held-out split"
        return f"best {metric} ({held})"
    split = metric.split("/")[0]
    return f"best {metric} (chosen on {split} itself)"
