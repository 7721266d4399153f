"""One generic registry for models, encoders, losses, datasets and connectors.

Usage::

    LOSSES = Registry("loss")

    @LOSSES.register("kd")
    class PixelKD(nn.Module): ...

    LOSSES.build("kd", temperature=2.0)

A duplicate name is an error; an unknown name lists the closest known ones.
"""
from __future__ import annotations

import difflib
from typing import Any, Callable, Iterator

from segkd.core.errors import SegkdError


class RegistryError(SegkdError, KeyError):
    """Raised for unknown or duplicate registry names (message is user-facing; the CLI
    prints it as one line, like every SegkdError)."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


def suggest(name: str, known: list[str], n: int = 3) -> str:
    """Return ' Did you mean: a, b?' for the closest names in ``known`` (or '')."""
    close = difflib.get_close_matches(name, known, n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(close)}?" if close else ""


class Registry:
    """A name -> callable mapping with helpful errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., Any]] = {}

    def register(self, name: str | None = None, obj: Callable[..., Any] | None = None):
        """Register ``obj`` under ``name``; usable as a decorator."""

        def _add(o: Callable[..., Any]) -> Callable[..., Any]:
            key = name or getattr(o, "__name__")
            if key in self._items:
                raise RegistryError(f"{self.kind} '{key}' is already registered")
            self._items[key] = o
            return o

        return _add(obj) if obj is not None else _add

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._items:
            known = sorted(self._items)
            raise RegistryError(
                f"unknown {self.kind} '{name}'.{suggest(name, known)} "
                f"Known {self.kind}s: {', '.join(known)}"
            )
        return self._items[name]

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a plug-in or a test taking its registration back); unknown: error."""
        self.get(name)
        del self._items[name]

    def build(self, name: str, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._items)

    def registered(self) -> list[str]:
        """The names in the order they were registered."""
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


MODELS = Registry("model")
ENCODERS = Registry("encoder")
LOSSES = Registry("loss")
DATASETS = Registry("dataset")
CONNECTORS = Registry("connector")
