"""Tests of the tensor-only distillation losses: common properties and golden values."""
from __future__ import annotations

import math
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F

import segkd.distill.losses  # noqa: F401  (registers the losses)
from segkd.core.registry import LOSSES, Registry, RegistryError
from segkd.distill.losses import LossInputError, ofd_margin
from segkd.distill.losses.dist import dist_terms
from segkd.distill.losses.ofd import partial_l2

LOGITS = (2, 5, 8, 8)
FEATS = (2, 4, 8, 8)
LAYERS = [(2, 4, 8, 8), (2, 3, 4, 4), (2, 6, 2, 2)]  # a loss that takes lists: three layers


def _labels(n: int = 2, h: int = 8, w: int = 8, classes: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, classes, (n, h, w), generator=g)
    y[:, 0, :] = 255  # a row of unlabelled pixels
    return y


# name -> (student shape, teacher shape, constructor kwargs, extra factory); a list of shapes:
# the loss takes lists of tensors
CASES: dict[str, tuple[tuple[int, ...], tuple[int, ...], dict[str, Any], Callable[[], dict]]] = {
    "ce": (LOGITS, LOGITS, {}, lambda: {"target": _labels()}),
    "kd": (LOGITS, LOGITS, {"temperature": 2.0}, lambda: {"target": _labels()}),
    "at": ((2, 3, 8, 8), FEATS, {}, dict),
    "mse": (FEATS, FEATS, {}, dict),
    "hint": (FEATS, FEATS, {"normalize": True}, dict),
    "fitnet": (FEATS, FEATS, {}, dict),
    "ofd": (FEATS, FEATS, {}, lambda: {"margin": torch.tensor([-0.1, -0.5, -1.0, -2.0])}),
    "cwd": (LOGITS, LOGITS, {"tau": 4.0}, dict),
    "dist": (LOGITS, LOGITS, {}, dict),
    "skd": ((2, 3, 8, 8), FEATS, {"scale": 0.25}, dict),
    "fsp": (LAYERS, LAYERS, {}, dict),
}
NAMES = sorted(CASES)


