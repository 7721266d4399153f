"""What each registered dataset reads: its layout (the builder's docstring) and its options
(``data.options`` keys with their defaults), for ``segkd list datasets --verbose``."""
from __future__ import annotations

import inspect
from textwrap import indent

from segkd.registry import DATASETS

_NOT_OPTIONS = ("root", "split", "transform", "cache")  # set by segkd from data.root / splits


def dataset_options(name: str) -> dict[str, str]:
    """``data.options`` keys of dataset ``name`` -> their default, as written in Python."""
    params = inspect.signature(DATASETS.get(name)).parameters
    return {k: ("required" if p.default is p.empty else repr(p.default))
            for k, p in params.items() if k not in _NOT_OPTIONS and p.kind is not p.VAR_KEYWORD}


def describe_dataset(name: str) -> str:
    """The layout and options of dataset ``name``, as a few indented lines."""
    doc = inspect.getdoc(DATASETS.get(name)) or "(no description)"
    options = dataset_options(name)
    opts = ", ".join(f"{k}={v}" for k, v in options.items()) or "none"
    return f"{name}\n{indent(doc, '    ')}\n    data.options: {opts}\n"
