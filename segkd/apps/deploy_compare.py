"""Teacher vs student where it will be deployed: parameters, GFLOPs, PyTorch and onnxruntime
latency on a chosen device, precision, batch and layout, and (optionally) mIoU.

``segkd info --compare T --compare S [--device cuda --dtype bf16 --batch 8 --channels-last --onnx]``.
"""
from __future__ import annotations

import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from segkd.apps.export import ExportError, OnnxPredictor, Size, export_onnx
from segkd.models.spec import build_from_spec, model_from_checkpoint


def onnx_providers(device: str) -> list[str]:
    """onnxruntime execution providers for ``device`` ("cpu" or "cuda"), or a clear error when
    this onnxruntime cannot run there (the CPU-only wheel has no CUDA provider)."""
    if torch.device(device).type == "cpu":
        return ["CPUExecutionProvider"]
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise ExportError(f"this onnxruntime has no CUDA provider (has: "
                          f"{', '.join(ort.get_available_providers())}); install onnxruntime-gpu "
                          "for GPU latency, or measure ONNX on the CPU")
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


# Latency repeats whose standard deviation exceeds this share of their mean are not a measurement
# to compare models by (a busy machine: 936 ms vs 71 ms one day, the reverse the next)
SPREAD_WARN = 0.25


def onnx_latency(onnx_path: str | Path, size: Size, batch: int = 1, warmup: int = 3,
                 iters: int = 10, device: str = "cpu", threads: Optional[int] = None) -> dict[str, float]:
    """onnxruntime latency of one ``[batch,3,H,W]`` forward on ``device`` (CPU: ``threads``,
    default as many as torch uses; CUDA: the CUDA provider, inputs copied from the host each run)."""
    import statistics
    import timeit

    pred = OnnxPredictor(onnx_path, providers=onnx_providers(device),
                         threads=threads or torch.get_num_threads())
    x = np.random.default_rng(0).standard_normal((batch, 3, *size)).astype(np.float32)
    times = [t * 1e3 for t in timeit.repeat(lambda: pred(x), number=1, repeat=warmup + iters)[warmup:]]
    return {"mean_ms": statistics.fmean(times), "std_ms": statistics.pstdev(times)}


def _miou(path: str, data_root: str, dataset: str | None, split: str, size: Size) -> float:
    from segkd.apps.eval_checkpoint import evaluate_checkpoint

    m = evaluate_checkpoint(path, data_root, dataset, split, size, None, 1 / 3, False, [1.0], 4)
    return float(next(m[k] for k in ("mIoU", "miou", "mean_iou") if k in m))


def _compare_row(name: str, path: str, size: Size, setup: LatencySetup, onnx: bool,
                 data_root: str | None, dataset: str | None, split: str) -> dict:
    """One row of ``compare_models`` (an .onnx file is profiled through its sidecar's architecture)."""
    from segkd.models.cost import count_flops, count_params

    if path.endswith(".onnx"):
        doc = OnnxPredictor(path).doc
        model, onnx_file = build_from_spec(doc["model"], doc.get("replacements")), path
    else:
        model, onnx_file = model_from_checkpoint(path)[0], None
    net = model.eval()
    lat = setup.measure(net, size)
    row = {"name": name, "path": path, "params": count_params(model),
           "gflops": count_flops(net, size) / 1e9, "latency_ms": lat["mean_ms"], "warnings": []}
    row["warnings"] += spread_warning(name, "PyTorch", lat, setup.iters)
    if onnx or onnx_file:
        with tempfile.TemporaryDirectory() as tmp:
            if onnx_file is None:
                onnx_file = str(Path(tmp) / "model.onnx")
                export_onnx(path, onnx_file, size=size, dynamic_shape=setup.batch > 1)
            ort = onnx_latency(onnx_file, size, setup.batch, setup.warmup, setup.iters,
                               setup.device, setup.threads)
            row["onnx_latency_ms"] = ort["mean_ms"]
            row["warnings"] += spread_warning(name, "onnxruntime", ort, setup.iters)
    if data_root:
        if path.endswith(".onnx"):
            raise ExportError(f"mIoU of {path}: give the segkd checkpoint, not the .onnx")
        row["miou"] = _miou(path, data_root, dataset, split, size)
    return row


