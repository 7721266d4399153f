"""Cheap convolution replacement (Plug and Play; docs/methods.md).

Named ``nn.Conv2d`` modules are swapped for cheaper, newly initialised blocks that produce the
same output shape for any input::

    paths = resolve_paths(model, ["encoder.layer3.*.conv1", "decoder.blocks.0.conv1.0"])
    records = replace_convs(model, paths, block="dwsep", kernel_size=9, dilation=5)
    student, records = make_cheap_student(teacher, paths, "dwsep")
    plan = auto_plan(teacher, target_params=0.6, input_size=(512, 512))

Blocks live in ``CHEAP_BLOCKS``; a builder is ``builder(conv, **options) -> (CheapBlock, info)``.
Replaced blocks are ``CheapBlock`` (an ``nn.Sequential``); the convs inside them are never matched
again by ``resolve_paths``, so incremental replacement with globs is safe.
FLOPs follow ``segkd.models.cost`` (FLOPs = 2 x MACs).
"""
from __future__ import annotations

import copy
import difflib
import fnmatch
import inspect
import math
from collections import OrderedDict
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segkd.core.errors import SegkdError
from segkd.core.registry import Registry
from segkd.models.cost import count_flops, count_params, module_flops, module_input_shapes, per_module_flops

CHEAP_BLOCKS = Registry("cheap block")


class ReplacementError(SegkdError, ValueError):
    """A bad replacement request (unknown path, 1x1 conv for dwsep, bad option)."""


class CheapBlock(nn.Sequential):
    """Marker class for a replacement block (children named ``dw``/``pw``, ``low``/``pw``, ...)."""


class Pad(nn.Module):
    """``F.pad`` as a module; ``pad`` = (left, right, top, bottom), negative values crop."""

    def __init__(self, pad: tuple[int, int, int, int], mode: str = "constant") -> None:
        super().__init__()
        self.pad, self.mode = pad, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self.pad, mode=self.mode)

    def extra_repr(self) -> str:
        return f"pad={self.pad}, mode={self.mode}"


# --------------------------------------------------------------------------- block builders

def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _factory(conv: nn.Conv2d) -> dict[str, Any]:
    return {"device": conv.weight.device, "dtype": conv.weight.dtype}


def _init(block: CheapBlock) -> CheapBlock:
    """Kaiming (fan_in) init: linear gain inside the block, ReLU gain on its last conv; zero bias."""
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    for i, conv in enumerate(convs):
        gain = "relu" if i == len(convs) - 1 else "linear"
        nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity=gain)
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
    return block


def _orig_pads(conv: nn.Conv2d, dim: int) -> tuple[int, int]:
    """(before, after) padding the original conv applies along spatial ``dim`` (0 = H, 1 = W)."""
    if conv.padding == "valid":
        return 0, 0
    if conv.padding == "same":  # PyTorch puts the odd pixel after
        total = conv.dilation[dim] * (conv.kernel_size[dim] - 1)
        return total // 2, total - total // 2
    return conv.padding[dim], conv.padding[dim]


def _matching_pads(conv: nn.Conv2d, kernel: tuple[int, int], dilation: int) -> list[tuple[int, int]]:
    """Per dim (before, after) padding so a ``kernel``/``dilation`` conv with the original stride
    gives the original output size, centred on the original's receptive field."""
    pads = []
    for dim in range(2):
        before, after = _orig_pads(conv, dim)
        span = conv.dilation[dim] * (conv.kernel_size[dim] - 1)
        new_span = dilation * (kernel[dim] - 1)
        new_before = before + (new_span - span) // 2
        pads.append((new_before, before + after + new_span - span - new_before))
    return pads


