"""Published teacher architectures, re-implemented so their real checkpoints load strictly.

Importing this package registers in ``MODELS``: ``jfzhang95_deeplabv3plus``, ``deepwv3plus`` and
the torchvision segmentation models (``tv_deeplabv3_resnet50`` ...). ``importer`` turns a
published checkpoint into a segkd model checkpoint.
"""
from __future__ import annotations

from segkd.models.teachers import deeplab_resnet, torchvision_seg, wider_resnet  # noqa: F401  (register MODELS)
from segkd.models.teachers.deeplab_resnet import DeepLabV3PlusResNet
from segkd.models.teachers.importer import FORMATS, import_teacher, load_teacher_checkpoint
from segkd.models.teachers.wider_resnet import DeepWV3Plus

__all__ = ["DeepLabV3PlusResNet", "DeepWV3Plus", "FORMATS", "import_teacher",
           "load_teacher_checkpoint"]
