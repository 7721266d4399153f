"""Honest selection: a seeded share of the training split held out to choose the best epoch
(``data.select_fraction``, ``select.metric: select/mIoU``), or the last epoch (``last``)."""
from __future__ import annotations

import json

import pytest

from segkd.config.schema import config_from_dict
from segkd.core.errors import ConfigError
from segkd.engine import Engine


def _three_epochs(tiny, metric: str, **data):
    return tiny(data={"options": {"num_images": 20}, **data},
                stages=[{"name": "train", "epochs": 3, "terms": [{"loss": "ce"}],
                         "optimizer": {"name": "adam", "lr": 1e-3},
                         "select": {"metric": metric}}])


def test_select_split_is_held_out_of_training_and_chooses_the_epoch(tmp_path, tiny):
    raw = _three_epochs(tiny, "select/mIoU", select_fraction=0.25, select_seed=3)
    summary = Engine(config_from_dict(raw), tmp_path / "r").run()
    r = tmp_path / "r"
    train = set((r / "train_files.txt").read_text().split())
    held = set((r / "select_files.txt").read_text().split())
    assert len(held) == 5 and len(train) == 15 and not train & held  # 25% of 20, disjoint
    rows = [json.loads(x) for x in (r / "metrics.jsonl").read_text().splitlines()]
    epochs = [x for x in rows if "select/mIoU" in x]
    assert len(epochs) == 3 and all("val/mIoU" in x for x in epochs)  # val still logged
    best = max(range(3), key=lambda i: (epochs[i]["select/mIoU"], -i))
    assert summary["selected"]["metric"] == "select/mIoU"
    assert summary["selected"]["epoch"] == best + 1
    assert summary["selected"]["select_fraction"] == 0.25
    assert summary["selected"]["value"] == pytest.approx(epochs[best]["select/mIoU"])
    # the final evaluation reports the held-out split beside val, at the chosen epoch
    assert summary["splits"]["select"]["mIoU"] == pytest.approx(epochs[best]["select/mIoU"], abs=1e-6)
    assert {"val", "select"} <= set(summary["splits"])


def test_same_seed_same_held_out_images_and_fraction_comes_from_the_rest(tmp_path, tiny):
    a = _three_epochs(tiny, "select/mIoU", select_fraction=0.25, select_seed=3)
    b = _three_epochs(tiny, "select/mIoU", select_fraction=0.25, select_seed=3, fraction=0.5)
    a["stages"][0]["epochs"] = b["stages"][0]["epochs"] = 1
    Engine(config_from_dict(a), tmp_path / "a").run()
    Engine(config_from_dict(b), tmp_path / "b").run()
    held_a = (tmp_path / "a" / "select_files.txt").read_text()
    assert held_a == (tmp_path / "b" / "select_files.txt").read_text()
    train_b = set((tmp_path / "b" / "train_files.txt").read_text().split())
    assert len(train_b) == 7 and not train_b & set(held_a.split())  # half of the 15 left


def test_last_epoch_selection(tmp_path, tiny):
    summary = Engine(config_from_dict(_three_epochs(tiny, "last")), tmp_path / "r").run()
    assert summary["selected"]["metric"] == "last" and summary["selected"]["epoch"] == 3


def test_select_metric_without_select_split_names_the_fix(tmp_path, tiny):
    with pytest.raises(ConfigError, match="data.select_fraction"):
        Engine(config_from_dict(_three_epochs(tiny, "select/mIoU")), tmp_path / "r").run()


def test_select_fraction_bounds(tiny):
    for bad in (0.0, 1.0):
        with pytest.raises(ConfigError, match="select_fraction"):
            config_from_dict(tiny(data={"select_fraction": bad}))