@CHEAP_BLOCKS.register("dwsep")
def dwsep_block(conv: nn.Conv2d, kernel_size: int | Sequence[int] = 9,
                dilation: int = 5) -> tuple[CheapBlock, dict]:
    """k x k depthwise conv (dilation d, original stride) + 1x1 pointwise (original groups, bias).

    Defaults k=9, d=5: padding 20, receptive field 41 (the seed). Params:
    ``k*k*C_in + C_in*C_out/groups (+ C_out bias)``. A 1x1 original conv is refused.
    Padding (zeros, whatever the original's mode: reflect-padding 20 pixels would fail on small
    maps) is chosen so the output size equals the original's; even kernels get an asymmetric pad.
    """
    if tuple(conv.kernel_size) == (1, 1):
        raise ReplacementError("dwsep replacement of a 1x1 conv makes no sense "
                               "(it is already pointwise); use block 'lowrank' or 'grouped'")
    kernel = _pair(kernel_size)
    (top, bottom), (left, right) = _matching_pads(conv, kernel, dilation)
    layers: list[tuple[str, nn.Module]] = []
    if top == bottom >= 0 and left == right >= 0:
        padding: tuple[int, int] = (top, left)
    else:  # asymmetric (even original kernel) or negative (crop) padding
        layers.append(("pad", Pad((left, right, top, bottom))))
        padding = (0, 0)
    cin, fk = conv.in_channels, _factory(conv)
    layers.append(("dw", nn.Conv2d(cin, cin, kernel, conv.stride, padding, dilation, groups=cin,
                                   bias=False, **fk)))
    layers.append(("pw", nn.Conv2d(cin, conv.out_channels, 1, groups=conv.groups,
                                   bias=conv.bias is not None, **fk)))
    info = {"kernel_size": list(kernel), "dilation": dilation,
            "padding": [top, bottom, left, right]}
    if conv.padding_mode != "zeros":
        info["note"] = f"zero padding replaces the original '{conv.padding_mode}' padding"
    return _init(CheapBlock(OrderedDict(layers))), info


def _same_geometry(conv: nn.Conv2d) -> dict[str, Any]:
    """Kernel, stride, padding, dilation and padding mode of ``conv`` as Conv2d kwargs."""
    return {"kernel_size": conv.kernel_size, "stride": conv.stride, "padding": conv.padding,
            "dilation": conv.dilation, "padding_mode": conv.padding_mode}


@CHEAP_BLOCKS.register("lowrank")
def lowrank_block(conv: nn.Conv2d, rank: float = 0.25) -> tuple[CheapBlock, dict]:
    """Original-geometry conv C_in -> r, then 1x1 r -> C_out (bias iff original).

    ``r = ceil(rank * min(C_in, C_out))``, rounded up to a multiple of the original groups
    (the first conv keeps the original groups).
    """
    if not 0 < rank <= 1:
        raise ReplacementError(f"lowrank option rank must be in (0, 1], got {rank}")
    g = conv.groups
    r = math.ceil(rank * min(conv.in_channels, conv.out_channels) / g) * g
    fk = _factory(conv)
    block = CheapBlock(OrderedDict([
        ("low", nn.Conv2d(conv.in_channels, r, groups=g, bias=False, **_same_geometry(conv), **fk)),
        ("pw", nn.Conv2d(r, conv.out_channels, 1, bias=conv.bias is not None, **fk)),
    ]))
    return _init(block), {"rank": r}


@CHEAP_BLOCKS.register("grouped")
def grouped_block(conv: nn.Conv2d, groups: int = 4) -> tuple[CheapBlock, dict]:
    """Original-geometry conv with ``groups`` groups (reduced to the largest valid divisor)."""
    if groups < 1:
        raise ReplacementError(f"grouped option groups must be >= 1, got {groups}")
    common = math.gcd(conv.in_channels, conv.out_channels)
    g = max(d for d in range(1, min(groups, common) + 1) if common % d == 0)
    info: dict[str, Any] = {"groups": g}
    if g != groups:
        info["note"] = (f"groups reduced from {groups} to {g} (must divide in={conv.in_channels} "
                        f"and out={conv.out_channels})")
    block = CheapBlock(OrderedDict([
        ("gconv", nn.Conv2d(conv.in_channels, conv.out_channels, groups=g,
                            bias=conv.bias is not None, **_same_geometry(conv), **_factory(conv))),
    ]))
    return _init(block), info


def build_block(conv: nn.Conv2d, block: str, **opts: Any) -> tuple[CheapBlock, dict]:
    """Build the ``block`` replacement for ``conv``; unknown options name the valid ones."""
    builder: Callable[..., tuple[CheapBlock, dict]] = CHEAP_BLOCKS.get(block)
    valid = [p for p in inspect.signature(builder).parameters if p != "conv"]
    unknown = sorted(set(opts) - set(valid))
    if unknown:
        raise ReplacementError(f"unknown option(s) {', '.join(unknown)} for cheap block "
                               f"'{block}'; valid options: {', '.join(valid)}")
    return builder(conv, **opts)


