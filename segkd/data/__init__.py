"""Datasets and joint transforms. Importing this package registers every dataset builder.

    from segkd.data import build_dataset, build_transforms
    ds = build_dataset("camvid", root="data/camvid", split="val",
                       transform=build_transforms(train=False))
"""
from __future__ import annotations

from typing import Any

from segkd.data import camvid, cityscapes, classification, folder, synthetic, voc  # noqa: F401  (registration)
from segkd.data.base import SegmentationDataset
from segkd.data.cityscapes import CITYSCAPES_TRAINID_TO_LABELID
from segkd.data.fraction import read_file_list, select_fraction, write_file_list
from segkd.data.transforms import build_transforms
from segkd.registry import DATASETS


def build_dataset(name: str, **kwargs: Any) -> SegmentationDataset:
    """``DATASETS.build(name, **kwargs)``: e.g. ``build_dataset("voc", root=..., split="val")``."""
    return DATASETS.build(name, **kwargs)


__all__ = [
    "CITYSCAPES_TRAINID_TO_LABELID",
    "SegmentationDataset",
    "build_dataset",
    "build_transforms",
    "read_file_list",
    "select_fraction",
    "write_file_list",
]
