"""Trainer and teacher options checked by what they do to the weights: gradient accumulation,
gradient clipping, the teacher's BatchNorm in training mode, trainable / frozen parts."""
from __future__ import annotations

import pytest
import torch

from segkd.config.schema import config_from_dict
from segkd.core.checkpoint import load_checkpoint
from segkd.engine import Engine

# every BatchNorm of the tiny UNet frozen (eval mode, fixed statistics): a BN-free model, whose
# gradient over 4 images is the mean of the gradients over two halves
FROZEN_BN = ["*bn*", "*downsample.1", "decoder.blocks.*.conv1.1", "decoder.blocks.*.conv2.1"]
SGD = {"name": "sgd", "lr": 0.05, "momentum": 0.0, "weight_decay": 0.0}


def _weights(run) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "last.pt")["state_dict"]


def _initial(raw: dict) -> dict[str, torch.Tensor]:
    """The student's initial weights (the engine seeds with cfg.seed before building it)."""
    from segkd.engine.state import seed_all
    from segkd.models.spec import build_from_spec, model_spec

    cfg = config_from_dict(raw)
    seed_all(cfg.seed)
    return build_from_spec(model_spec(cfg.model, 4)).state_dict()


def test_grad_accum_2_of_batch_2_equals_batch_4(tmp_path, tiny):
    stage = {"name": "s", "epochs": 1, "frozen": FROZEN_BN, "terms": [{"loss": "ce"}], "optimizer": SGD}
    runs = {}
    for name, batch, accum in (("b4", 4, 1), ("b2x2", 2, 2), ("b2", 2, 1)):
        raw = tiny(stages=[stage], data={"batch_size": batch}, trainer={"grad_accum": accum},
                   eval={"splits": []})
        eng = Engine(config_from_dict(raw), tmp_path / name)
        eng.run()
        runs[name] = (_weights(tmp_path / name), eng.progress["step"])
    (b4, steps4), (acc, steps_acc), (b2, steps2) = runs["b4"], runs["b2x2"], runs["b2"]
    assert steps4 == steps_acc == 2 and steps2 == 4  # 8 images: 2 optimiser steps of 4 images
    for k in b4:
        torch.testing.assert_close(acc[k], b4[k], atol=2e-6, rtol=1e-5, msg=k)
    assert any(not torch.allclose(b2[k], b4[k], atol=1e-4) for k in b4)  # not trivially equal


@pytest.mark.parametrize("clip", [None, 1e-3])
def test_grad_clip_bounds_the_update_norm(tmp_path, tiny, clip):
    """One SGD step (lr 1, no momentum or decay) moves the weights by exactly the gradient:
    with clipping, its global norm is the clip value."""
    stage = {"name": "s", "epochs": 1, "iters_per_epoch": 1, "terms": [{"loss": "ce"}],
             "optimizer": {**SGD, "lr": 1.0}}
    raw = tiny(stages=[stage], trainer={"grad_clip": clip}, eval={"splits": []})
    init = _initial(raw)
    eng = Engine(config_from_dict(raw), tmp_path / "r")
    eng.run()
    after = _weights(tmp_path / "r")
    params = [n for n, _ in eng.distiller.student.named_parameters()]
    norm = torch.sqrt(sum(((after[k] - init[k]).double() ** 2).sum() for k in params)).item()
    if clip is None:
        assert norm > 100 * 1e-3  # the unclipped gradient is far larger than the clip below
    else:
        assert norm == pytest.approx(clip, rel=1e-3)


@pytest.mark.parametrize("train_bn", [False, True])
def test_teacher_batchnorm_in_train_mode_uses_and_updates_batch_statistics(tmp_path, tiny,
                                                                           teacher_ckpt, train_bn):
    stage = {"name": "kd", "epochs": 1, "iters_per_epoch": 2, "terms": [{"loss": "kd"}],
             "optimizer": SGD}
    raw = tiny(teacher={"checkpoint": str(teacher_ckpt), "train_bn": train_bn}, stages=[stage],
               eval={"splits": []})
    eng = Engine(config_from_dict(raw), tmp_path / "r")
    eng.run()
    before = load_checkpoint(teacher_ckpt)["state_dict"]
    now = eng.distiller.teacher.state_dict()
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    moved = [k for k in stats if not torch.equal(now[k].cpu().float(), before[k].float())]
    params = [k for k in before if k.endswith(("weight", "bias")) and "running" not in k]
    assert all(torch.equal(now[k].cpu().float(), before[k].float()) for k in params)  # frozen
    if train_bn:
        assert len(moved) == len(stats)  # every BatchNorm normalised with batch statistics
    else:
        assert moved == []
    eng.distiller.train()
    assert eng.distiller.teacher.training is train_bn
    eng.distiller.eval()
    assert eng.distiller.teacher.training is False  # validation: running statistics


class _FrozenBlockNet(torch.nn.Module):
    """stem (conv + BN) -> block (conv + BatchNorm without affine parameters + Dropout) -> head."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        nn = torch.nn
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8, affine=False),
                                   nn.ReLU(), nn.Dropout2d(0.5))
        self.head = nn.Conv2d(8, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)))


def _register_net() -> str:
    from segkd.core.registry import MODELS

    name = "test_frozen_block_net"
    if name not in MODELS.names():
        MODELS.register(name)(_FrozenBlockNet)
    return name


def test_set_trainable_follows_globs_and_ancestors():
    from segkd.core.errors import ConfigError
    from segkd.distill.freeze import set_trainable

    net = _FrozenBlockNet()
    assert set_trainable(net, ["stem"]) == 4  # a module's path covers its parameters: conv, BN
    assert {n for n, p in net.named_parameters() if p.requires_grad} == {
        "stem.0.weight", "stem.0.bias", "stem.1.weight", "stem.1.bias"}
    assert set_trainable(net, ["*"], ["stem.1", "block"]) == 4  # frozen wins: stem conv + head
    assert {n for n, p in net.named_parameters() if p.requires_grad} == {
        "stem.0.weight", "stem.0.bias", "head.weight", "head.bias"}
    with pytest.raises(ConfigError, match="'stem.9' matches no module"):
        set_trainable(net, ["stem.9"])


@pytest.mark.parametrize("trainable,frozen", [(["stem", "head"], []), (["*"], ["block"])])
def test_a_frozen_part_keeps_its_batchnorm_statistics_even_without_affine(tmp_path, tiny,
                                                                          trainable, frozen):
    """Through the engine: the frozen block's BatchNorm(affine=False) has no parameters of its
    own, yet sits in a frozen part: its running statistics must not move (nor Dropout run);
    the trainable stem's BatchNorm does update."""
    stage = {"name": "s", "epochs": 1, "iters_per_epoch": 2, "trainable": trainable,
             "frozen": frozen, "terms": [{"loss": "ce"}], "optimizer": SGD}
    raw = tiny(model={"arch": _register_net(), "encoder": None}, stages=[stage],
               eval={"splits": []})
    init = _initial(raw)
    eng = Engine(config_from_dict(raw), tmp_path / "r")
    eng.run()
    after = _weights(tmp_path / "r")
    for k in ("block.0.weight", "block.1.running_mean", "block.1.running_var",
              "block.1.num_batches_tracked"):
        assert torch.equal(after[k], init[k]), k
    assert not torch.equal(after["stem.1.running_mean"], init["stem.1.running_mean"])
    assert not torch.equal(after["head.weight"], init["head.weight"])
    eng.distiller.train()
    assert not eng.distiller.student.block[1].training and not eng.distiller.student.block[3].training
