"""What each registered dataset reads: its layout (the builder's docstring) and its options
(``data.options`` keys with their defaults), for ``segkd list datasets --verbose``."""
from __future__ import annotations

from textwrap import indent

from segkd.data.spec import dataset_spec


def dataset_options(name: str) -> dict[str, str]:
    """``data.options`` keys of dataset ``name`` -> their default, as written in Python."""
    return {k: ("required" if p.default is p.empty else repr(p.default))
            for k, p in dataset_spec(name).options.items()}


def describe_dataset(name: str) -> str:
    """The layout and options of dataset ``name``, as a few indented lines."""
    opts = ", ".join(f"{k}={v}" for k, v in dataset_options(name).items()) or "none"
    return f"{name}\n{indent(dataset_spec(name).layout, '    ')}\n    data.options: {opts}\n"