# --------------------------------------------------------------------------- paths

def _conv_paths(model: nn.Module) -> list[str]:
    """Dotted paths of every nn.Conv2d not already inside a CheapBlock."""
    inside = {f"{name}.{sub}" if name else sub
              for name, m in model.named_modules() if isinstance(m, CheapBlock)
              for sub, _ in m.named_modules() if sub}
    return [name for name, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and name not in inside]


def resolve_paths(model: nn.Module, patterns: Sequence[str]) -> list[str]:
    """Conv2d paths matching exact dotted paths or fnmatch globs, in model order, deduplicated.

    A pattern matching no Conv2d raises ``ReplacementError`` (a ``ValueError``) naming the
    pattern and the closest conv paths.
    """
    convs = _conv_paths(model)
    chosen: set[str] = set()
    for pattern in patterns:
        hits = [p for p in convs if fnmatch.fnmatchcase(p, pattern)]
        if not hits:
            close = difflib.get_close_matches(pattern, convs, n=5, cutoff=0.3) or convs[:5]
            raise ReplacementError(f"conv pattern '{pattern}' matches no nn.Conv2d of "
                                   f"{type(model).__name__}; closest conv paths: {', '.join(close)}")
        chosen.update(hits)
    return [p for p in convs if p in chosen]


# --------------------------------------------------------------------------- replacement

def _record(path: str, block: str, conv: nn.Conv2d, new: nn.Module, info: dict) -> dict:
    return {"path": path, "block": block, "params_before": count_params(conv),
            "params_after": count_params(new), "in": conv.in_channels, "out": conv.out_channels,
            "kernel": list(conv.kernel_size), "stride": list(conv.stride),
            "dilation": list(conv.dilation), "groups": conv.groups, "info": info}


def replace_convs(model: nn.Module, paths: Sequence[str], block: str = "dwsep",
                  **opts: Any) -> list[dict]:
    """Replace each conv at ``paths`` (exact paths or globs) in place by a new ``block``.

    Works for Sequential index names (``aspp.features.1.0``); the block goes to the conv's
    device / dtype. Returns one record per replacement: path, block, params_before/after,
    in, out, kernel, stride, dilation, groups (of the original) and the builder's info.
    """
    records = []
    for path in resolve_paths(model, paths):
        conv = model.get_submodule(path)
        new, info = build_block(conv, block, **opts)
        parent_path, _, name = path.rpartition(".")
        setattr(model.get_submodule(parent_path), name, new)
        records.append(_record(path, block, conv, new, info))
    return records


def make_cheap_student(teacher: nn.Module, paths: Sequence[str], block: str = "dwsep",
                       **opts: Any) -> tuple[nn.Module, list[dict]]:
    """Deep copy of ``teacher`` with ``paths`` replaced; the teacher is left unchanged."""
    student = copy.deepcopy(teacher)
    return student, replace_convs(student, paths, block, **opts)


# --------------------------------------------------------------------------- planning

def _meta_twin(conv: nn.Conv2d) -> nn.Conv2d:
    """A conv with the same hyper-parameters on the meta device (no memory, no init cost)."""
    return nn.Conv2d(conv.in_channels, conv.out_channels, groups=conv.groups,
                     bias=conv.bias is not None, device="meta", dtype=conv.weight.dtype,
                     **_same_geometry(conv))


def _savings(model: nn.Module, paths: list[str], input_size: tuple[int, int], in_chans: int,
             block: str, opts: dict) -> dict[str, tuple[int, int]]:
    """``{path: (params saved, FLOPs saved)}`` for replacing each conv, computed on meta copies."""
    shapes = module_input_shapes(model, paths, input_size, in_chans)
    out, errors = {}, []
    for path in paths:
        twin = _meta_twin(model.get_submodule(path))
        try:
            new, _ = build_block(twin, block, **opts)
        except ReplacementError as err:  # e.g. a 1x1 conv for dwsep: not a candidate
            errors.append(err)
            continue
        flops = sum(module_flops(twin, s) - module_flops(new, s) for s in shapes[path])
        out[path] = (count_params(twin) - count_params(new), flops)
    if errors and not out:
        raise errors[0]
    return out


