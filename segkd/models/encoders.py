"""The kdsemseg ResNet encoders, registered as timm models.

kdsemseg (docs/methods.md) uses torchvision-style BasicBlock ResNets with channels
64/128/256/512 and these blocks per stage. They are registered with timm's ``register_model`` so
that ``timm.create_model("kd_resnet20", features_only=True)`` and segmentation-models-pytorch's
``tu-kd_resnet20`` work like any other encoder name. ``kd_resnet18`` and ``kd_resnet34`` are the
torchvision ResNets, so ``pretrained=True`` loads timm's ``tv_in1k`` (torchvision) weights.
"""
from __future__ import annotations

from timm.models import build_model_with_cfg, is_model, register_model
from timm.models.resnet import BasicBlock, ResNet

from segkd.core.registry import ENCODERS

KD_RESNET_LAYERS: dict[str, list[int]] = {
    "kd_resnet10": [1, 1, 1, 1],
    "kd_resnet14": [1, 1, 2, 2],
    "kd_resnet18": [2, 2, 2, 2],
    "kd_resnet20": [2, 2, 3, 2],
    "kd_resnet26": [3, 3, 3, 3],
    "kd_resnet34": [3, 4, 6, 3],
}
# kdsemseg variants that have the exact torchvision architecture, hence ImageNet weights.
_PRETRAINED_SOURCE = {"kd_resnet18": "resnet18.tv_in1k", "kd_resnet34": "resnet34.tv_in1k"}


def _build(variant: str, pretrained: bool, layers=None, **kwargs):
    """``layers`` (blocks per stage) overrides the variant's: a depth-cut copy of it (e.g. the
    teacher cut by ``segkd compress``); ``channels`` / ``stem_width`` (timm's ResNet arguments)
    narrow it. Either makes an architecture without ImageNet weights."""
    if pretrained and (layers is not None or "channels" in kwargs or "stem_width" in kwargs):
        raise ValueError(f"{variant} with other layers/channels has no ImageNet weights; "
                         "set pretrained: false")
    if pretrained:
        if variant not in _PRETRAINED_SOURCE:
            raise ValueError(
                f"{variant} has no ImageNet weights (only kd_resnet18 / kd_resnet34 do); "
                "set pretrained: false"
            )
        import timm

        return timm.create_model(_PRETRAINED_SOURCE[variant], pretrained=True, **kwargs)
    cfg = {"architecture": variant, "num_classes": 1000, "input_size": (3, 224, 224)}
    kwargs["pretrained_cfg"] = kwargs.get("pretrained_cfg") or cfg
    return build_model_with_cfg(ResNet, variant, False, block=BasicBlock,
                                layers=list(layers or KD_RESNET_LAYERS[variant]), **kwargs)


def _entrypoint(variant: str):
    def fn(pretrained: bool = False, **kwargs):
        return _build(variant, pretrained, **kwargs)

    fn.__name__ = variant
    fn.__qualname__ = variant
    fn.__doc__ = f"kdsemseg {variant}: BasicBlock ResNet, blocks {KD_RESNET_LAYERS[variant]}."
    return fn


for _name in KD_RESNET_LAYERS:
    if not is_model(_name):  # timm's registry outlives a reload of this module
        register_model(_entrypoint(_name))
    ENCODERS.register(_name, obj=_name)
