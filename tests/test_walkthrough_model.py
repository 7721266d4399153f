"""docs/architecture.md "Adding a model", done: an architecture written in this file alone (an
``nn.Module`` returning the logits tensor, one ``MODELS`` registration) is listed, trained through a
config, distilled from with a feature term read by a forward hook at one of its module paths,
evaluated with ``segkd eval``, loaded with ``segkd.load_model`` and exported to ONNX."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from segkd import load_model
from segkd.core.registry import MODELS

ARCH = "walkthrough_tinyseg"


# ------------------------------------------------------------------ the model: one file's worth
class TinySeg(nn.Module):
    """Two stride-2 conv blocks and a 1x1 classifier, upsampled to the input: logits [N, C, H, W]."""

    def __init__(self, num_classes: int, width: int = 8):
        super().__init__()
        block = lambda cin, cout: nn.Sequential(  # noqa: E731
            nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
        self.stem = block(3, width)
        self.body = block(width, 2 * width)
        self.head = nn.Conv2d(2 * width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.head(self.body(self.stem(x))), size=x.shape[-2:],
                             mode="bilinear", align_corners=False)


def tinyseg(num_classes: int, width: int = 8) -> nn.Module:
    return TinySeg(num_classes, width)


@pytest.fixture
def registered():
    MODELS.register(ARCH)(tinyseg)
    yield ARCH
    MODELS.unregister(ARCH)


# ------------------------------------------------------------------ using it like any other model
def _config(path: Path, name: str, width: int, teacher: str | None = None) -> Path:
    terms = [{"loss": "ce"}]
    if teacher:  # a logit term and a hint at a module path of the new model (1x1 conv connector)
        terms += [{"loss": "kd", "weight": 1.0},
                  {"loss": "mse", "weight": 1.0, "student": "body", "teacher": "body", "connector": "auto"}]
    cfg = {"name": name, "seed": 0,
           "data": {"name": "synthetic", "batch_size": 4, "num_workers": 0,
                    "options": {"num_images": 8, "size": [32, 32]}},
           "model": {"arch": ARCH, "kwargs": {"width": width}},
           "stages": [{"name": "train", "epochs": 1, "terms": terms,
                       "optimizer": {"name": "adam", "lr": 1e-3}}],
           "trainer": {"progress": False, "precision": "32"},
           "eval": {"splits": ["val"]}}
    if teacher:
        cfg["teacher"] = {"checkpoint": teacher}
    path.write_text(json.dumps(cfg))
    return path


def test_a_model_written_outside_the_package_trains_distills_and_exports(registered, segkd, tmp_path):
    listed = segkd("list", "models")
    assert listed.returncode == 0 and ARCH in listed.stdout

    teacher = tmp_path / "teacher"
    trained = segkd("train", str(_config(tmp_path / "t.yaml", "tiny-teacher", 16)), "--run-dir", str(teacher))
    assert trained.returncode == 0, trained.stderr

    student = tmp_path / "student"
    distilled = segkd("distill", str(_config(tmp_path / "s.yaml", "tiny-student", 4, str(teacher))),
                      "--run-dir", str(student))
    assert distilled.returncode == 0, distilled.stderr
    rows = [json.loads(line) for line in (student / "metrics.jsonl").read_text().splitlines()]
    assert any("train/loss/mse" in r for r in rows)  # the hint at `body` was read and trained
    summary = json.loads((student / "summary.json").read_text())

    scores = tmp_path / "eval.json"
    evaluated = segkd("eval", str(student), "--split", "val", "--json", str(scores))
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(scores.read_text())["mIoU"] == pytest.approx(summary["splits"]["val"]["mIoU"])

    model, meta = load_model(student)
    assert isinstance(model, TinySeg) and model.body[0].out_channels == 8  # width 4 -> 2 * 4
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, meta["num_classes"], 32, 32)

    onnx = tmp_path / "tiny.onnx"
    exported = segkd("export", str(student / "best.pt"), "--onnx", str(onnx), "--size", "32,32")
    assert exported.returncode == 0, exported.stderr
    assert onnx.is_file()