def _each(x: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """``fn`` applied to a tensor, or to each tensor of a list."""
    return [fn(v) for v in x] if isinstance(x, list) else fn(x)


def _pair(name: str, seed: int = 0) -> tuple[Any, Any]:
    g = torch.Generator().manual_seed(seed)
    s_shape, t_shape, _, _ = CASES[name]
    if isinstance(s_shape, list):
        return [torch.randn(x, generator=g) for x in s_shape], [torch.randn(x, generator=g) for x in t_shape]
    return torch.randn(s_shape, generator=g), torch.randn(t_shape, generator=g)


def _same(name: str) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """A student at the loss's minimum and its teacher (for CE: logits agreeing with labels)."""
    s_shape, t_shape, _, make_extra = CASES[name]
    extra = make_extra()
    if isinstance(t_shape, list):
        teacher = [torch.randn(x, generator=torch.Generator().manual_seed(3)) for x in t_shape]
        return [t.clone() for t in teacher], teacher, extra
    teacher = torch.randn(t_shape, generator=torch.Generator().manual_seed(3))
    if name == "ce":
        y = extra["target"].clamp(max=s_shape[1] - 1)
        return 60.0 * F.one_hot(y, s_shape[1]).permute(0, 3, 1, 2).float(), None, extra
    if s_shape[1] != t_shape[1]:  # AT / SKD: same spatial maps through different channels
        student = teacher[:, :1].repeat(1, s_shape[1], 1, 1)
        teacher = teacher[:, :1].repeat(1, t_shape[1], 1, 1)
        return student, teacher, extra
    return teacher.clone(), teacher, extra


def _build(name: str) -> torch.nn.Module:
    return LOSSES.build(name, **CASES[name][2])


def test_every_registered_loss_has_a_case() -> None:
    assert set(LOSSES.names()) == set(CASES)


@pytest.mark.parametrize("name", NAMES)
def test_scalar_finite_float32(name: str) -> None:
    s, t = _pair(name)
    out = _build(name)(s, t, **CASES[name][3]())
    assert out.dim() == 0 and out.dtype == torch.float32 and torch.isfinite(out)
    assert out.item() >= 0


@pytest.mark.parametrize("name", NAMES)
def test_minimum_when_student_equals_teacher(name: str) -> None:
    s, t, extra = _same(name)
    assert _build(name)(s, t, **extra).item() == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_student_only(name: str) -> None:
    s, t = _pair(name)
    _each(s, lambda x: x.requires_grad_(True))
    _each(t, lambda x: x.requires_grad_(True))  # even a teacher that asks for grad gets none
    _build(name)(s, t, **CASES[name][3]()).backward()
    for x in s if isinstance(s, list) else [s]:
        assert x.grad is not None and x.grad.abs().sum() > 0 and torch.isfinite(x.grad).all()
    assert all(x.grad is None for x in (t if isinstance(t, list) else [t]))


@pytest.mark.parametrize("name", NAMES)
def test_autocast_bf16_returns_float32(name: str) -> None:
    s, t = _pair(name)
    loss = _build(name)
    ref = loss(s, t, **CASES[name][3]())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = loss(_each(s, lambda x: x.bfloat16().requires_grad_()), _each(t, torch.Tensor.bfloat16),
                   **CASES[name][3]())
        out32 = loss(s, t, **CASES[name][3]())
    assert out.dtype == torch.float32 and out32.dtype == torch.float32
    assert torch.isfinite(out)
    assert out32.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)  # float32 inside
    assert out.item() == pytest.approx(ref.item(), rel=5e-2, abs=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", NAMES)
def test_cuda_matches_cpu(name: str) -> None:
    s, t = _pair(name)
    extra = CASES[name][3]()
    ref = _build(name)(s, t, **extra)
    extra = {k: v.cuda() if torch.is_tensor(v) else v for k, v in extra.items()}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = _build(name).cuda()(_each(s, torch.Tensor.cuda), _each(t, torch.Tensor.cuda), **extra)
    assert out.dtype == torch.float32 and out.device.type == "cuda"
    assert out.item() == pytest.approx(ref.item(), rel=1e-4, abs=1e-5)


# ---------------------------------------------------------------- registry


def test_duplicate_name_raises() -> None:
    with pytest.raises(RegistryError, match="already registered"):
        LOSSES.register("kd", obj=torch.nn.Identity)
    reg = Registry("loss")
    reg.register("a", obj=torch.nn.Identity)
    with pytest.raises(RegistryError):
        reg.register("a", obj=torch.nn.Identity)


def test_unknown_name_suggests_close_names() -> None:
    with pytest.raises(RegistryError, match="Did you mean: cwd"):
        LOSSES.get("cwdd")


# ---------------------------------------------------------------- CE


def test_ce_golden_ignores_and_upsamples() -> None:
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 0.0]]]])  # [1, 2, 1, 2]
    y = torch.tensor([[[0, 255]]])
    expected = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert LOSSES.build("ce")(logits, None, target=y).item() == pytest.approx(expected, rel=1e-6)
    # extra ignore_index overrides the constructor's
    y2 = torch.tensor([[[0, 7]]])
    assert LOSSES.build("ce")(logits, None, target=y2, ignore_index=7).item() == pytest.approx(
        expected, rel=1e-6)
    # constant logits upsampled to a 4x4 label map: log(C) everywhere
    small = torch.zeros(2, 3, 2, 2)
    out = LOSSES.build("ce")(small, None, target=torch.randint(0, 3, (2, 4, 4)))
    assert out.item() == pytest.approx(math.log(3), rel=1e-6)


def test_ce_no_valid_pixel_is_zero_with_grad() -> None:
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    out = LOSSES.build("ce")(logits, None, target=torch.full((1, 2, 2), 255))
    assert out.item() == 0.0 and out.requires_grad
    out.backward()
    assert logits.grad is not None and logits.grad.abs().sum() == 0


