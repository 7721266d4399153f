"""Your own dataset in five minutes (issue 18): folder dataset options, `segkd prepare folder`
config, dataset docs, `trainer.precision: 32`, CamVid's test split when present, overlay colours,
export file modes. Tiny data written by each test; CLI cases through the ``segkd`` fixture."""
from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from test_errors import SIZE, png, write_config  # noqa: E402


# ----------------------------------------------------------------------------- config
def test_precision_as_a_yaml_number(segkd, tmp_path):
    from segkd.config import config_from_dict, load_config

    assert config_from_dict({"trainer": {"precision": 32}}).trainer.precision == "32"
    cfg = write_config(tmp_path / "c.yaml")
    assert load_config(cfg, ["trainer.precision=32"]).trainer.precision == "32"
    text = cfg.read_text().replace("trainer:\n", "trainer:\n  precision: 32\n")
    cfg.write_text(text)
    assert load_config(cfg).trainer.precision == "32"


def camvid_tree(root: Path, splits: tuple[str, ...]) -> Path:
    rng = np.random.default_rng(0)
    for split in splits:
        for i in range(2):
            png(root / split / f"f{i}.png", rng.integers(0, 255, (SIZE, SIZE, 3), np.uint8))
            png(root / f"{split}annot" / f"f{i}.png", rng.integers(0, 12, (SIZE, SIZE), np.uint8))
    return root


@pytest.mark.parametrize("with_test", [False, True], ids=["train+val", "train+val+test"])
def test_camvid_test_split_evaluated_when_present(segkd, tmp_path, with_test):
    root = camvid_tree(tmp_path / "camvid", ("train", "val") + (("test",) if with_test else ()))
    cfg = write_config(tmp_path / "c.yaml", options={},
                       data={"name": "camvid", "root": str(root), "test_split": "auto",
                             "batch_size": 2},
                       eval={"splits": ["val", "test"]})
    run = tmp_path / "run"
    proc = segkd("train", str(cfg), "--run-dir", str(run))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert sorted(summary["splits"]) == (["test", "val"] if with_test else ["val"])
    if with_test:
        assert summary["splits"]["test"]["mIoU"] >= 0


def test_camvid_recipes_ask_for_the_test_split():
    from segkd.config import load_config

    base = Path(__file__).resolve().parents[1] / "configs" / "camvid" / "_base.yaml"
    cfg = load_config(base)
    assert cfg.data.test_split == "auto" and "test" in cfg.eval.splits
