"""Bad outputs and odd inputs through the real CLI (issue 18): one line, exit code 2, nothing
written, and output paths checked before any computing (the evaluation / export / model load is
replaced by a function that fails the test if it is reached)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_errors import SIZE, png, write_config  # noqa: E402


def _one_line_error(proc, *needles: str) -> str:
    """Exit code 2, ``error:`` then one line holding every needle; returns that line."""
    assert proc.returncode == 2, proc.stderr + proc.stdout
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _must_not_run(*_a, **_k):
    raise AssertionError("the output path must be checked before this runs")


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        png(folder / name, rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8))
    return folder


@pytest.fixture
def a_file(tmp_path) -> Path:
    f = tmp_path / "plain.txt"
    f.write_text("x")
    return f


# ------------------------------------------------------------------ outputs checked up front
def test_predict_out_that_cannot_be_written(segkd, teacher_ckpt, images, a_file, monkeypatch):
    import segkd.apps.predict as predict

    monkeypatch.setattr(predict, "_predictor", _must_not_run)
    proc = segkd("predict", str(teacher_ckpt), str(images), "--out", str(a_file / "pred"))
    _one_line_error(proc, f"cannot write predictions to {a_file / 'pred'}", "is a file, not a folder")
    assert a_file.read_text() == "x"


def test_eval_json_that_cannot_be_written(segkd, teacher_ckpt, a_file, monkeypatch):
    import segkd.apps.eval_checkpoint as evaluation

    monkeypatch.setattr(evaluation, "evaluate_checkpoint", _must_not_run)
    proc = segkd("eval", str(teacher_ckpt), "--json", str(a_file / "m.json"))
    _one_line_error(proc, f"cannot write --json {a_file / 'm.json'}")


@pytest.mark.parametrize("option", ["--onnx", "--safetensors"])
def test_export_target_that_cannot_be_written(segkd, teacher_ckpt, tmp_path, a_file, option, monkeypatch):
    import segkd.apps.export as export

    monkeypatch.setattr(export, "export_onnx", _must_not_run)
    monkeypatch.setattr(export, "export_safetensors", _must_not_run)
    proc = segkd("export", str(teacher_ckpt), option, str(a_file / "m.out"))
    _one_line_error(proc, f"cannot write {option} {a_file / 'm.out'}")
    proc = segkd("export", str(teacher_ckpt), option, str(tmp_path))  # a folder
    _one_line_error(proc, f"cannot write {option} {tmp_path}: it is a folder")


@pytest.mark.skipif(sys.platform != "linux" or __import__("os").geteuid() == 0,
                    reason="root writes into read-only folders")
def test_predict_out_in_a_read_only_folder(segkd, teacher_ckpt, images, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    proc = segkd("predict", str(teacher_ckpt), str(images), "--out", str(ro / "pred"))
    _one_line_error(proc, f"cannot write predictions to {ro / 'pred'}: {ro} is not writable")


@pytest.mark.parametrize("args", [["predict", "CKPT", "IMGS", "--out", "OUT", "--size", "abc"],
                                  ["eval", "CKPT", "--size", "0,5"],
                                  ["eval", "CKPT", "--sliding", "1,2,3"],
                                  ["export", "CKPT", "--onnx", "OUT/m.onnx", "--size", "12xy"]])
def test_size_that_is_not_h_w(segkd, teacher_ckpt, images, tmp_path, args):
    subs = {"CKPT": str(teacher_ckpt), "IMGS": str(images), "OUT": str(tmp_path / "out")}
    args = [subs.get(a, a.replace("OUT", subs["OUT"])) for a in args]
    option = next(a for a in args if a in ("--size", "--sliding"))
    _one_line_error(segkd(*args), f"{option}: expected H,W (two positive integers")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------- configs
def test_zero_data_size_is_refused_by_the_schema(segkd, tmp_path):
    cfg = write_config(tmp_path / "c.yaml")
    proc = segkd("train", str(cfg), "--run-dir", str(tmp_path / "run"), "--set", "data.size=[0,0]")
    assert proc.returncode == 2 and "data.size: Value error, (H, W) must be positive integers, " \
                                   "got [0, 0]" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_binary_config_file(segkd, tmp_path):
    cfg = tmp_path / "model.yaml"
    cfg.write_bytes(b"\x80\x02ctorch\x00\xff binary")
    _one_line_error(segkd("train", str(cfg), "--run-dir", str(tmp_path / "run")),
                    f"{cfg}: not a YAML text file (byte 0 is not UTF-8 text)")
    assert not (tmp_path / "run").exists()


def test_missing_base_names_the_file_that_refers_to_it(segkd, tmp_path):
    (tmp_path / "sub").mkdir()
    cfg = tmp_path / "sub" / "recipe.yaml"
    cfg.write_text("_base_: ../base_missing.yaml\nseed: 1\n")
    _one_line_error(segkd("train", str(cfg)),
                    f"{cfg}: _base_ file '../base_missing.yaml' not found")


def test_onnx_file_as_teacher(segkd, tmp_path):
    onnx = tmp_path / "teacher.onnx"
    onnx.write_bytes(b"\x08\x07\x12\x07pytorch")
    cfg = write_config(tmp_path / "c.yaml", teacher={"checkpoint": str(onnx)},
                       stages=[{"terms": [{"loss": "ce", "teacher": None}, {"loss": "kd"}]}])
    proc = segkd("distill", str(cfg), "--run-dir", str(tmp_path / "run"))
    assert proc.returncode == 2
    assert f"teacher.checkpoint: Value error, '{onnx}' is an ONNX export: a teacher is a segkd " \
           "checkpoint" in " ".join(proc.stderr.split())
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------- predict
def test_predict_on_a_folder_without_supported_images(segkd, teacher_ckpt, tmp_path):
    folder = tmp_path / "tifs"
    folder.mkdir()
    (folder / "x.tif").write_bytes(b"II*\x00")
    (folder / "y.bmp").write_bytes(b"BM")
    proc = segkd("predict", str(teacher_ckpt), str(folder), "--out", str(tmp_path / "out"))
    _one_line_error(proc, f"no images found in {folder} (found only: .bmp, .tif); "
                          "supported: .png, .jpg, .jpeg, .webp")
    proc = segkd("predict", str(teacher_ckpt), str(folder / "x.tif"), "--out", str(tmp_path / "out"))
    _one_line_error(proc, "unsupported image type '.tif'; supported: .png")
    assert not (tmp_path / "out").exists()


def test_failed_predict_says_which_outputs_were_written(segkd, teacher_ckpt, images, tmp_path):
    (images / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out"
    proc = segkd("predict", str(teacher_ckpt), str(images), "--out", str(out), "--format", "ids")
    _one_line_error(proc, f"{images / 'c.png'}",
                    f"(predictions for 2 of 3 images were written to {out}: a.png ... b.png)")
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
