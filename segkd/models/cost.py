"""Model measurement: parameters, FLOPs, latency, per-module input shapes.

FLOP convention: **FLOPs = 2 x multiply-accumulates** (MACs), as counted by PyTorch's
``torch.utils.flop_counter.FlopCounterMode``: a convolution producing ``N*C_out*H_o*W_o`` outputs
from ``C_in/groups * k_h * k_w`` inputs each costs ``2 * N*C_out*H_o*W_o * C_in/groups * k_h*k_w``.
Biases, normalisation, activations and interpolation count 0, matmul / attention count as usual.
Tables therefore say **GFLOPs** (divide by 2 for the "GMACs" that fvcore / ptflops / many papers
report under the name FLOPs).

All measurements run one forward in eval mode without gradients and restore each module's
``training`` flag afterwards; the model is never modified.
"""
from __future__ import annotations

import contextlib
import copy
import statistics
import time
from typing import Iterator, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

Shape = tuple[int, ...]


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def per_module_params(model: nn.Module, paths: Sequence[str]) -> dict[str, int]:
    """``{path: parameter count}`` for each dotted module path (``""`` = whole model)."""
    return {path: count_params(model.get_submodule(path)) for path in paths}


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode, restoring every submodule's ``training`` flag on exit."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


def _param_like(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the model's first parameter (cpu / float32 if none)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.device, p.dtype
    return torch.device("cpu"), torch.float32


def _dummy_input(model: nn.Module, shape: Shape) -> torch.Tensor:
    """Zeros of ``shape`` on the model's device and dtype (works for meta models too)."""
    device, dtype = _param_like(model)
    return torch.zeros(shape, device=device, dtype=dtype)


def count_flops(model: nn.Module, input_size: tuple[int, int] = (512, 512), in_chans: int = 3,
                batch: int = 1) -> int:
    """FLOPs (= 2 x MACs, see module docstring) of one forward of a ``[batch, in_chans, H, W]`` input."""
    x = _dummy_input(model, (batch, in_chans, *input_size))
    with eval_mode(model), torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def module_flops(module: nn.Module, in_shape: Shape) -> int:
    """FLOPs of ``module`` applied to one tensor of ``in_shape`` (module may live on meta)."""
    x = _dummy_input(module, in_shape)
    with eval_mode(module), torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(x)
    return int(counter.get_total_flops())


def module_input_shapes(model: nn.Module, paths: Sequence[str], input_size: tuple[int, int],
                        in_chans: int = 3) -> dict[str, list[Shape]]:
    """Shapes of the first positional input of each module at ``paths``, one per call.

    One batch-1 forward with pre-hooks (removed afterwards). A module never called gets ``[]``;
    a module called several times (weight sharing) gets one shape per call.
    """
    shapes: dict[str, list[Shape]] = {path: [] for path in paths}
    handles = []
    for path in paths:
        def hook(_mod: nn.Module, args: tuple, _path: str = path) -> None:
            shapes[_path].append(tuple(args[0].shape))
        handles.append(model.get_submodule(path).register_forward_pre_hook(hook))
    try:
        x = _dummy_input(model, (1, in_chans, *input_size))
        with eval_mode(model), torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def per_module_flops(model: nn.Module, paths: Sequence[str], input_size: tuple[int, int],
                     in_chans: int = 3) -> dict[str, int]:
    """``{path: FLOPs}`` of each module for one batch-1 forward of the whole model (summed over calls)."""
    shapes = module_input_shapes(model, paths, input_size, in_chans)
    return {path: sum(module_flops(model.get_submodule(path), s) for s in shapes[path])
            for path in paths}


def _prepare(model: nn.Module, device: torch.device, dtype: torch.dtype | None,
             channels_last: bool) -> nn.Module:
    """The model itself if it already matches device / dtype / layout, else a converted deep copy."""
    p_device, p_dtype = _param_like(model)
    same_device = p_device.type == device.type and (device.index is None or p_device == device)
    if same_device and (dtype is None or dtype == p_dtype) and not channels_last:
        return model
    clone = copy.deepcopy(model).to(device=device, dtype=dtype)
    return clone.to(memory_format=torch.channels_last) if channels_last else clone


def measure_latency(model: nn.Module, input_size: tuple[int, int], batch: int = 1,
                    device: str | torch.device = "cpu", warmup: int = 3, iters: int = 10,
                    channels_last: bool = False, dtype: torch.dtype | None = None,
                    in_chans: int = 3) -> dict[str, float]:
    """Wall-clock latency of one forward of a ``[batch, in_chans, H, W]`` input.

    Runs under ``torch.inference_mode`` in eval mode; on CUDA each iteration is synchronised.
    The model is measured on ``device`` / ``dtype`` (a converted copy when it lives elsewhere,
    so the caller's model is untouched). Returns ``{"mean_ms", "std_ms", "p50_ms"}``.
    """
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    device = torch.device(device)
    net = _prepare(model, device, dtype, channels_last)
    x = torch.randn(batch, in_chans, *input_size, device=device, dtype=dtype or _param_like(net)[1])
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times: list[float] = []
    with eval_mode(net), torch.inference_mode():
        for i in range(warmup + iters):
            sync()
            start = time.perf_counter()
            net(x)
            sync()
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
    return {"mean_ms": statistics.fmean(times),
            "std_ms": statistics.stdev(times) if len(times) > 1 else 0.0,
            "p50_ms": statistics.median(times)}