def _default_candidates(model: nn.Module) -> list[str]:
    """Convs with a kernel of at least 3 and at least 16 input and output channels."""
    return [p for p in _conv_paths(model)
            if min(model.get_submodule(p).kernel_size) >= 3
            and min(model.get_submodule(p).in_channels, model.get_submodule(p).out_channels) >= 16]


def _pick(gains: dict[str, int], gap: float) -> str:
    """Best fit: the smallest saver that closes ``gap`` alone, else the biggest saver."""
    closing = [p for p, s in gains.items() if s >= gap]
    if closing:
        return min(closing, key=lambda p: gains[p])
    return max(gains, key=lambda p: gains[p])


def auto_plan(model: nn.Module, target_params: float | None = None,
              target_flops: float | None = None, input_size: tuple[int, int] = (512, 512),
              block: str = "dwsep", candidates: Sequence[str] | None = None,
              in_chans: int = 3, **opts: Any) -> dict:
    """Greedy choice of convs to replace until the kept fraction(s) of params / FLOPs are reached.

    ``target_params`` / ``target_flops`` are fractions of the model's totals to keep (e.g. 0.6).
    Each step takes, for the first unmet target, the smallest candidate that alone meets it, or
    else the biggest saver, so the result lands within one conv's saving of the target.
    Candidates the block refuses (a 1x1 conv for dwsep) or that would not save are skipped.
    Savings are computed on meta-device copies: ``model`` is not modified.
    Returns ``{"paths", "params_before", "params_after", "flops_before", "flops_after", "reached"}``.
    """
    if target_params is None and target_flops is None:
        raise ReplacementError("auto_plan needs target_params and/or target_flops (fractions to keep)")
    paths = resolve_paths(model, candidates) if candidates is not None else _default_candidates(model)
    saves = {p: s for p, s in _savings(model, paths, input_size, in_chans, block, opts).items() if s[0] > 0}
    params = float(count_params(model))
    flops = float(count_flops(model, input_size, in_chans))
    goals = [(0, target_params * params) if target_params is not None else None,
             (1, target_flops * flops) if target_flops is not None else None]
    now, chosen = [params, flops], []
    while saves:
        unmet = [(i, goal) for i, goal in filter(None, goals) if now[i] > goal]
        if not unmet:
            break
        i, goal = unmet[0]
        gains = {p: s[i] for p, s in saves.items() if s[i] > 0}
        if not gains:
            break
        path = _pick(gains, now[i] - goal)
        now = [now[0] - saves[path][0], now[1] - saves[path][1]]
        chosen.append(path)
        del saves[path]
    reached = all(now[i] <= goal for i, goal in filter(None, goals))
    order = {p: k for k, p in enumerate(_conv_paths(model))}
    return {"paths": sorted(chosen, key=order.__getitem__), "params_before": int(params),
            "params_after": int(now[0]), "flops_before": int(flops), "flops_after": int(now[1]),
            "reached": reached}


def replacement_table(records: Sequence[dict], model_before: nn.Module, model_after: nn.Module,
                      input_size: tuple[int, int] = (512, 512), in_chans: int = 3) -> list[dict]:
    """Rows ``{path, block, params_before, params_after, flops_before, flops_after}``: one per
    record, then ``"sum (replaced)"`` over the rows and ``"total (model)"`` for the whole models."""
    paths = [r["path"] for r in records]
    fb = per_module_flops(model_before, paths, input_size, in_chans)
    fa = per_module_flops(model_after, paths, input_size, in_chans)
    rows = [{"path": r["path"], "block": r["block"], "params_before": r["params_before"],
             "params_after": r["params_after"], "flops_before": fb[r["path"]],
             "flops_after": fa[r["path"]]} for r in records]
    keys = ["params_before", "params_after", "flops_before", "flops_after"]
    rows.append({"path": "sum (replaced)", "block": "", **{k: sum(r[k] for r in rows) for k in keys}})
    rows.append({"path": "total (model)", "block": "",
                 "params_before": count_params(model_before), "params_after": count_params(model_after),
                 "flops_before": count_flops(model_before, input_size, in_chans),
                 "flops_after": count_flops(model_after, input_size, in_chans)})
    return rows
