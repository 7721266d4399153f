"""Training results that would be silently wrong: a non-finite parameter or buffer never reaches
a checkpoint or an export (the run stops, naming the tensor and the checkpoint it can fall back
on), and a short run whose BatchNorm running statistics cannot follow the weights says so (too
few optimiser steps, validation collapsed to one class, train-mode vs eval-mode predictions)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segkd.core.checkpoint import load_checkpoint, save_checkpoint
from segkd.core.errors import NonFiniteLoss

sys.path.insert(0, str(Path(__file__).parent))
from test_errors import assert_clean_error, write_config  # noqa: E402


def _finite(state: dict) -> bool:
    return all(bool(v.isfinite().all()) for v in state.values() if v.is_floating_point())


def _leftovers(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if p.name.endswith((".pt", ".tmp", ".sha256")))


# ----------------------------------------------------------------------------- non-finite state
def test_huge_learning_rate_stops_and_writes_no_checkpoint(segkd, tmp_path):
    """Adam at lr 1e10: the loss stays finite (BatchNorm normalises the huge activations) but the
    running variances overflow to inf in epoch 1. The run stops with one line naming a buffer,
    the epoch and that no checkpoint exists, instead of saving inf tensors as a finished run."""
    stage = {"epochs": 2, "optimizer": {"name": "adam", "lr": 1e10}}
    run = tmp_path / "run"
    proc = segkd("train", str(write_config(tmp_path / "c.yaml", stages=[stage])), "--run-dir", str(run))
    flat = assert_clean_error(proc, "parameters became non-finite at stage 'train' epoch 1",
                              "(the loss stayed finite)", "running_var", "hold NaN/Inf",
                              "No checkpoint was written before it")
    assert "last.pt" not in flat  # names no file that does not exist
    assert _leftovers(run) == [] and not (run / "summary.json").exists()


def test_blow_up_after_a_good_epoch_keeps_the_last_good_checkpoints(segkd, tmp_path):
    """Epoch 1 trains at lr 1e-3, then the step schedule makes it 1e9: the buffers overflow in
    epoch 2 with a finite loss. last.pt and best.pt stay the (finite, verified) epoch 1 and the
    error names them with their epochs."""
    stage = {"epochs": 3, "optimizer": {"name": "adam", "lr": 1e-3},
             "schedule": {"name": "step", "step_epochs": 1, "factor": 1e12}}
    run = tmp_path / "run"
    proc = segkd("train", str(write_config(tmp_path / "c.yaml", stages=[stage])), "--run-dir", str(run))
    assert_clean_error(proc, "parameters became non-finite at stage 'train' epoch 2", "running_var",
                       "The last good checkpoint is last.pt in the run directory "
                       "(stage 'train' epoch 1; best.pt: stage 'train' epoch 1)")
    last, best = load_checkpoint(run / "last.pt"), load_checkpoint(run / "best.pt")  # sha256 checked
    assert last["progress"]["epoch"] == 1 and best["selected"]["epoch"] == 1
    assert _finite(last["state_dict"]) and _finite(best["state_dict"])
    assert not list(run.glob(".*.tmp")) and not (run / "summary.json").exists()


def test_non_finite_loss_in_the_first_epoch_names_no_missing_file(segkd, tmp_path):
    """The loss itself overflows before any epoch ended: the line says no checkpoint exists
    rather than pointing at a last.pt that was never written."""
    stage = {"epochs": 2, "optimizer": {"name": "sgd", "lr": 1e30}}
    run = tmp_path / "run"
    proc = segkd("train", str(write_config(tmp_path / "c.yaml", stages=[stage])), "--run-dir", str(run))
    flat = assert_clean_error(proc, "became non-finite at stage 'train' epoch 1",
                              "No checkpoint was written before it")
    assert "last.pt" not in flat and _leftovers(run) == []


def test_save_checkpoint_refuses_non_finite_tensors_and_keeps_the_file(tmp_path):
    path = tmp_path / "last.pt"
    with pytest.raises(NonFiniteLoss, match=r"bn\.running_var hold NaN/Inf \(no file was written\)"):
        save_checkpoint({"state_dict": {"w": torch.ones(2), "bn.running_var": torch.tensor([1.0, float("inf")])}}, path)
    assert list(tmp_path.iterdir()) == []
    save_checkpoint({"state_dict": {"w": torch.ones(2)}, "connectors": {"c": torch.zeros(1)}}, path)
    before = path.read_bytes()
    with pytest.raises(NonFiniteLoss, match=r"connectors\.c hold NaN/Inf \(the previous last\.pt is kept\)"):
        save_checkpoint({"state_dict": {"w": torch.ones(2)}, "connectors": {"c": torch.tensor([float("nan")])}}, path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "last.pt.sha256"]
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.ones(2))


def test_export_refuses_a_checkpoint_holding_non_finite_tensors(tmp_path):
    """A checkpoint written before checkpoints were checked (torch.save, no sidecar) with an inf
    BatchNorm buffer: neither export writes anything."""
    from segkd.apps.export import export_onnx, export_safetensors
    from segkd.engine.state import model_checkpoint
    from segkd.models.spec import build_from_spec

    spec = {"arch": "unet", "kwargs": {"encoder": "kd_resnet10", "num_classes": 2,
                                       "decoder_channels": [32, 16, 16, 8, 8]}}
    model = build_from_spec(spec)
    model.state_dict()["decoder.blocks.0.conv1.1.running_var"].fill_(float("inf"))
    ck = model_checkpoint(model, spec, [], {"classes": ["a", "b"], "num_classes": 2}, {},
                          {"selected": {"stage": "train", "epoch": 3}})
    torch.save(ck, tmp_path / "best.pt")
    for export, out in ((export_safetensors, "m.safetensors"), (export_onnx, "m.onnx")):
        with pytest.raises(NonFiniteLoss, match=r"best\.pt \(stage 'train' epoch 3\): "
                                                r"decoder\.blocks\.0\.conv1\.1\.running_var .*nothing was exported"):
            export(tmp_path / "best.pt", tmp_path / out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]


# ----------------------------------------------------------------------------- short runs
def _grey_discs(root: Path, n: int = 30, size: int = 32) -> Path:
    """A user's first dataset: ``n`` grayscale images, a faint disc (class 1, ~10% of the
    pixels) on a noisy background (class 0), 0/1 masks; split 24 train / 6 val by the folder."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for d in ("images", "masks"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
        r = rng.integers(size // 6, size // 4)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.uint8)
        img = np.clip(100 + 20 * mask + rng.normal(0, 25, (size, size)), 0, 255).astype(np.uint8)
        Image.fromarray(img, "L").save(root / "images" / f"s{i:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"s{i:02d}.png")
    return root


def _short_run(segkd, tmp_path: Path, lr: float, **data) -> tuple[str, dict, list[dict]]:
    """8 epochs x 3 steps (batch 8 of 24 training images) on the grey discs, as a first try
    would run it: (stderr on one line, summary.json, metrics.jsonl rows)."""
    root = _grey_discs(tmp_path / "discs")
    stage = {"epochs": 8, "optimizer": {"name": "adam", "lr": lr, "weight_decay": 1e-4},
             "schedule": {"name": "poly"}}
    cfg = write_config(tmp_path / "c.yaml", options={"num_classes": 2}, stages=[stage],
                       data={"name": "folder", "root": str(root), "batch_size": 8, **data})
    run = tmp_path / "run"
    proc = segkd("train", str(cfg), "--run-dir", str(run))
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return " ".join(proc.stderr.split()), json.loads((run / "summary.json").read_text()), rows


def test_short_run_that_collapses_to_the_majority_class_warns(segkd, tmp_path):
    few = ("warning: stage 'train' trains BatchNorm for only 24 optimiser step(s) (8 epoch(s) x 3); "
           "its running statistics need about 50 to follow the weights")
    fix = "Set stages.0.epochs to 17 or more, stages.0.iters_per_epoch to 7 or more"
    collapse = ("warning: validation collapsed to one class at stage 'train' epoch 8: the model "
                "predicts 'class_0' for 100.0% of the labeled val pixels")
    err, summary, rows = _short_run(segkd, tmp_path, lr=5e-2)
    for needle in (few, fix, "a smaller data.batch_size (now 8: 3 batch(es) per epoch)", collapse):
        assert needle in err, (needle, err)
    said = summary["warnings"]  # tools read them from summary.json and metrics.jsonl
    assert len(said) == 2 and said[0].startswith(few[9:]) and said[1].startswith(collapse[9:])
    logged = [r for r in rows if "warning" in r]
    assert [r["warning"] for r in logged] == said and [r["epoch"] for r in logged] == [0, 8]


def test_eval_mode_far_from_train_mode_warns(segkd, tmp_path):
    """Inputs normalised far from zero mean / unit variance (data.mean 0, std 0.05): after 24
    steps the running statistics still hold much of their start values, so eval mode predicts
    the disc over most of the image while train mode (batch statistics) finds it."""
    err, summary, _ = _short_run(segkd, tmp_path, lr=1e-3, mean=[0, 0, 0], std=[0.05] * 3)
    start = ("warning: train-mode and eval-mode predictions disagree at stage 'train' epoch 8 "
             "(a validation batch of 6 image(s), BatchNorm on its batch statistics vs its running "
             "statistics): they give the same class to")
    assert start in err and "class 'class_1' covers" in err, err
    assert any(w.startswith(start[9:]) for w in summary["warnings"])


# ----------------------------------------------------------------------------- the checks themselves
def _stale_bn_model() -> tuple[torch.nn.Module, torch.nn.BatchNorm2d]:
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(4)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), bn, torch.nn.ReLU(),
                                torch.nn.Dropout(0.5), torch.nn.Conv2d(4, 2, 1))
    bn.running_mean.fill_(3.0)  # statistics of weights the model no longer has
    bn.num_batches_tracked.fill_(7)
    return model.train(), bn