@dataclass(frozen=True)
class LatencySetup:
    """Where and how latency is measured: device, weight/activation dtype, batch, layout."""

    device: str = "cpu"
    dtype: str = "fp32"  # fp32 | bf16 | fp16 (the PyTorch model is converted; ONNX stays fp32)
    batch: int = 1
    channels_last: bool = False
    warmup: int = 10
    iters: int = 20
    threads: Optional[int] = None  # CPU threads while measuring (None: torch's current setting)

    def torch_dtype(self) -> torch.dtype | None:
        return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.dtype]

    def check(self) -> None:
        if self.dtype not in ("fp32", "bf16", "fp16"):
            raise ExportError(f"latency dtype must be fp32, bf16 or fp16, got '{self.dtype}'")
        if torch.device(self.device).type == "cuda" and not torch.cuda.is_available():
            raise ExportError("--device cuda: no CUDA device is available to this process")
        if self.dtype == "fp16" and torch.device(self.device).type == "cpu":
            raise ExportError("fp16 latency is a GPU measurement; on the CPU use bf16 or fp32")
        if self.batch < 1:
            raise ExportError(f"latency batch must be >= 1, got {self.batch}")
        if self.threads is not None and self.threads < 1:
            raise ExportError(f"--threads must be >= 1, got {self.threads}")

    def measure(self, model: torch.nn.Module, size: Size) -> dict[str, float]:
        """PyTorch latency of ``model`` at ``size`` in this setting (after :meth:`check`)."""
        from segkd.models.cost import measure_latency

        self.check()
        with torch_threads(self.threads):
            return measure_latency(model, size, batch=self.batch, device=self.device,
                                   warmup=self.warmup, iters=self.iters,
                                   channels_last=self.channels_last, dtype=self.torch_dtype())

    def describe(self) -> str:
        """'cpu, fp32, batch 1[, channels_last][, N threads]' (for table titles)."""
        return (f"{self.device}, {self.dtype}, batch {self.batch}"
                f"{', channels_last' if self.channels_last else ''}"
                f"{f', {self.threads} thread(s)' if self.threads else ''}")


@contextmanager
def torch_threads(threads: Optional[int]) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` inside the block, the previous count restored after."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def spread_warning(name: str, runtime: str, lat: dict[str, float], iters: int) -> list[str]:
    """A warning when the timed repeats of one latency spread too much to compare models by."""
    mean, std = lat["mean_ms"], lat.get("std_ms", 0.0)
    if mean <= 0 or std / mean <= SPREAD_WARN:
        return []
    return [f"{name}: {runtime} latency varies a lot between its {iters} timed runs (std "
            f"{std:.1f} ms = {std / mean:.0%} of the mean {mean:.1f} ms): the machine is busy or "
            "short of cores; measure on an idle machine, with --threads below the free cores, "
            "before comparing models by it"]


def compare_models(teacher_path: str, student_path: str, size: Size | None = None,
                   data_root: str | None = None, dataset: str | None = None, split: str = "val",
                   onnx: bool = False, setup: LatencySetup | None = None) -> list[dict]:
    """Teacher vs student: params, GFLOPs (2 x MACs) at ``size``, PyTorch latency (ms per
    forward of ``setup.batch`` images on ``setup.device`` in ``setup.dtype``), onnxruntime
    latency on the same device (``onnx=True`` or an .onnx path: a checkpoint is then exported to
    a temporary .onnx) and mIoU (when ``data_root`` is given). Returns one dict per model, both
    with the same keys: name, path, params, gflops, latency_ms, warnings (a list: latencies whose
    repeats spread more than SPREAD_WARN of their mean)[, onnx_latency_ms][, miou].
    Latencies: mean of ``setup.iters`` timed runs after ``setup.warmup`` untimed ones (first
    runs are slow); the default setup is the CPU, fp32, batch 1."""
    size = tuple(size) if size else (512, 512)
    setup = setup or LatencySetup()
    setup.check()
    onnx = onnx or any(str(p).endswith(".onnx") for p in (teacher_path, student_path))
    return [_compare_row(name, str(p), size, setup, onnx, data_root, dataset, split)
            for name, p in (("teacher", teacher_path), ("student", student_path))]

