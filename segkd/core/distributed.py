"""Which process of a multi-process run this is, from the environment alone (before Fabric)."""
from __future__ import annotations

import os

# set by Fabric's launcher, torchrun and SLURM: any of them non-zero means another process
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")


def is_rank_zero() -> bool:
    """True in the first process of a run (and in a single-process run); False in the others,
    which leave the run lock, the pre-flight warnings and similar once-per-run work to it."""
    return all(os.environ.get(k, "0") == "0" for k in RANK_VARIABLES)
