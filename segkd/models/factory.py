"""``create_model``: one entry point for every architecture segkd trains or distills."""
from __future__ import annotations

import importlib
from typing import Any

import torch
import torch.nn as nn

from segkd.core.errors import ConfigError
from segkd.core.registry import ENCODERS, MODELS, suggest
from segkd.models import encoders as _encoders  # noqa: F401  (registers kd_resnet*)

# smp's own table of decoders (name -> class), so every decoder the installed smp has is offered
# (upernet, segformer, dpt in smp 0.5+); the small fallback is for smp versions without the table.
_SMP_FALLBACK = {"unet": "Unet", "unetplusplus": "UnetPlusPlus", "fpn": "FPN", "pspnet": "PSPNet",
                 "deeplabv3": "DeepLabV3", "deeplabv3plus": "DeepLabV3Plus", "linknet": "Linknet",
                 "manet": "MAnet", "pan": "PAN"}


def smp_archs() -> dict[str, type]:
    """smp decoder classes by segkd arch name (smp's ``MODEL_ARCHITECTURES_MAPPING``)."""
    import segmentation_models_pytorch as smp

    table = getattr(smp, "MODEL_ARCHITECTURES_MAPPING", None)
    if table:
        return {name.lower(): cls for name, cls in table.items()}
    return {name: getattr(smp, cls) for name, cls in _SMP_FALLBACK.items()}
_OPTIONAL = ("segkd.models.teachers", "segkd.models.classifier", "segkd.models.deeplab_timm")  # modules registering extra MODELS, imported lazily


def _load_extra_models() -> None:
    for mod in _OPTIONAL:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as err:  # optional part not present
            if err.name != mod:
                raise


def _timm_name(encoder: str) -> str:
    import timm

    name = encoder[3:] if encoder.startswith("tu-") else encoder
    if name not in timm.list_models(name.split(".")[0]) and name.split(".")[0] not in timm.list_models():
        known = timm.list_models("*resnet*") + ENCODERS.names() + ["mobilenetv2_100"]
        raise ConfigError(f"unknown encoder '{encoder}'.{suggest(name, known)} "
                          "See `segkd list encoders`.")
    return name


def create_model(arch: str, encoder: str | None = None, num_classes: int = 21,
                 pretrained: bool = False, output_stride: int | None = None,
                 **kwargs: Any) -> nn.Module:
    """Build a segmentation network returning logits ``[N, num_classes, H, W]``.

    ``arch`` is an smp decoder name (``unet``, ``deeplabv3plus``, ...) with a timm ``encoder``
    (any timm name, or a segkd-registered one such as ``kd_resnet20``), or a segkd-registered
    architecture (``MODELS``, e.g. an imported teacher) which receives the other arguments.
    ``output_stride`` (8 or 16) applies to deeplabv3/deeplabv3plus.
    """
    _load_extra_models()
    if arch in MODELS:
        extra = {"output_stride": output_stride} if output_stride else {}
        if encoder:
            extra["encoder"] = encoder
        if pretrained:
            extra["pretrained"] = True
        return MODELS.build(arch, num_classes=num_classes, **extra, **kwargs)
    archs = smp_archs()
    if arch not in archs:
        known = sorted(archs) + MODELS.names()
        raise ConfigError(f"unknown model arch '{arch}'.{suggest(arch, known)} "
                          f"Known: {', '.join(known)}")
    if not encoder:
        raise ConfigError(f"model.encoder is required for arch '{arch}'")
    import segmentation_models_pytorch as smp

    cls = archs[arch]
    if output_stride is not None:
        if arch not in ("deeplabv3", "deeplabv3plus"):
            raise ConfigError(f"output_stride applies to deeplabv3/deeplabv3plus, not '{arch}'")
        kwargs["encoder_output_stride"] = output_stride
    weights = None
    if pretrained:  # smp >= 0.5 takes True for timm ("tu-") encoders, older versions "imagenet"
        weights = True if tuple(int(x) for x in smp.__version__.split(".")[:2]) >= (0, 5) else "imagenet"
    model = cls(encoder_name="tu-" + _timm_name(encoder), encoder_weights=weights,
                classes=num_classes, **kwargs)
    return _masks_only(model) if model.classification_head is not None else model


_MASKS_ONLY: dict[type, type] = {}


class _MasksOnly:
    """Mixin: an smp model built with ``aux_params`` returns ``(masks, labels)``; keep the masks
    (the logits). Modules and state-dict keys are untouched."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[0]  # type: ignore[misc]


def _masks_only(model: nn.Module) -> nn.Module:
    """Re-class an smp model in place so that ``forward`` returns the logits tensor only."""
    cls = type(model)
    if cls not in _MASKS_ONLY:
        _MASKS_ONLY[cls] = type(f"{cls.__name__}MasksOnly", (_MasksOnly, cls), {})
    model.__class__ = _MASKS_ONLY[cls]
    return model


def list_models() -> list[str]:
    _load_extra_models()
    return sorted(smp_archs()) + MODELS.names()


def list_encoders(pattern: str = "*") -> list[str]:
    import timm

    return ENCODERS.names() + timm.list_models(pattern)
