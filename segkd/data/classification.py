"""Image classification as 1x1 segmentation (Plug and Play works on classifiers too).

An ``image_classes`` dataset (``root/<split>/<class name>/*.jpg|png``, the ImageFolder layout)
returns each image with a ``[1, 1]`` "mask" holding its class id, and segkd's ``classifier``
model returns ``[N, C, 1, 1]`` logits. Every loss, the engine and the metrics then work
unchanged: cross-entropy and KD over one "pixel", and the confusion matrix's pixel accuracy is
top-1 accuracy (``summary.json`` names it ``top1``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchvision import tv_tensors

from segkd.core.errors import DataError
from segkd.data.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SegmentationDataset,
    list_images,
    read_image,
    require_dir,
)
from segkd.data.spec import DatasetSpec, register_dataset


class ClassificationDataset(SegmentationDataset):
    """Items are ``(image_path, None)``; ``labels[i]`` is the class id of item ``i``."""

    def __init__(self, *, labels: list[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.labels = list(labels)

    def subset(self, indices):
        new = super().subset(indices)
        new.labels = [self.labels[int(i)] for i in indices]
        return new

    def load_raw(self, i: int) -> tuple[Tensor, Tensor]:
        return read_image(self.items[i][0]), torch.full((1, 1), self.labels[i], dtype=torch.uint8)

    def __getitem__(self, i: int) -> dict[str, Tensor | str]:
        image = tv_tensors.Image(read_image(self.items[i][0]))
        for step in (self.prepare, self.transform):  # geometry only: the label is not a map
            if step is not None:
                image, _ = step(image, tv_tensors.Mask(torch.zeros(image.shape[-2:], dtype=torch.uint8)))
        return {"image": self.normalize(image), "mask": torch.full((1, 1), self.labels[i], dtype=torch.int64),
                "name": self.item_name(i)}


def image_classes(root: str | Path, split: str = "train",
                  classes: list[str] | None = None) -> ClassificationDataset:
    """ImageFolder layout: ``root/<split>/<class>/<image>``; classes sorted by folder name
    (or given, to fix their order)."""
    base = require_dir(Path(root) / split, f"image_classes split '{split}'")
    names = classes or sorted(p.name for p in base.iterdir() if p.is_dir())
    if not names:
        raise DataError(f"{base}: no class folders (expected {base}/<class>/<image files>)")
    items, labels = [], []
    for idx, name in enumerate(names):
        folder = base / name
        if not folder.is_dir():
            raise DataError(f"{base}: class folder '{name}' is missing")
        for f in list_images(folder, recursive=True):
            items.append((f, None))
            labels.append(idx)
    if not items:
        raise DataError(f"{base}: no images in the class folders")
    return ClassificationDataset(items=items, labels=labels, classes=names, ignore_index=255,
                                 mean=IMAGENET_MEAN, std=IMAGENET_STD,
                                 name=f"image_classes/{split}")


register_dataset(DatasetSpec("image_classes", image_classes))