def test_ce_bad_label_message() -> None:
    with pytest.raises(LossInputError, match=r"outside \[0, 3\)"):
        LOSSES.build("ce")(torch.zeros(1, 3, 2, 2), None, target=torch.full((1, 2, 2), 5))


# ---------------------------------------------------------------- KD


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def test_kd_golden_not_divided_by_classes() -> None:
    t = torch.tensor([[[[math.log(3.0), 1.0]], [[0.0, 2.0]]]])  # pixel 0 differs, pixel 1 same
    s = torch.tensor([[[[0.0, 1.0]], [[0.0, 2.0]]]])
    kl = _kl([0.75, 0.25], [0.5, 0.5])
    assert LOSSES.build("kd")(s, t).item() == pytest.approx(kl / 2, rel=1e-6)
    # temperature 2: T^2 * KL(softmax(t/2) || softmax(s/2))
    pt = math.sqrt(3) / (math.sqrt(3) + 1)
    expected = 4 * _kl([pt, 1 - pt], [0.5, 0.5]) / 2
    assert LOSSES.build("kd", temperature=2.0)(s, t).item() == pytest.approx(expected, rel=1e-6)


def test_kd_excludes_ignored_pixels_and_resizes_target() -> None:
    t = torch.tensor([[[[math.log(3.0), 1.0]], [[0.0, 2.0]]]])
    s = torch.tensor([[[[0.0, 1.0]], [[0.0, 2.0]]]])
    kl = _kl([0.75, 0.25], [0.5, 0.5])
    kd = LOSSES.build("kd")
    assert kd(s, t, target=torch.tensor([[[0, 255]]])).item() == pytest.approx(kl, rel=1e-6)
    assert kd(s, t, target=torch.tensor([[[255, 1]]])).item() == pytest.approx(0.0, abs=1e-7)
    assert kd(s, t, target=torch.tensor([[[3, 1]]]), ignore_index=3).item() == pytest.approx(0.0)
    big = torch.tensor([[[0, 0, 255, 255], [0, 0, 255, 255]]])  # [1, 2, 4] -> nearest [1, 1, 2]
    assert kd(s, t, target=big).item() == pytest.approx(kl, rel=1e-6)


def _kd_cirkd(pred: torch.Tensor, soft: torch.Tensor, temperature: float) -> torch.Tensor:
    """Transcription of CIRKD's CriterionKD (losses/kd.py): logits flattened to [N*H*W, C],
    kl_div(log_softmax(s/T), softmax(t/T), 'batchmean') * T^2 -- every pixel counts."""
    c = soft.shape[1]
    p_s = F.log_softmax(pred.permute(0, 2, 3, 1).reshape(-1, c) / temperature, dim=1)
    p_t = F.softmax(soft.permute(0, 2, 3, 1).reshape(-1, c) / temperature, dim=1)
    return F.kl_div(p_s, p_t, reduction="batchmean") * temperature ** 2


