"""Where and in what precision a run computes, resolved once: a :class:`Runtime`.

``resolve_runtime(trainer)`` turns ``trainer.accelerator`` and ``trainer.precision`` into the
device type, the accelerator Fabric is given, the Fabric precision, the type autocast computes
in and why. Fabric (``make_fabric``), the Distiller (teacher weights stored in the compute type),
the teacher cache key and summary.json all read this one object, so they cannot disagree.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from segkd.config.schema import TrainerCfg
from segkd.core.errors import ConfigError

# Lightning's accelerator names -> the device type segkd runs on ("gpu" means CUDA here;
# "auto": CUDA where available, else the CPU)
ACCELERATORS = {"cpu": "cpu", "gpu": "cuda", "cuda": "cuda", "mps": "mps", "auto": None}

# CPU flags (/proc/cpuinfo) of native bf16 arithmetic; without them bf16 is emulated and was
# measured 1.46x slower than fp32 (Intel Xeon without AVX512-BF16; docs/benchmarks.md).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")

# the type autocast computes convolutions in under a Fabric precision (absent: no autocast)
AUTOCAST_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
# ``teacher.precision``: the type the frozen teacher runs in, whatever the run's precision
TEACHER_DTYPES = {"bf16": torch.bfloat16, "16": torch.float16, "32": torch.float32}


@dataclass(frozen=True)
class Runtime:
    """A run's device and precision, resolved once from the trainer config."""

    device_type: str  # "cpu" | "cuda" | "mps"
    accelerator: str  # what Fabric is given (the device type)
    precision: str  # the Fabric precision ("32", "bf16-mixed", "16-mixed", ...)
    compute_dtype: Optional[torch.dtype]  # the autocast type (None: no autocast)
    requested: str  # trainer.precision as configured ("auto", ...)
    reason: str  # why ``precision`` (log line, summary.json)
    tf32: bool = False  # TensorFloat-32 allowed for fp32 convolutions and matmuls (CUDA only)

    def summary(self) -> dict:
        """The precision as the log and summary.json record it (on CUDA, with ``tf32``)."""
        out: dict = {"requested": self.requested, "value": self.precision, "reason": self.reason}
        if self.device_type == "cuda":
            out["tf32"] = self.tf32
        return out


def apply_tf32(runtime: Runtime) -> None:
    """Allow or forbid TensorFloat-32 (a 10-bit mantissa) for fp32 convolutions and matmuls on
    CUDA, as ``runtime.tf32`` says. PyTorch's own default runs cuDNN convolutions in TF32 while
    calling them float32; segkd forbids it unless ``trainer.tf32: true``, so that precision 32
    means fp32 arithmetic on every device (a CPU has no TF32)."""
    if runtime.device_type != "cuda":
        return
    torch.backends.cudnn.allow_tf32 = runtime.tf32
    torch.backends.cuda.matmul.allow_tf32 = runtime.tf32


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The first ``flags`` line of ``cpuinfo`` as a set (empty where it is unreadable: not Linux)."""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The type autocast computes convolutions in under a Fabric precision (None: no autocast)."""
    return AUTOCAST_DTYPES.get(precision)


def cuda_available() -> bool:
    """Whether torch sees a CUDA GPU (the probe ``auto``, ``gpu`` and ``cuda`` ask)."""
    return torch.cuda.is_available()


def resolve_device(accelerator: str) -> str:
    """The device type of ``trainer.accelerator`` (a Lightning name: cpu, gpu, cuda, mps, auto)."""
    name = accelerator.lower()
    if name not in ACCELERATORS:
        raise ConfigError(f"trainer.accelerator '{accelerator}' is not known; use one of "
                          f"{', '.join(ACCELERATORS)} (gpu means cuda)")
    if name == "auto":
        return "cuda" if cuda_available() else "cpu"
    if ACCELERATORS[name] == "cuda" and not cuda_available():
        raise ConfigError(f"trainer.accelerator '{accelerator}' needs a CUDA GPU and torch sees "
                          "none; use trainer.accelerator=cpu (or auto)")
    return ACCELERATORS[name]


def resolve_precision(precision: str, accelerator: str,
                      cpuinfo: str | Path = "/proc/cpuinfo") -> tuple[str, str]:
    """The Fabric precision a run uses on ``accelerator`` (a device type: "cpu", "cuda", ...),
    and why.

    ``auto``: bf16-mixed where the device computes bf16 natively (a CUDA GPU with bf16, a CPU
    with AVX512-BF16 or AMX-BF16), fp16-mixed on a CUDA GPU without bf16, fp32 otherwise.
    ``16-mixed`` becomes ``bf16-mixed`` on the CPU (fp16 autocast is a GPU feature)."""
    if precision == "auto":
        if accelerator == "cuda":
            name = torch.cuda.get_device_name()
            try:  # torch < 2.4 has no including_emulation (and does not count emulation)
                native = torch.cuda.is_bf16_supported(including_emulation=False)
            except TypeError:
                native = torch.cuda.is_bf16_supported()
            if native:
                return "bf16-mixed", f"auto: {name} computes bf16 natively"
            return "16-mixed", f"auto: {name} has no native bf16; fp16 autocast instead"
        if accelerator == "cpu":
            native = sorted(set(BF16_CPU_FLAGS) & cpu_flags(cpuinfo))
            if native:
                return "bf16-mixed", f"auto: the CPU computes bf16 natively ({', '.join(native)})"
            return "32", ("auto: the CPU lacks AVX512-BF16/AMX-BF16, where bf16 is emulated and "
                          "slower than fp32")
        return "32", f"auto: no native bf16 known for accelerator '{accelerator}'"
    if accelerator == "cpu" and precision == "16-mixed":
        return "bf16-mixed", "16-mixed set; fp16 autocast is a GPU feature, bf16 on the CPU"
    return precision, "set in the config"


def resolve_runtime(trainer: TrainerCfg, cpuinfo: str | Path = "/proc/cpuinfo") -> Runtime:
    """The run's :class:`Runtime`: ``trainer.accelerator`` to a device type, then
    ``trainer.precision`` on that device."""
    device = resolve_device(trainer.accelerator)
    precision, reason = resolve_precision(trainer.precision, device, cpuinfo)
    return Runtime(device_type=device, accelerator=device, precision=precision,
                   compute_dtype=autocast_dtype(precision), requested=trainer.precision,
                   reason=reason, tf32=bool(trainer.tf32) and device == "cuda")
