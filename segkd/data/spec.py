"""One descriptor per dataset: how to build it, its options, how its files pair, how to get it.

A dataset module (camvid.py, voc.py, ...) writes one :class:`DatasetSpec` and registers it with
:func:`register_dataset`; everything else asks the spec:

- ``build(root, split, **options) -> SegmentationDataset``: the items, classes, ignore index,
  normalisation and label mapping of one split. Its docstring is the layout that
  ``segkd list datasets --verbose`` shows; its keyword arguments after ``root`` and ``split``
  are the dataset's ``data.options`` (:attr:`DatasetSpec.options`, checked by
  :meth:`DatasetSpec.check_options`, the one option checker);
- ``scan(root, options) -> {split: Pairing}`` (optional): every image/mask pair of each split
  and the leftovers on both sides, without stopping at the first missing file (``segkd
  prepare``, ``data.test_split: auto``);
- ``meta(root, options) -> LayoutMeta`` (optional): classes and label mapping without building
  a split (``segkd prepare`` on a tree no split of which loads);
- ``downloads``: what ``segkd download NAME`` fetches for it (:class:`Download`).

Transforms, the decoded-item cache and the normalisation override are not the builder's: they
are set once, by :meth:`DatasetSpec.open` (``segkd.data.build_dataset``) and
``segkd.data.dataset_from_config``.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from segkd.core.errors import ConfigError, SegkdError
from segkd.core.registry import DATASETS, suggest
from segkd.data.base import SegmentationDataset, Transform
from segkd.data.pairing import LayoutMeta, Pairing

Builder = Callable[..., SegmentationDataset]
Scanner = Callable[[Path, dict], "dict[str, Pairing]"]


@dataclass(frozen=True)
class Archive:
    """One downloadable archive: its file name, URLs (first = official, then mirrors), sha256."""

    filename: str
    urls: tuple[str, ...]
    sha256: Optional[str]  # None: not known here; the computed value is printed


@dataclass(frozen=True)
class Download:
    """What ``segkd download <name>`` does for a dataset.

    ``install(root, fetch) -> bool`` puts the files under ``root`` (the ``--root`` folder);
    ``fetch`` (``segkd.data.download.Fetch``) downloads an :class:`Archive` into
    ``root/downloads`` (``fetch.get(archive)``), deletes it when done (``fetch.done(path)``) and
    installs another download first (``fetch.ensure(name)``). ``install`` returns False when it
    could not put the data in place and said what to do instead (a dataset behind a login).
    ``data_root``: where the dataset lands, relative to ``root``; ``expected``: split -> images
    of the official release; ``options``: the dataset options it is built with once in place.
    """

    name: str
    install: Callable[[Path, Any], bool]
    data_root: str = ""
    expected: dict[str, int] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    archive: Optional[Archive] = None


@dataclass(frozen=True)
class DatasetSpec:
    """Everything segkd knows about one dataset (see the module docstring)."""

    name: str
    build: Builder
    scan: Optional[Scanner] = None
    meta: Optional[Callable[[Path, dict], LayoutMeta]] = None
    downloads: tuple[Download, ...] = ()

    @property
    def layout(self) -> str:
        """What the dataset's tree looks like: the builder's docstring."""
        return inspect.getdoc(self.build) or "(no description)"

    @property
    def options(self) -> dict[str, inspect.Parameter]:
        """``data.options`` keys -> their parameter: the builder's keyword arguments after
        ``root`` and ``split`` (set by segkd from ``data.root`` and the split names)."""
        params = inspect.signature(self.build).parameters
        return {k: p for k, p in params.items()
                if k not in ("root", "split") and p.kind is not p.VAR_KEYWORD}

    def takes_any_option(self) -> bool:
        """True when the builder takes ``**options`` (every key is passed on unchecked)."""
        return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(self.build).parameters.values())

    def check_options(self, options: dict[str, Any], where: str = "data.options") -> None:
        """A key the builder does not take is a ConfigError naming it and listing the valid
        ones (``where``: how the user wrote them, e.g. ``data.unlabeled.options``)."""
        if self.takes_any_option():
            return
        known = list(self.options)
        for k in options:
            if k not in known:
                prefix = f"{where}.{k}: " if where else ""
                raise ConfigError(f"{prefix}dataset '{self.name}' has no option '{k}'."
                                  f"{suggest(k, known)} Its options: {', '.join(known) or 'none'}")

    def make(self, root: Any = None, split: Optional[str] = "train",
             options: Optional[dict] = None, where: str = "data.options") -> SegmentationDataset:
        """Split ``split`` under ``root``, options checked, without transforms or cache."""
        options = dict(options or {})
        self.check_options(options, where)
        return self.build(root=root, split=split, **options)

    def open(self, root: Any = None, split: Optional[str] = "train", options: Optional[dict] = None,
             *, transform: Optional[Transform] = None, cache: bool = False,
             where: str = "data.options") -> SegmentationDataset:
        """:meth:`make`, then ``transform`` on every item and, with ``cache``, the decoded
        items kept in memory."""
        ds = self.make(root, split, options, where)
        ds.set_pipeline(transform=transform, cache=cache)
        return ds


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Register ``spec`` under ``spec.name`` (a name registered twice is an error)."""
    DATASETS.register(spec.name, obj=spec)
    return spec


def dataset_spec(name: str) -> DatasetSpec:
    """The registered spec of dataset ``name`` (an unknown name lists the known ones)."""
    import segkd.data  # noqa: F401  (registers segkd's datasets)

    spec = DATASETS.get(name)
    if not isinstance(spec, DatasetSpec):
        raise SegkdError(f"dataset '{name}' is registered as a {type(spec).__name__}, not a "
                         "DatasetSpec: register it with segkd.data.register_dataset")
    return spec


def dataset_specs() -> list[DatasetSpec]:
    """Every registered dataset spec, in registration order."""
    import segkd.data  # noqa: F401  (registers segkd's datasets)

    specs = (DATASETS.get(n) for n in DATASETS.registered())
    return [s for s in specs if isinstance(s, DatasetSpec)]
