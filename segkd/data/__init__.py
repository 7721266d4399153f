"""Datasets and joint transforms. Importing this package registers every dataset.

    from segkd.data import build_dataset, build_transforms
    ds = build_dataset("camvid", root="data/camvid", split="val",
                       transform=build_transforms(train=False))

A dataset is one module holding its ``DatasetSpec`` (builder and layout, options, scanner,
downloads; ``segkd.data.spec``) and one ``register_dataset`` call; ``dataset_from_config`` is
how a run's ``data:`` section becomes a dataset.
"""
from __future__ import annotations

# imported for their registrations; this order is the order `segkd download` lists downloads in
from segkd.data import camvid, voc, cityscapes, classification, folder, synthetic  # noqa: F401  # isort: skip
from segkd.data.base import SegmentationDataset
from segkd.data.cityscapes import CITYSCAPES_TRAINID_TO_LABELID
from segkd.data.fraction import read_file_list, select_fraction, write_file_list
from segkd.data.from_config import build_dataset, dataset_from_config, resolve_test_split
from segkd.data.pairing import LayoutMeta, Pairing
from segkd.data.spec import Archive, DatasetSpec, Download, dataset_spec, register_dataset
from segkd.data.transforms import build_transforms

__all__ = [
    "Archive",
    "CITYSCAPES_TRAINID_TO_LABELID",
    "DatasetSpec",
    "Download",
    "LayoutMeta",
    "Pairing",
    "SegmentationDataset",
    "build_dataset",
    "build_transforms",
    "dataset_from_config",
    "dataset_spec",
    "read_file_list",
    "register_dataset",
    "resolve_test_split",
    "select_fraction",
    "write_file_list",
]
