"""Plug and Play on a classifier, end to end on a tiny image-folder dataset."""
from __future__ import annotations

import numpy as np
from PIL import Image

from segkd.config.schema import config_from_dict
from segkd.engine import Engine


def _tree(root, n=6):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n):
                img = np.clip(rng.normal(colour, 40, size=(32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i}.png")


def test_classifier_teacher_then_cheap_student(tmp_path, tiny):
    _tree(tmp_path / "data")
    data = {"name": "image_classes", "root": str(tmp_path / "data"), "options": {}, "size": [32, 32],
            "batch_size": 6}
    raw = tiny(name="cls-teacher", task="classification", data=data,
               model={"arch": "classifier", "encoder": "kd_resnet10"},
               stages=[{"epochs": 3, "terms": [{"loss": "ce"}], "optimizer": {"name": "adam", "lr": 3e-3}}])
    raw["data"]["options"] = {}
    t = Engine(config_from_dict(raw), tmp_path / "t").run()
    assert 0.0 <= t["splits"]["val"]["top1"] <= 1.0 and len(t["classes"]) == 3
    pnp = tiny(name="cls-pnp", task="classification", data=data, model={"from_teacher": True},
               teacher={"checkpoint": str(tmp_path / "t" / "best.pt")},
               stages=[{"epochs": 1, "iters_per_epoch": 2, "data": "images",
                        "replace": [{"paths": ["model.layer3.*.conv1"], "block": "dwsep",
                                     "options": {"kernel_size": 3, "dilation": 1}}],
                        "trainable": ["model.layer3"],
                        "terms": [{"loss": "mse", "student": "model.layer3", "teacher": "model.layer3",
                                   "weight": 1000, "connector": "none"}, {"loss": "kd"}],
                        "optimizer": {"name": "radam", "lr": 5e-3}}])
    pnp["data"]["options"] = {}
    s = Engine(config_from_dict(pnp), tmp_path / "s").run()
    assert s["params"] < t["params"] and s["replacements"][0]["block"] == "dwsep"
    assert "top1" in s["splits"]["val"]
