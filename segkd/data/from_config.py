"""From a ``data:`` section to a dataset: the one way train, eval, ``segkd stages`` and the
teacher cache get theirs (``DataCfg`` is read here and in ``segkd.engine.data.build_data``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from segkd.config.schema import DataCfg
from segkd.core.errors import DataError
from segkd.data.base import SegmentationDataset, Transform
from segkd.data.spec import dataset_spec
from segkd.data.transforms import EvalResize, split_transforms


def build_dataset(name: str, root: Any = None, split: Optional[str] = "train", *,
                  transform: Optional[Transform] = None, cache: bool = False,
                  **options: Any) -> SegmentationDataset:
    """Split ``split`` of dataset ``name`` under ``root`` with the builder ``options`` (checked:
    an unknown one is a ConfigError listing the valid ones), ``transform`` applied to every item
    and, with ``cache``, decoded items kept in memory. E.g.
    ``build_dataset("voc", root="data/VOCdevkit", split="val")``."""
    return dataset_spec(name).open(root, split, options, transform=transform, cache=cache, where="")


def dataset_from_config(cfg: DataCfg, split: Optional[str] = None, *, train: bool = False,
                        unlabeled: bool = False) -> SegmentationDataset:
    """Split ``split`` of the dataset ``cfg`` names (``data.name``, ``data.root``,
    ``data.options``), ready for a loader.

    ``train``: the training transforms (``data.size`` resize, then ``scale``, ``crop``,
    ``hflip``, ``color_jitter``, ``blur``); otherwise the evaluation resize (the image to
    ``data.size``, the mask kept at label size with ``eval_at_label_size``, else both).
    ``unlabeled``: the ``data.unlabeled`` set instead (``{name, root, split, options}``,
    ``image_folder`` and split ``train`` by default). Every split gets ``data.cache`` (the
    decoded, resized items kept in memory) and the ``data.mean`` / ``data.std`` override.
    """
    if unlabeled:
        u = cfg.unlabeled or {}
        name, root, options = u.get("name", "image_folder"), u.get("root"), u.get("options", {})
        split, where = u.get("split", "train") if split is None else split, "data.unlabeled.options"
    else:
        name, root, options, where = cfg.name, cfg.root, cfg.options, "data.options"
    ds = dataset_spec(name).make(root, split, options, where)
    if train:
        prepare, transform = split_transforms(
            True, size=cfg.size, scale=cfg.scale, crop=cfg.crop, hflip=cfg.hflip,
            color_jitter=cfg.color_jitter, blur=cfg.blur, ignore_index=ds.ignore_index)
    elif cfg.eval_at_label_size:
        prepare, transform = EvalResize(cfg.size), None
    else:
        prepare, transform = split_transforms(False, size=cfg.size)
    ds.set_pipeline(prepare, transform, cache=cfg.cache)
    if cfg.mean is not None or cfg.std is not None:
        ds.set_normalization(cfg.mean or ds.mean, cfg.std or ds.std)
    return ds


def resolve_test_split(cfg: DataCfg) -> Optional[str]:
    """``data.test_split``; ``auto``: "test" when the dataset has a split of that name with
    files (CamVid's full SegNet layout has test/ + testannot/; the 2-split copies do not),
    else None."""
    if cfg.test_split != "auto":
        return cfg.test_split
    spec = dataset_spec(cfg.name)
    if spec.scan is not None:
        root = Path(cfg.root or "").expanduser()
        try:
            pairs = spec.scan(root, cfg.options).get("test") if root.is_dir() else None
        except DataError:
            pairs = None
        return "test" if pairs and pairs[0] else None
    try:
        spec.make(cfg.root, "test", cfg.options)
    except DataError:
        return None
    return "test"
