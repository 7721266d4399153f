"""Numbers defined once for the whole package."""
from __future__ import annotations

# ImageNet normalisation (torchvision / timm weights; Cityscapes, VOC and imported teachers)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
