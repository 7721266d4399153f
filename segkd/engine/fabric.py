"""Lightning Fabric setup: precision, devices and DDP (torchrun / SLURM / local processes)."""
from __future__ import annotations

import os
from pathlib import Path

from ..config import TrainerCfg

# CPU flags (/proc/cpuinfo) of native bf16 arithmetic; without them bf16 is emulated and was
# measured 1.46x slower than fp32 (Intel Xeon without AVX512-BF16; docs/benchmarks.md).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The first ``flags`` line of ``cpuinfo`` as a set (empty where it is unreadable: not Linux)."""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def resolve_precision(precision: str, accelerator: str,
                      cpuinfo: str | Path = "/proc/cpuinfo") -> tuple[str, str]:
    """The Fabric precision a run uses on ``accelerator`` ("cpu", "cuda", ...), and why.

    ``auto``: bf16-mixed where the device computes bf16 natively (a CUDA GPU with bf16, a CPU
    with AVX512-BF16 or AMX-BF16), fp16-mixed on a CUDA GPU without bf16, fp32 otherwise.
    ``16-mixed`` becomes ``bf16-mixed`` on the CPU (fp16 autocast is a GPU feature)."""
    if precision == "auto":
        if accelerator == "cuda":
            import torch

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


def run_precision(precision: str, accelerator: str) -> str:
    """The Fabric precision a run uses (``resolve_precision`` without the reason)."""
    return resolve_precision(precision, accelerator)[0]


def apply_determinism(deterministic: bool) -> None:
    """``trainer.deterministic``: True makes torch pick deterministic kernels
    (``torch.use_deterministic_algorithms``, cuDNN deterministic, no cuDNN autotuning, the
    cuBLAS workspace setting CUDA needs for deterministic matmuls). ``warn_only``: an op with no
    deterministic kernel (e.g. the CUDA backward of bilinear upsampling, in every segmentation
    decoder here) warns instead of stopping the run. False restores torch's defaults, so one run
    does not leak the setting into the next in the same process.

    Loader workers need nothing more: every sample's augmentation is seeded from (run seed,
    epoch, index) (``engine.data.SeededDataset``), and torch seeds each worker's ``random`` and
    NumPy from the run's RNG."""
    import torch

    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = False


def make_fabric(cfg: TrainerCfg):
    """A Fabric for ``cfg``. ``devices > 1`` on CPU uses DDP over gloo processes."""
    from lightning.fabric import Fabric

    apply_determinism(cfg.deterministic)

    accelerator = cfg.accelerator
    if accelerator == "auto":
        import torch

        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    strategy = cfg.strategy
    multi = (isinstance(cfg.devices, int) and cfg.devices > 1) or cfg.num_nodes > 1 \
        or "WORLD_SIZE" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
    if strategy == "auto" and multi:
        strategy = "ddp"
    if strategy == "ddp":
        strategy = _ddp()
    precision = run_precision(cfg.precision, accelerator)
    return Fabric(accelerator=accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
                  strategy=strategy, precision=precision)


def _ddp():
    """DDP that tolerates trainable parameters outside a stage's loss: a stage may train a part
    its terms do not reach (layer4 trainable, hint at layer3; connectors of other stages), which
    plain DDP refuses at the next step ("Expected to have finished reduction"). DDP then walks
    the autograd graph once per step to find them: a small cost, paid only on several processes."""
    from lightning.fabric.strategies import DDPStrategy

    return DDPStrategy(find_unused_parameters=True)