def _kd_valid_pixels(pred, soft, target, temperature: float, ignore: int) -> torch.Tensor:
    """The same per-pixel KL, averaged over the pixels whose label is not ``ignore`` only."""
    keep = (target != ignore).reshape(-1)
    c = soft.shape[1]
    p_s = F.log_softmax(pred.permute(0, 2, 3, 1).reshape(-1, c)[keep] / temperature, dim=1)
    p_t = F.softmax(soft.permute(0, 2, 3, 1).reshape(-1, c)[keep] / temperature, dim=1)
    return F.kl_div(p_s, p_t, reduction="batchmean") * temperature ** 2


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_ignore_pixels_exclude_and_include(temperature: float) -> None:
    g = torch.Generator().manual_seed(5)
    s, t = torch.randn(2, 6, 5, 7, generator=g), torch.randn(2, 6, 5, 7, generator=g)
    target = torch.randint(0, 6, (2, 5, 7), generator=g)
    target[0, :2] = 255  # 14 of 70 pixels unlabelled
    target[1, :, -1] = 255
    exclude = LOSSES.build("kd", temperature=temperature)(s, t, target=target)
    include = LOSSES.build("kd", temperature=temperature, ignore_pixels="include")(s, t, target=target)
    ref_ex = _kd_valid_pixels(s, t, target, temperature, 255).item()
    ref_in = _kd_cirkd(s, t, temperature).item()
    assert exclude.item() == pytest.approx(ref_ex, rel=1e-5)  # the default
    assert include.item() == pytest.approx(ref_in, rel=1e-5)
    assert abs(ref_ex - ref_in) > 1e-3 * ref_in  # the two really differ on this input
    explicit = LOSSES.build("kd", temperature=temperature, ignore_pixels="exclude")
    assert explicit(s, t, target=target).item() == pytest.approx(ref_ex, rel=1e-5)
    with pytest.raises(ValueError, match="ignore_pixels"):
        LOSSES.build("kd", ignore_pixels="all")


def test_kd_upsamples_smaller_logits() -> None:
    t = torch.randn(1, 3, 2, 2)
    s = F.interpolate(t, size=(4, 4), mode="bilinear", align_corners=False)
    assert LOSSES.build("kd")(s, t).item() == pytest.approx(0.0, abs=1e-6)
    assert LOSSES.build("kd")(t, s).item() == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------- AT


def test_at_golden_normalisation() -> None:
    s = torch.tensor([[[[1.0, 0.0]], [[1.0, 2.0]]]])  # A = (1, 2) -> (1, 2)/sqrt(5)
    t = torch.tensor([[[[3.0, 0.0]]]])  # A = (9, 0) -> (1, 0); one channel only
    r5 = math.sqrt(5)
    expected = ((1 / r5 - 1) ** 2 + (2 / r5) ** 2) / 2
    assert LOSSES.build("at")(s, t).item() == pytest.approx(expected, rel=1e-6)
    assert LOSSES.build("at")(s, 7 * s).item() == pytest.approx(0.0, abs=1e-7)  # scale free
    p1 = LOSSES.build("at", p=1.0)(s, t).item()  # A = (1, 1) -> (1, 1)/sqrt(2)
    assert p1 == pytest.approx(((1 / math.sqrt(2) - 1) ** 2 + 0.5) / 2, rel=1e-6)


def test_at_resizes_student() -> None:
    out = LOSSES.build("at")(torch.randn(2, 3, 4, 4), torch.randn(2, 6, 8, 8))
    assert torch.isfinite(out)


# ---------------------------------------------------------------- MSE / hint


def test_mse_golden_resize_and_normalize() -> None:
    s = torch.tensor([[[[1.0, 3.0]]]])
    t = torch.tensor([[[[2.0, 5.0]]]])
    assert LOSSES.build("mse")(s, t).item() == pytest.approx((1 + 4) / 2)
    assert LOSSES.build("hint", normalize=True)(s, t).item() == pytest.approx(0.0, abs=1e-6)
    assert LOSSES.get("hint") is LOSSES.get("mse") is LOSSES.get("fitnet")
    small = torch.full((1, 2, 2, 2), 3.0)
    assert LOSSES.build("mse")(small, torch.full((1, 2, 4, 4), 1.0)).item() == pytest.approx(4.0)


def test_channel_mismatch_is_a_clear_value_error() -> None:
    for name in ("mse", "cwd", "kd", "dist", "ofd"):
        with pytest.raises(ValueError, match="channel counts differ"):
            LOSSES.build(name)(torch.randn(1, 3, 4, 4), torch.randn(1, 4, 4, 4),
                               margin=torch.zeros(4))


# ---------------------------------------------------------------- OFD


def _margin_reference(gamma: float, beta: float) -> float:
    """The original OFD formula, with Phi written through math.erf."""
    s, m = abs(gamma), beta
    cdf = 0.5 * (1 + math.erf((-m / s) / math.sqrt(2)))
    if cdf > 0.001:
        return -s * math.exp(-((m / s) ** 2) / 2) / math.sqrt(2 * math.pi) / cdf + m
    return -3 * s