def test_mode_check_restores_statistics_and_modes_and_sees_the_difference():
    from segkd.engine import health

    model, bn = _stale_bn_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.randn(4, 3, 8, 8)
    found = health.mode_disagreement(model, model, [bn], images)
    for k, v in model.state_dict().items():  # running statistics and counters untouched
        assert torch.equal(v, before[k]), k
    assert all(m.training for m in model.modules())
    with torch.no_grad():
        want_eval = model.eval()(images).argmax(1)
        model.train()
    assert found["eval"][0] == pytest.approx(float((want_eval == 0).float().mean()))
    assert sum(found["train"]) == pytest.approx(1.0) and 0.0 <= found["agreement"] <= 1.0
    assert found["train"] != found["eval"]
    assert "label_miou" not in found


def test_mode_check_scores_both_modes_against_the_labels():
    """With the batch's labels (at twice the prediction's size, one pixel ignored) each mode's
    mean IoU against them is that of its own argmax, labels resized nearest."""
    from segkd.engine import health

    model, bn = _stale_bn_model()
    images = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        model.eval()
        bn.train()
        train_pred = model(images).argmax(1)
        model.eval()
        eval_pred = model(images).argmax(1)
        model.train()
    labels = train_pred.repeat_interleave(2, 1).repeat_interleave(2, 2).clone()  # 16x16
    labels[0, 0, 0] = 255
    found = health.mode_disagreement(model, model, [bn], images, labels, ignore_index=255)
    assert found["label_miou"]["train"] == pytest.approx(1.0)  # train mode made these labels
    t, p = train_pred.flatten(), eval_pred.flatten()
    ious = [float(((t == c) & (p == c)).sum()) / float(((t == c) | (p == c)).sum())
            for c in (0, 1) if bool((t == c).any())]
    assert found["label_miou"]["eval"] == pytest.approx(sum(ious) / len(ious), abs=0.02)
    assert found["label_miou"]["eval"] < 1.0


