"""The loop's typed state: ``Progress`` keeps the checkpoint's ``progress`` keys, a resume reads
a checkpoint's plain dict, and the epoch functions take a few typed objects, not long lists."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import interrupt_at_epoch

from segkd.config.schema import config_from_dict
from segkd.core.checkpoint import load_checkpoint, save_checkpoint
from segkd.engine import Engine
from segkd.engine.state import Progress

# ckpt["progress"] as every checkpoint so far has written it (the on-disk format)
OLD_PROGRESS = {"stage": 0, "epoch": 0, "step": 0, "best": None, "best_epoch": None,
                "replaced_upto": 0, "images": 0, "train_time": 0.0}
ENGINE = Path(__file__).resolve().parents[1] / "segkd" / "engine"
MAX_PARAMS = 5  # self included


def test_progress_round_trips_through_the_checkpoint_keys():
    assert Progress().to_dict() == OLD_PROGRESS
    assert list(Progress().to_dict()) == list(OLD_PROGRESS)
    p = Progress(stage=1, epoch=2, step=7, best=0.5, best_epoch=2, replaced_upto=1, images=56,
                 train_time=3.25)
    assert Progress.from_dict(p.to_dict()) == p
    # a key an older checkpoint lacks keeps its default
    short = {k: v for k, v in p.to_dict().items() if k not in ("images", "train_time")}
    assert Progress.from_dict(short) == Progress(stage=1, epoch=2, step=7, best=0.5, best_epoch=2,
                                                 replaced_upto=1)


def test_resume_reads_the_plain_progress_dict_and_counts_on(tmp_path, tiny, monkeypatch):
    raw = tiny(stages=[{"name": "train", "epochs": 2, "terms": [{"loss": "ce"}],
                        "optimizer": {"name": "adam", "lr": 1e-3}}])
    full = Engine(config_from_dict(raw), tmp_path / "a")
    full.run()
    interrupt_at_epoch(monkeypatch, raw, tmp_path / "b", 2)
    last = tmp_path / "b" / "last.pt"
    ck = load_checkpoint(last)
    assert type(ck["progress"]) is dict and list(ck["progress"]) == list(OLD_PROGRESS)
    assert ck["progress"]["epoch"] == 1 and ck["progress"]["step"] == 2  # 8 images, batch 4
    ck["progress"] = {k: ck["progress"][k] for k in OLD_PROGRESS}  # exactly the old literal's keys
    save_checkpoint(ck, last)
    resumed = Engine(config_from_dict(raw), tmp_path / "b", resume=True)
    resumed.run()
    want, got = full.progress, resumed.progress
    assert got.pop("train_time") > 0 and want.pop("train_time") > 0
    assert got == want and got["step"] == 4 and got["images"] == 16 and got["stage"] == 1
    assert load_checkpoint(last)["progress"]["step"] == 4


def _wide_functions(tree: ast.AST) -> list[str]:
    """Functions taking more than MAX_PARAMS parameters (positional, keyword-only, *args)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            n = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + bool(a.vararg)
            if n > MAX_PARAMS:
                out.append(f"{node.name} ({n})")
    return out


@pytest.mark.parametrize("module", ["loop.py", "train.py"])
def test_the_loop_passes_typed_state_not_long_argument_lists(module):
    assert _wide_functions(ast.parse((ENGINE / module).read_text())) == []


def test_wide_function_check_sees_planted_code():
    planted = ("class E:\n    def _epoch(self, si, stage, epoch, module, opt, sched, when, loader, iters, "
               "val_loader):\n        pass\n"
               "def train_epoch(fabric, module, opt, *, labeled, accum, title):\n    pass\n"
               "def ok(fabric, run, spec, logger):\n    pass\n")
    assert sorted(_wide_functions(ast.parse(planted))) == ["_epoch (11)", "train_epoch (6)"]
