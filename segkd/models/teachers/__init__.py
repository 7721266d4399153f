"""Published teacher architectures, re-implemented so their real checkpoints load strictly.

Importing this package registers in ``MODELS``: ``jfzhang95_deeplabv3plus``, ``deepwv3plus`` and
the torchvision segmentation models (``tv_deeplabv3_resnet50`` ...). ``importer`` turns a
published checkpoint into a segkd model checkpoint.
"""
from __future__ import annotations

from . import deeplab_resnet, torchvision_seg, wider_resnet  # noqa: F401  (register MODELS)
from .deeplab_resnet import DeepLabV3PlusResNet
from .importer import FORMATS, import_teacher, load_teacher_checkpoint
from .wider_resnet import DeepWV3Plus

__all__ = ["DeepLabV3PlusResNet", "DeepWV3Plus", "FORMATS", "import_teacher",
           "load_teacher_checkpoint"]
