"""``segkd compress``: from a teacher and a dataset to a small, exported, measured student.

teacher.py   the teacher from a segkd checkpoint, an smp or torchvision state dict
candidates.py the students worth trying (the teacher cut / narrowed / with cheap convolutions,
              smaller encoders), each with its spec and initialisation
plan.py      the target, the measured table (params, FLOPs, latency), the choice
recipe.py    the distillation config written for the chosen student, and why
run.py       training (resumable), export with the parity check, the report
"""
from segkd.apps.compress.plan import Target, parse_budget, parse_params

__all__ = ["Target", "parse_budget", "parse_params"]
