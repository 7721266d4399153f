"""Raw YAML configs: reading with ``_base_`` inheritance and anchors, deep merging, and
``--set key.sub.0=value`` overrides, all on plain dicts (validation is segkd.config.schema's).

Every YAML text a user writes (config files, ``--set`` values, study specs) goes through
``load_yaml``: plain data only (safe loader: no tag builds an object), a key given twice in one
mapping is an error naming both lines (PyYAML keeps the last one silently), and a syntax error
is one line saying where."""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from segkd.core.errors import ConfigError


def deep_merge(base: dict, over: dict) -> dict:
    """Return ``base`` with ``over`` merged in (dicts recursively, everything else replaced)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _at(first: yaml.Mark, second: yaml.Mark) -> str:
    """Where two keys are: ``lines 3 and 9``, or ``line 1, columns 2 and 14`` on one line."""
    if first.line == second.line:
        return f"line {first.line + 1}, columns {first.column + 1} and {second.column + 1}"
    return f"lines {first.line + 1} and {second.line + 1}"


def _check_unique(loader: yaml.SafeLoader, node: yaml.Node, source: str, path: str,
                  seen: set[int]) -> None:
    """Raise ConfigError at the first mapping of the composed ``node`` tree that holds a key
    twice (the ``<<`` merge keys of anchors excepted: keys written next to them override the
    merged ones, as YAML means). An aliased node is checked once, where it is defined."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[Any, yaml.Mark] = {}
        for key_node, value in node.value:
            if key_node.tag == _MERGE_TAG:
                _check_unique(loader, value, source, path, seen)
                continue
            key = loader.construct_object(key_node, deep=True) \
                if isinstance(key_node, yaml.ScalarNode) else None
            text = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            name = f"{path}.{text}" if path else text  # as written: `yes`, not True
            try:
                twice = key is not None and key in first
            except TypeError:  # an unhashable key: PyYAML refuses it when constructing
                twice = False
            if twice:
                raise ConfigError(f"{source}: key '{name}' is given twice ("
                                  f"{_at(first[key], key_node.start_mark)}); keep one (YAML "
                                  "does not merge the two, the second would replace the first)")
            if key is not None:
                first[key] = key_node.start_mark
            _check_unique(loader, value, source, name, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_unique(loader, item, source, f"{path}.{i}" if path else str(i), seen)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A PyYAML error as one line: what is wrong, and where."""
    problem = getattr(err, "problem", None) or str(err).strip().splitlines()[0]
    context = getattr(err, "context", None)
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    tag = re.search(r"tag '([^']*)'", problem)
    if isinstance(err, yaml.constructor.ConstructorError) and tag:
        problem = (f"the tag '{tag.group(1).replace('tag:yaml.org,2002:', '!!')}' is not allowed "
                   "(a config holds plain values: numbers, strings, lists, mappings)")
        context = None
    text = f"{context}: {problem}" if context else problem
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{text}{where}".replace("\n", " ")


def load_yaml(text: str, source: str, key: str = "") -> Any:
    """Parse YAML ``text`` into plain data (None for an empty text). ``source`` names it in the
    ConfigError raised for invalid YAML, a tag, or a mapping key given twice; ``key`` is where
    the text goes in the config (a ``--set`` key), the start of the key paths named."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_unique(loader, node, source, key, set())
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {_yaml_problem(err)}") from None
    finally:
        loader.dispose()


def _bases(path: Path, bases: Any) -> list[str]:
    """The ``_base_`` value of ``path`` as a list of file names (a name or a list of names)."""
    names = [bases] if isinstance(bases, str) else bases
    if not isinstance(names, list) or not all(isinstance(b, str) and b.strip() for b in names):
        raise ConfigError(f"{path}: _base_ must be a file path (relative to this file) or a list "
                          f"of them, got {bases!r}; give the base config's file name or remove "
                          "the key")
    return names


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
        raw = _unalias(load_yaml(path.read_text(encoding="utf-8"), str(path)))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a YAML text file (byte {err.start} is not UTF-8 text); "
                          "give the .yaml config") from None
    if raw is None:  # {} would silently run every default: the synthetic demo
        raise ConfigError(f"{path}: the config file is empty (no settings); start from a "
                          "recipe in configs/ or `segkd prepare folder` output")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    bases = _bases(path, raw.pop("_base_")) if "_base_" in raw else []
    for key in [k for k in raw if isinstance(k, str) and k.startswith("_")]:
        raw.pop(key)  # top-level "_name" keys hold YAML anchors for reuse, not settings
    merged: dict = {}
    for b in bases:
        if not (path.parent / b).is_file():
            raise ConfigError(f"{path}: _base_ file '{b}' not found ({path.parent / b})")
        merged = deep_merge(merged, read_yaml(path.parent / b, _seen + (path.resolve(),)))
    return deep_merge(merged, raw)


def refuse_repeated(overrides: list[str]) -> None:
    """ConfigError when one command line sets a key twice to different values (``--set a=1
    --set a=2``: the last would win silently). Layered lists (a study spec's ``set`` then a
    method's) are not checked: there a later value is meant to override an earlier one."""
    first: dict[str, str] = {}
    for item in overrides:
        key, sep, _ = item.partition("=")
        key = key.strip()
        if sep and key in first and first[key] != item:
            raise ConfigError(f"--set {key} is given twice ('{first[key]}', then '{item}'); "
                              "keep one")
        first.setdefault(key, item)


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
                shown = item.replace("\t", "\\t").replace("\n", "\\n")  # one visible line
                node[part] = load_yaml(value, f"--set {shown}", key.strip())
            else:
                if isinstance(node, dict) and not isinstance(node.get(part), (dict, list)):
                    node[part] = {}  # also a scalar shorthand: `cache: true` + cache.dir=...
                node = node[part]
    return raw