def test_ofd_margin_golden() -> None:
    gamma = [1.0, -2.0, 0.5, 0.3, 1.5]
    beta = [0.0, 1.0, 5.0, -0.4, 3.0]
    got = ofd_margin(torch.tensor(gamma), torch.tensor(beta))
    expected = [_margin_reference(g, b) for g, b in zip(gamma, beta)]
    assert got.dtype == torch.float32
    assert got.tolist() == pytest.approx(expected, rel=1e-5)
    assert got[0].item() == pytest.approx(-math.sqrt(2 / math.pi), rel=1e-6)  # half-normal
    assert got[2].item() == pytest.approx(-1.5)  # Phi(-10) < 0.001 -> -3s
    assert (got < 0).all()


def test_ofd_partial_l2_mask_golden() -> None:
    t = torch.tensor([[[[-1.0, 2.0]]]])  # margin -0.5 -> t' = (-0.5, 2)
    margin = torch.tensor([-0.5])
    # s below a negative t': masked out; t' > 0: counted
    assert partial_l2(torch.tensor([[[[-2.0, 1.0]]]]), t, margin).item() == pytest.approx(1.0)
    # s above t': counted
    assert partial_l2(torch.tensor([[[[0.0, 3.0]]]]), t, margin).item() == pytest.approx(1.25)
    # summed over elements, divided by the batch size
    s2, t2 = torch.tensor([[[[0.0, 3.0]]], [[[0.0, 3.0]]]]), torch.cat([t, t])
    assert partial_l2(s2, t2, margin).item() == pytest.approx(1.25)


def test_ofd_margin_buffer_and_errors() -> None:
    loss = LOSSES.build("ofd")
    s, t = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    with pytest.raises(LossInputError, match="needs a margin"):
        loss(s, t)
    margin = ofd_margin(torch.ones(3), torch.zeros(3))
    loss.set_margin(margin)
    assert loss(s, t).item() == pytest.approx(loss(s, t, margin=margin).item())
    assert "margin" not in loss.state_dict()
    with pytest.raises(LossInputError, match="margin has 2 values"):
        loss(s, t, margin=torch.zeros(2))


# ---------------------------------------------------------------- CWD


def test_cwd_golden_temperature_scaling() -> None:
    t = torch.tensor([[[[math.log(3.0), 0.0]], [[0.0, 0.0]]]])  # [1, 2, 1, 2]
    s = torch.zeros(1, 2, 1, 2)
    kl1 = _kl([0.75, 0.25], [0.5, 0.5])  # channel 0 at tau 1; channel 1 identical
    assert LOSSES.build("cwd")(s, t).item() == pytest.approx(kl1 / 2, rel=1e-6)
    pt = math.sqrt(3) / (math.sqrt(3) + 1)
    expected = 4 * _kl([pt, 1 - pt], [0.5, 0.5]) / 2
    assert LOSSES.build("cwd", tau=2.0)(s, t).item() == pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------- DIST


def test_dist_perfect_and_negated_correlation() -> None:
    # two classes whose logits differ by at least 1 at every pixel: with nearly equal logits
    # the two class probabilities are ~0.5 each and the per-pixel correlation is 0/eps
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(2, 1, 3, 3, generator=g)
    gap = (1 + torch.rand(2, 1, 3, 3, generator=g)) * torch.where(torch.rand(2, 1, 3, 3, generator=g) < 0.5, -1, 1)
    z = torch.cat([z0, z0 + gap], dim=1)
    inter, intra = dist_terms(z, z)  # exactly 0 but for the eps=1e-8 in the denominator
    assert inter.item() == pytest.approx(0.0, abs=1e-4)
    assert intra.item() == pytest.approx(0.0, abs=1e-4)
    inter, intra = dist_terms(z, -z)  # two classes: p_t = 1 - p_s, correlation -1
    assert inter.item() == pytest.approx(2.0, abs=1e-4)
    assert intra.item() == pytest.approx(2.0, abs=1e-4)
    assert LOSSES.build("dist", gamma=0.0)(z, -z).item() == pytest.approx(2.0, abs=1e-4)
    assert LOSSES.build("dist", tau=2.0, beta=0.5, gamma=0.25)(z, -z).item() == pytest.approx(
        4 * (0.5 * 2 + 0.25 * 2), abs=1e-3)