def test_warnings_stay_quiet_when_nothing_is_wrong():
    from segkd.engine import health

    bn = torch.nn.BatchNorm2d(2)
    assert health.few_steps_warning([bn], "train", 0, 10, 5, 1, 5, 8) is None  # 50 steps: enough
    assert health.few_steps_warning([], "train", 0, 1, 1, 1, 1, 8) is None  # no BatchNorm trains
    assert "stages.0.iters_per_epoch to 50 or more" in health.few_steps_warning([bn], "s", 0, 1, 3, 1, None, 8)
    # one class everywhere, but the labels hold (almost) nothing else: not a collapse
    assert health.collapse_warning([990, 10], [1000, 0], ["a", "b"], "val", "e") is None
    assert health.collapse_warning([900, 100], [995, 5], ["a", "b"], "val", "e").startswith(
        "validation collapsed to one class at e: the model predicts 'a' for 99.5%")
    agree = {"agreement": 0.97, "train": [0.9, 0.1], "eval": [0.92, 0.08], "iou": [0.96, 0.75]}
    assert health.mode_warning(agree, ["a", "b"], 4, "e") is None
    vanish = {"agreement": 0.9, "train": [0.85, 0.15], "eval": [0.99, 0.01], "iou": [0.9, 0.06]}
    # the same disagreement where eval mode scores as well against the batch's labels: quiet
    # (mid-training, a small class can differ between the modes with eval mode the better one)
    assert health.mode_warning({**vanish, "label_miou": {"train": 0.60, "eval": 0.62}}, ["a", "b"], 4, "e") is None
    assert health.mode_warning({**vanish, "label_miou": {"train": 0.60, "eval": 0.56}}, ["a", "b"], 4, "e") is None
    worse = health.mode_warning({**vanish, "label_miou": {"train": 0.60, "eval": 0.40}}, ["a", "b"], 4, "e")
    assert worse.endswith("against the labels, mean IoU 0.60 in train mode, 0.40 in eval mode. "
                          "Validation, best.pt and exports use eval mode: give the stage more optimiser "
                          "steps (more epochs, a smaller batch, iters_per_epoch) or a learning rate "
                          "that decays by its end")
    nan = {"train": float("nan"), "eval": float("nan")}  # no labelled pixel: the rule without labels
    assert "class 'b' covers" in health.mode_warning({**vanish, "label_miou": nan}, ["a", "b"], 4, "e")
    assert "class 'b' covers 15.0% of them in train mode, 1.0% in eval mode" in health.mode_warning(
        vanish, ["a", "b"], 4, "e")
