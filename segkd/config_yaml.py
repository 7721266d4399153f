"""Raw YAML configs: reading with ``_base_`` inheritance and anchors, deep merging, and
``--set key.sub.0=value`` overrides, all on plain dicts (validation is segkd.config's)."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


def deep_merge(base: dict, over: dict) -> dict:
    """Return ``base`` with ``over`` merged in (dicts recursively, everything else replaced)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _unalias(node: Any) -> Any:
    """A copy in which YAML anchors/aliases no longer share objects (so that overriding
    ``stages.0...`` does not also change a stage that reused the same anchor)."""
    if isinstance(node, dict):
        return {k: _unalias(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_unalias(v) for v in node]
    return node


def read_yaml(path: str | Path, _seen: tuple = ()) -> dict:
    """Read a YAML config, resolving ``_base_`` (a path or list of paths relative to the file)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in _seen:
        raise ConfigError(f"circular _base_ reference at {path}")
    try:
        raw = _unalias(yaml.safe_load(path.read_text(encoding="utf-8")))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a YAML text file (byte {err.start} is not UTF-8 text); "
                          "give the .yaml config") from None
    if raw is None:  # {} would silently run every default: the synthetic demo
        raise ConfigError(f"{path}: the config file is empty (no settings); start from a "
                          "recipe in configs/ or `segkd prepare folder` output")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    bases = raw.pop("_base_", [])
    for key in [k for k in raw if isinstance(k, str) and k.startswith("_")]:
        raw.pop(key)  # top-level "_name" keys hold YAML anchors for reuse, not settings
    merged: dict = {}
    for b in [bases] if isinstance(bases, str) else bases:
        if not (path.parent / b).is_file():
            raise ConfigError(f"{path}: _base_ file '{b}' not found ({path.parent / b})")
        merged = deep_merge(merged, read_yaml(path.parent / b, _seen + (path.resolve(),)))
    return deep_merge(merged, raw)


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub.0.name=value`` overrides (value parsed as YAML) to a raw config dict."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got '{item}'")
        key, value = item.split("=", 1)
        node: Any = raw
        parts = key.strip().split(".")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                # the index one past the end appends a whole item (stages.11={...} on 11 stages)
                appending = last and part == str(len(node))
                if not part.lstrip("-").isdigit() or not (-len(node) <= int(part) < len(node)
                                                           or appending):
                    raise ConfigError(f"--set {key}: '{part}' is not an index of a {len(node)}-item "
                                      f"list (use {len(node)} to append an item)")
                part = int(part)  # negative indices count from the end (stages.-1 = last stage)
                if appending:
                    node.append(None)
            if last:
                node[part] = yaml.safe_load(value)
            else:
                if isinstance(node, dict) and not isinstance(node.get(part), (dict, list)):
                    node[part] = {}  # also a scalar shorthand: `cache: true` + cache.dir=...
                node = node[part]
    return raw