def _pearson_py(a: list[float], b: list[float]) -> float:
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    return cov / (math.sqrt(sum((x - ma) ** 2 for x in a)) * math.sqrt(sum((y - mb) ** 2 for y in b)))


def _softmax_py(z: list[float], tau: float) -> list[float]:
    e = [math.exp(v / tau) for v in z]
    return [v / sum(e) for v in e]


def test_dist_golden_at_partial_correlation() -> None:
    """3 classes x 4 pixels with correlations strictly between -1 and 1, computed in plain
    Python: inter = 1 - mean over pixels of corr(p_s[pixel], p_t[pixel]) across classes,
    intra = 1 - mean over classes of corr(p_s[:, class], p_t[:, class]) across pixels;
    loss = tau^2 (beta inter + gamma intra)."""
    s_px = [[1.0, 0.2, -0.5], [0.3, 1.5, 0.1], [-1.0, 0.0, 2.0], [0.5, 0.4, 0.6]]  # [pixel][class]
    t_px = [[0.8, 0.9, -0.2], [1.2, 0.1, 0.3], [-0.4, 1.1, 1.0], [2.0, -0.3, 0.2]]
    s = torch.tensor(s_px).t().reshape(1, 3, 2, 2)  # pixels in row-major order of a 2x2 map
    t = torch.tensor(t_px).t().reshape(1, 3, 2, 2)
    tau, beta, gamma = 2.0, 0.5, 1.5
    ps = [_softmax_py(z, tau) for z in s_px]
    pt = [_softmax_py(z, tau) for z in t_px]
    inter = 1 - sum(_pearson_py(a, b) for a, b in zip(ps, pt)) / 4
    cols = lambda p, c: [row[c] for row in p]  # noqa: E731
    intra = 1 - sum(_pearson_py(cols(ps, c), cols(pt, c)) for c in range(3)) / 3
    assert 0.2 < inter < 1.8 and 0.2 < intra < 1.8 and abs(inter - intra) > 0.05  # not +-1
    got_inter, got_intra = dist_terms(s, t, tau)
    assert got_inter.item() == pytest.approx(inter, rel=1e-5)
    assert got_intra.item() == pytest.approx(intra, rel=1e-5)
    loss = LOSSES.build("dist", tau=tau, beta=beta, gamma=gamma)(s, t).item()
    assert loss == pytest.approx(tau ** 2 * (beta * inter + gamma * intra), rel=1e-5)


# ---------------------------------------------------------------- SKD


def test_skd_golden_similarity() -> None:
    s = torch.zeros(1, 2, 4, 4)
    s[:, 0] = 1.0  # all nodes (1, 0): S_s = ones
    t = torch.zeros(1, 3, 4, 4)
    t[0, 0, :, :2] = 2.0  # 2x2 nodes alternate (2,0,0) / (0,0,5): S_t = 1 where same column
    t[0, 2, :, 2:] = 5.0
    assert LOSSES.build("skd")(s, t).item() == pytest.approx(8 / 16)  # kernel int(0.5 * 4) = 2
    assert LOSSES.build("skd", kernel=4)(s, t).item() == pytest.approx(0.0, abs=1e-6)  # one node
    assert LOSSES.build("skd", variant="cirkd")(s, t).item() == pytest.approx(8 / 16)


