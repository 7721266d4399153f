"""Lightning Fabric setup: precision, devices and DDP (torchrun / SLURM / local processes)."""
from __future__ import annotations

import os

from ..config import TrainerCfg


def run_precision(precision: str, accelerator: str) -> str:
    """The Fabric precision a run uses: ``16-mixed`` becomes ``bf16-mixed`` on the CPU (fp16
    autocast is a GPU feature; CPUs have bf16)."""
    return "bf16-mixed" if accelerator == "cpu" and precision == "16-mixed" else precision


def make_fabric(cfg: TrainerCfg):
    """A Fabric for ``cfg``. ``devices > 1`` on CPU uses DDP over gloo processes."""
    from lightning.fabric import Fabric

    accelerator = cfg.accelerator
    if accelerator == "auto":
        import torch

        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    strategy = cfg.strategy
    multi = (isinstance(cfg.devices, int) and cfg.devices > 1) or cfg.num_nodes > 1 \
        or "WORLD_SIZE" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
    if strategy == "auto" and multi:
        strategy = "ddp"
    precision = run_precision(cfg.precision, accelerator)
    return Fabric(accelerator=accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
                  strategy=strategy, precision=precision)
