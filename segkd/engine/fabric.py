"""Lightning Fabric setup: the run's device and precision (a :class:`Runtime`, resolved once in
``engine/runtime.py``), determinism and DDP (torchrun / SLURM / local processes)."""
from __future__ import annotations

import os

from segkd.config.schema import TrainerCfg
from segkd.engine.runtime import Runtime, apply_tf32, resolve_runtime


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


def quiet_lightning() -> None:
    """Lightning's own info lines ("Using bfloat16 Automatic Mixed Precision (AMP)", ...) only
    repeat what segkd prints itself (precision and its reason, devices): keep its warnings,
    drop its info."""
    import logging

    for name in ("lightning.fabric", "lightning.pytorch", "lightning_fabric", "pytorch_lightning"):
        logger = logging.getLogger(name)
        if logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)


def make_fabric(cfg: TrainerCfg, runtime: Runtime | None = None):
    """A Fabric for ``cfg`` on ``runtime``'s accelerator and precision (resolved from ``cfg``
    when not given). ``devices > 1`` on CPU uses DDP over gloo processes."""
    from lightning.fabric import Fabric

    apply_determinism(cfg.deterministic)
    runtime = runtime or resolve_runtime(cfg)
    apply_tf32(runtime)
    quiet_lightning()
    strategy = cfg.strategy
    multi = (isinstance(cfg.devices, int) and cfg.devices > 1) or cfg.num_nodes > 1 \
        or "WORLD_SIZE" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
    if strategy == "auto" and multi:
        strategy = "ddp"
    if strategy == "ddp":
        strategy = _ddp()
    return Fabric(accelerator=runtime.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
                  strategy=strategy, precision=runtime.precision)


def _ddp():
    """DDP that tolerates trainable parameters outside a stage's loss: a stage may train a part
    its terms do not reach (layer4 trainable, hint at layer3; connectors of other stages), which
    plain DDP refuses at the next step ("Expected to have finished reduction"). DDP then walks
    the autograd graph once per step to find them: a small cost, paid only on several processes."""
    from lightning.fabric.strategies import DDPStrategy

    return DDPStrategy(find_unused_parameters=True)


def quiet_malloc() -> None:
    """CPU training: keep freed activation memory in the process instead of returning it to the
    OS after every step (glibc's defaults cause tens of thousands of page faults per step;
    measured 11-15% faster steps on the 2-core benchmark machine, see docs/benchmarks.md)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: big buffers from the heap, not mmap
        libc.mallopt(-1, 2 ** 31 - 1)  # M_TRIM_THRESHOLD: do not give the heap back each step
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to tune
        pass


def allow_recompiles(graphs: int) -> None:
    """Let a compiled student keep ``graphs`` graphs (training and evaluation per stage: each
    stage's hooks and frozen parts are new guards) before torch.compile falls back to eager."""
    import torch._dynamo.config as dynamo

    name = "recompile_limit" if hasattr(dynamo, "recompile_limit") else "cache_size_limit"
    setattr(dynamo, name, max(getattr(dynamo, name), graphs))