def _skd_original(fs: torch.Tensor, ft: torch.Tensor, scale: float = 0.5) -> torch.Tensor:
    """Transcription of the SKD authors' pair-wise term (structure_knowledge_distillation,
    CriterionPairWiseforWholeFeatAfterPool + sim_dis_compute): max-pool with kernel = stride =
    int(side * scale) of the teacher map, ceil mode; nodes / (||node||_2 + 1e-8) with the norm
    detached; sum((S_t - S_s)^2) / (h*w)^2 / N."""
    ph, pw = int(ft.shape[2] * scale), int(ft.shape[3] * scale)
    pool = torch.nn.MaxPool2d((ph, pw), stride=(ph, pw), padding=0, ceil_mode=True)

    def sim(f: torch.Tensor) -> torch.Tensor:
        norm = ((f ** 2).sum(dim=1) ** 0.5).reshape(f.shape[0], 1, f.shape[2], f.shape[3]) + 1e-8
        f = (f / norm.detach()).reshape(f.shape[0], f.shape[1], -1)
        return torch.einsum("icm,icn->imn", f, f)

    ps, pt = pool(fs), pool(ft)
    return (((sim(pt) - sim(ps)) ** 2) / (pt.shape[-1] * pt.shape[-2]) ** 2 / pt.shape[0]).sum()


def _skd_cirkd(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    """Transcription of CIRKD's CriterionStructuralKD: 2x2 max-pool (ceil mode), F.normalize
    over channels, mean of the squared difference of the similarity maps."""
    pool = torch.nn.MaxPool2d((2, 2), stride=(2, 2), padding=0, ceil_mode=True)

    def sim(f: torch.Tensor) -> torch.Tensor:
        f = torch.nn.functional.normalize(pool(f), p=2, dim=1).flatten(2)
        return torch.bmm(f.transpose(1, 2), f)

    return ((sim(fs) - sim(ft)) ** 2).mean()


@pytest.mark.parametrize("size", [(8, 8), (9, 13), (33, 65)])
def test_skd_matches_the_original_value_and_gradient(size) -> None:
    g = torch.Generator().manual_seed(3)
    s = torch.randn(2, 5, *size, generator=g, requires_grad=True)
    t = torch.randn(2, 7, *size, generator=g)
    ours = LOSSES.build("skd")(s, t)
    (g_ours,) = torch.autograd.grad(ours, s)
    s2 = s.detach().clone().requires_grad_(True)
    ref = _skd_original(s2, t)
    (g_ref,) = torch.autograd.grad(ref, s2)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    assert torch.allclose(g_ours, g_ref, rtol=1e-4, atol=1e-9)  # the norm is detached there too


@pytest.mark.parametrize("size", [(8, 8), (9, 13)])
def test_skd_cirkd_variant_matches_cirkd(size) -> None:
    g = torch.Generator().manual_seed(4)
    s = torch.randn(2, 5, *size, generator=g, requires_grad=True)
    t = torch.randn(2, 7, *size, generator=g)
    ours = LOSSES.build("skd", variant="cirkd")(s, t)
    (g_ours,) = torch.autograd.grad(ours, s)
    s2 = s.detach().clone().requires_grad_(True)
    ref = _skd_cirkd(s2, t)
    (g_ref,) = torch.autograd.grad(ref, s2)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    assert torch.allclose(g_ours, g_ref, rtol=1e-4, atol=1e-9)


def test_skd_kernel_resize_and_errors() -> None:
    from segkd.distill.losses.skd import pool_kernel
    assert pool_kernel((8, 8), 0.5) == (4, 4) and pool_kernel((65, 33), 0.5) == (32, 16)
    assert pool_kernel((1, 3), 0.5) == (1, 1)
    out = LOSSES.build("skd")(torch.randn(2, 3, 16, 16), torch.randn(2, 5, 8, 8))
    assert torch.isfinite(out)  # the student map is resized to the teacher's
    for bad in ({"variant": "avg"}, {"scale": 0.0}, {"kernel": 0}):
        with pytest.raises(ValueError, match="skd"):
            LOSSES.build("skd", **bad)
