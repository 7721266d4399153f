"""Bad inputs through the real CLI: one clear line naming the file / key / value, exit code 2,
no traceback (unless --debug), no checkpoint or temp file written half-way (DESIGN rule 9).

Each case writes a tiny dataset (32x32 PNGs) and a YAML config and runs
``segkd -q train CONFIG --run-dir D``. Cases that fail before torch is imported, or that need a
real process (a DataLoader worker, --debug), run ``python -m segkd.cli`` in a subprocess; the
others call the same ``segkd.cli.main()`` in-process (``segkd`` fixture), which saves the ~7 s
torch import per case on a busy CPU. In-process, any exception other than the CLI's
``SystemExit(2)`` escapes ``main()`` and fails the test, i.e. a traceback would be caught.
"""
from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from segkd.config.schema import deep_merge

SIZE = 32
SMALL_UNET = {"decoder_channels": [32, 16, 16, 8, 8]}  # 5.2M params instead of 8.1M


# ----------------------------------------------------------------------------- helpers
def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m segkd.cli -q ARGS`` (one thread, wide console: messages on one line)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "1000", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "segkd.cli", "-q", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


def assert_clean_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit code 2 (segkd.cli's code for a clean error), no traceback, ``error: `` + a message
    holding every needle; returns it."""
    text = proc.stderr + proc.stdout
    assert proc.returncode == 2, (proc.returncode, text)
    assert "Traceback" not in text, text
    assert "error:" in proc.stderr, text
    flat = " ".join(proc.stderr.split())
    for needle in needles:
        assert " ".join(str(needle).split()) in flat, (needle, text)
    return flat


def assert_nothing_half_written(run_dir: Path) -> None:
    """No checkpoint (and no temp file) exists in a run that stopped before training."""
    if run_dir.exists():
        names = [p.name for p in run_dir.rglob("*")]
        assert not [n for n in names if n.endswith((".pt", ".tmp"))], names


def write_config(path: Path, options: dict | None = None, **over: Any) -> Path:
    """A tiny 1-epoch CE run on the synthetic set (4 classes, 8 images), merged with ``over``;
    ``options`` replaces data.options (another dataset takes other options)."""
    base = {
        "name": "tiny", "seed": 0,
        "data": {"name": "synthetic", "batch_size": 4, "num_workers": 0,
                 "options": {"num_images": 8, "size": [SIZE, SIZE], "num_classes": 4}},
        "model": {"arch": "unet", "encoder": "kd_resnet10", "kwargs": SMALL_UNET},
        "stages": [{"name": "train", "epochs": 1, "terms": [{"loss": "ce"}],
                    "optimizer": {"name": "adam", "lr": 1e-3}}],
        "trainer": {"progress": False, "log_every": 1, "threads": 1, "channels_last": False},
        "eval": {"splits": ["val"], "per_image_iou": False},
    }
    raw = deep_merge(base, over)
    if options is not None:
        raw["data"]["options"] = options
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def folder_tree(root: Path, n: int = 2, classes: int = 3) -> Path:
    """``root/images/{train,val}/*.png`` + ``root/masks/...`` index masks, ``classes.txt``."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for i in range(n):
            png(root / "images" / split / f"im{i}.png", rng.integers(0, 255, (SIZE, SIZE, 3), np.uint8))
            png(root / "masks" / split / f"im{i}.png", rng.integers(0, classes, (SIZE, SIZE), np.uint8))
    (root / "classes.txt").write_text("\n".join(f"c{i}" for i in range(classes)) + "\n")
    return root


def folder_config(tmp: Path, root: Path, **over: Any) -> list[str]:
    """``train CONFIG --run-dir RUN`` arguments for a run on a "folder" tree at ``root``."""
    cfg = write_config(tmp / "cfg.yaml", options={}, **deep_merge(
        {"data": {"name": "folder", "root": str(root), "batch_size": 2}}, over))
    return ["train", str(cfg), "--run-dir", str(tmp / "run")]


@pytest.fixture
def tree(tmp_path) -> Path:
    return folder_tree(tmp_path / "data")


# ----------------------------------------------------------------------------- image / mask files
def test_corrupt_image_names_the_file(segkd, tmp_path, tree):
    bad = tree / "images" / "train" / "im1.png"
    bad.write_bytes(b"this is not an image" * 10)
    proc = segkd(*folder_config(tmp_path, tree))
    assert_clean_error(proc, "cannot decode image", str(bad))
    assert_nothing_half_written(tmp_path / "run")


def test_truncated_png_in_a_dataloader_worker(tmp_path, tree):
    """The worker's wrapped traceback is stripped: the user sees the DataError line only
    (data.check off: the pre-flight check would find the file in the main process first)."""
    bad = tree / "images" / "train" / "im0.png"
    bad.write_bytes(bad.read_bytes()[:60])
    proc = cli(*folder_config(tmp_path, tree, data={"num_workers": 1, "check": "off"}))
    assert_clean_error(proc, "cannot decode image", str(bad))
    assert "DataLoader worker" not in proc.stderr


def test_mask_size_differs_from_image(segkd, tmp_path, tree):
    bad = png(tree / "masks" / "train" / "im0.png", np.zeros((16, 24), np.uint8))
    proc = segkd(*folder_config(tmp_path, tree))
    assert_clean_error(proc, str(bad), "(16, 24)", "(32, 32)", str(tree / "images" / "train" / "im0.png"))


def test_label_value_outside_classes_and_ignore(segkd, tmp_path, tree):
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[0, 0] = 7
    bad = png(tree / "masks" / "train" / "im1.png", mask)
    proc = segkd(*folder_config(tmp_path, tree))
    assert_clean_error(proc, str(bad), "[7]", "outside [0, 3)", "ignore index 255")


def test_rgb_mask_where_index_mask_expected(segkd, tmp_path, tree):
    rgb = np.zeros((SIZE, SIZE, 3), np.uint8)
    rgb[..., 0] = 200  # channels differ: a colour mask, not grey
    bad = png(tree / "masks" / "train" / "im0.png", rgb)
    proc = segkd(*folder_config(tmp_path, tree))
    assert_clean_error(proc, str(bad), "RGB colour image", "single-channel index mask")


def test_empty_split_folder(segkd, tmp_path, tree):
    for p in (tree / "images" / "train").iterdir():
        p.unlink()
    proc = segkd(*folder_config(tmp_path, tree))
    assert_clean_error(proc, "empty split", str(tree / "images" / "train"))
    assert_nothing_half_written(tmp_path / "run")


def test_empty_camvid_split(segkd, tmp_path):
    root = tmp_path / "camvid"
    png(root / "train" / "a.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    png(root / "trainannot" / "a.png", np.zeros((SIZE, SIZE), np.uint8))
    (root / "val").mkdir()
    (root / "valannot").mkdir()
    cfg = write_config(tmp_path / "c.yaml", options={}, data={"name": "camvid", "root": str(root)})
    proc = segkd("train", str(cfg), "--run-dir", str(tmp_path / "run"))
    assert_clean_error(proc, "empty split", str(root / "val"))


def test_missing_data_root(segkd, tmp_path):
    missing = tmp_path / "no" / "such" / "root"
    proc = segkd(*folder_config(tmp_path, missing))
    assert_clean_error(proc, "dataset root not found", str(missing))
    assert_nothing_half_written(tmp_path / "run")


# ----------------------------------------------------------------------------- config keys / names
def test_unknown_config_key_suggests(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", data={"batchsize": 4})
    proc = cli("train", str(cfg), "--run-dir", str(tmp_path / "run"))
    assert_clean_error(proc, str(cfg), "data.batchsize: unknown key", "Did you mean: batch_size")
    assert not (tmp_path / "run").exists()


def test_wrong_type_names_key_and_value(tmp_path):
    cfg = write_config(tmp_path / "c.yaml")
    proc = cli("train", str(cfg), "--run-dir", str(tmp_path / "run"), "--set", "data.batch_size=four")
    assert_clean_error(proc, "data.batch_size", "valid integer", "'four'")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("over,needles", [
    ({"model": {"arch": "uent"}}, ["unknown model arch 'uent'", "Did you mean: unet"]),
    ({"stages": [{"terms": [{"loss": "cee"}]}]}, ["unknown loss 'cee'", "Did you mean: ce"]),
    ({"data": {"name": "synthetc"}}, ["unknown dataset 'synthetc'", "Did you mean: synthetic"]),
], ids=["model", "loss", "dataset"])
def test_unknown_registry_name_suggests(segkd, tmp_path, over, needles):
    cfg = write_config(tmp_path / "c.yaml", **over)
    proc = segkd("train", str(cfg), "--run-dir", str(tmp_path / "run"))
    assert_clean_error(proc, *needles)
    assert_nothing_half_written(tmp_path / "run")


def test_unknown_dataset_option_suggests(segkd, tmp_path, tree):
    cfg = write_config(tmp_path / "c.yaml", options={"num_class": 3},
                       data={"name": "folder", "root": str(tree)})
    proc = segkd("train", str(cfg), "--run-dir", str(tmp_path / "run"))
    assert_clean_error(proc, "data.options.num_class", "dataset 'folder' has no option 'num_class'",
                       "Did you mean: num_classes")


# ----------------------------------------------------------------------------- checkpoints / hooks
def test_teacher_with_other_class_count(segkd, tmp_path, teacher_ckpt):
    cfg = write_config(tmp_path / "c.yaml", data={"options": {"num_classes": 3}},
                       teacher={"checkpoint": str(teacher_ckpt)},
                       stages=[{"terms": [{"loss": "ce"}, {"loss": "kd"}]}])
    proc = segkd("distill", str(cfg), "--run-dir", str(tmp_path / "run"))
    assert_clean_error(proc, str(teacher_ckpt), "has 4 classes", "have 3")
    assert_nothing_half_written(tmp_path / "run")


def test_init_from_checkpoint_of_another_architecture(segkd, tmp_path, teacher_ckpt):
    """teacher_ckpt is a UNet-kd_resnet14 (default decoder): not this student's architecture."""
    cfg = write_config(tmp_path / "c.yaml", model={"init_from": str(teacher_ckpt)})
    proc = segkd("train", str(cfg), "--run-dir", str(tmp_path / "run"))
    assert_clean_error(proc, str(teacher_ckpt), "does not match this architecture")
    assert_nothing_half_written(tmp_path / "run")


def test_eval_of_a_file_that_is_not_a_checkpoint(segkd, tmp_path):
    bogus = tmp_path / "model.pt"
    bogus.write_bytes(b"\x00" * 100)
    proc = segkd("eval", str(bogus))
    assert_clean_error(proc, "cannot read checkpoint", str(bogus))


def test_hook_path_that_does_not_exist_names_closest(segkd, tmp_path, teacher_ckpt):
    term = {"loss": "hint", "student": "encoder.model.layer9", "teacher": "encoder.model.layer3"}
    cfg = write_config(tmp_path / "c.yaml", teacher={"checkpoint": str(teacher_ckpt)},
                       stages=[{"terms": [{"loss": "ce"}, term]}])
    proc = segkd("distill", str(cfg), "--run-dir", str(tmp_path / "run"))
    flat = assert_clean_error(proc, "student has no module 'encoder.model.layer9'", "Closest valid paths")
    assert "encoder.model.layer" in flat.split("Closest valid paths")[1]
    assert_nothing_half_written(tmp_path / "run")


# ----------------------------------------------------------------------------- faults while training
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(segkd, tmp_path):
    """Epoch 1 trains at lr 1e-3; the step schedule multiplies it by 1e30 for epoch 2, whose
    second iteration meets a non-finite loss. last.pt from epoch 1 survives and loads."""
    from segkd.core.checkpoint import load_checkpoint

    stage = {"epochs": 3, "optimizer": {"name": "sgd", "lr": 1e-3},
             "schedule": {"name": "step", "step_epochs": 1, "factor": 1e30}}
    cfg = write_config(tmp_path / "c.yaml", stages=[stage])
    run = tmp_path / "run"
    proc = segkd("train", str(cfg), "--run-dir", str(run))
    assert_clean_error(proc, "non-finite", "epoch 2", "term(s) ce", "last.pt")
    last = load_checkpoint(run / "last.pt")  # verifies the sha256 sidecar
    assert last["progress"]["epoch"] == 1
    assert all(bool(v.isfinite().all()) for v in last["state_dict"].values() if v.is_floating_point())
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))


def test_non_finite_gradient_under_clipping_is_the_same_clean_error(segkd, tmp_path):
    """With trainer.grad_clip the blow-up reaches the clipping first (torch raises a bare
    RuntimeError there): one line naming the epoch and last.pt, exit 2, last.pt from epoch 1."""
    from segkd.core.checkpoint import load_checkpoint

    stage = {"epochs": 3, "optimizer": {"name": "sgd", "lr": 1e-3},
             "schedule": {"name": "step", "step_epochs": 1, "factor": 1e30}}
    cfg = write_config(tmp_path / "c.yaml", stages=[stage], trainer={"progress": False, "grad_clip": 1.0})
    run = tmp_path / "run"
    proc = segkd("train", str(cfg), "--run-dir", str(run))
    assert_clean_error(proc, "non-finite", "epoch 2", "last.pt")
    assert load_checkpoint(run / "last.pt")["progress"]["epoch"] == 1


def test_run_directory_under_a_regular_file(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    run = blocker / "run"
    proc = cli("train", str(write_config(tmp_path / "c.yaml")), "--run-dir", str(run))
    assert_clean_error(proc, "cannot write to run directory", str(run))


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_parent_of_run_directory(tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        proc = cli("train", str(write_config(tmp_path / "c.yaml")), "--run-dir", str(parent / "run"))
    finally:
        parent.chmod(0o755)
    assert_clean_error(proc, "cannot write to run directory", str(parent / "run"))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_disk_full_while_writing_checkpoint_keeps_previous(segkd, tmp_path, monkeypatch):
    """torch.save of the second last.pt writes a partial file, then the disk is full."""
    import torch

    from segkd.core.checkpoint import load_checkpoint

    real, calls = torch.save, {"run": 0}

    def save(obj, f, *a, **k):
        if obj.get("kind") == "run":
            calls["run"] += 1
            if calls["run"] == 2:
                f.write(b"PK\x03\x04 partial zip")
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *a, **k)

    monkeypatch.setattr("segkd.core.checkpoint.torch.save", save)
    run = tmp_path / "run"
    proc = segkd("train", str(write_config(tmp_path / "c.yaml", stages=[{"epochs": 2}])),
                 "--run-dir", str(run))
    assert_clean_error(proc, "could not write checkpoint", str(run / "last.pt"), "No space left")
    last = run / "last.pt"
    assert (run / "last.pt.sha256").read_text().strip() == _sha256(last)
    assert load_checkpoint(last)["progress"]["epoch"] == 1
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]


def test_debug_flag_shows_the_traceback(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", data={"batchsize": 4})
    proc = subprocess.run([sys.executable, "-m", "segkd.cli", "--debug", "train", str(cfg)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1  # the exception propagates: Python's exit code, not segkd's 2
    assert "Traceback" in proc.stderr and "ConfigError" in proc.stderr
