"""Model factory: segmentation-models-pytorch decoders over timm encoders, plus segkd's own
architectures (imported teachers) registered in ``MODELS``."""
from __future__ import annotations

from segkd.models.encoders import KD_RESNET_LAYERS
from segkd.models.factory import create_model, list_encoders, list_models, smp_archs

__all__ = ["smp_archs", "KD_RESNET_LAYERS", "create_model", "list_encoders", "list_models"]
