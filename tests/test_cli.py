"""The command line end to end on tiny data: train, eval, predict, info, list, demo, import."""
from __future__ import annotations

import json
from pathlib import Path

import yaml


def _config(tmp_path, tiny) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny()))
    return path


def test_train_eval_predict_info(segkd, tmp_path, tiny):
    cfg = _config(tmp_path, tiny)
    run = tmp_path / "run"
    proc = segkd("train", str(cfg), "--run-dir", str(run), "--set", "stages.0.epochs=1")
    assert proc.returncode == 0, proc.stderr
    assert "mIoU" in proc.stdout and (run / "summary.json").is_file()

    out = tmp_path / "eval.json"
    proc = segkd("eval", str(run / "best.pt"), "--split", "val", "--flip", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    m = json.loads(out.read_text())
    assert len(m["per_class_iou"]) == 4 and 0 <= m["mIoU"] <= 1 and "per_image_iou" in m

    import numpy as np
    from PIL import Image

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(2):
        Image.fromarray((np.random.rand(40, 48, 3) * 255).astype("uint8")).save(imgs / f"im{i}.png")
    proc = segkd("predict", str(run / "best.pt"), str(imgs), "--out", str(tmp_path / "pred"))
    assert proc.returncode == 0, proc.stderr
    mask = Image.open(tmp_path / "pred" / "im0_mask.png")
    assert mask.size == (48, 40) and (tmp_path / "pred" / "im1_overlay.png").is_file()
    proc = segkd("predict", str(run / "best.pt"), str(imgs), "--out", str(tmp_path / "ids"), "--format", "ids")
    ids = np.array(Image.open(tmp_path / "ids" / "im0.png"))
    assert ids.shape == (40, 48) and ids.max() < 4

    proc = segkd("info", str(run / "best.pt"), "--size", "64,64", "--paths")
    assert proc.returncode == 0 and "parameters" in proc.stdout and "encoder.model.layer1" in proc.stdout


def test_list_names(segkd):
    proc = segkd("list", "losses")
    for name in ("ce", "kd", "at", "ofd", "cwd", "dist", "skd", "hint"):
        assert name in proc.stdout.split()
    kd_line = next(line for line in proc.stdout.splitlines() if line.split()[0] == "kd")
    assert "ignore_pixels: exclude (default) | include" in kd_line  # which KD is the default
    assert "kd_resnet26" in segkd("list", "encoders", "--pattern", "kd_*").stdout
    assert "camvid" in segkd("list", "datasets").stdout


def test_info_reports_parameter_counts(segkd):
    proc = segkd("info", "unet:kd_resnet18", "--classes", "11", "--size", "64,64")
    assert "14,329,659" in proc.stdout  # UNet-R18, 11 classes (kdsemseg student)


def test_demo_quick_trains_a_teacher_and_compresses_it(segkd, tmp_path):
    out = tmp_path / "demo"
    proc = segkd("demo", "--quick", "--out-dir", str(out))
    assert proc.returncode == 0, proc.stderr
    assert (out / "teacher" / "summary.json").is_file()
    for run in ("student", "baseline"):
        assert (out / "compress" / run / "summary.json").is_file()
    assert (out / "compress" / "export" / "student.onnx").is_file()
    report = (out / "compress" / "report.md").read_text()
    assert "| teacher |" in report and "| student |" in report and "| baseline |" in report
    assert "kept of teacher" in proc.stdout and "chosen:" in proc.stdout
    again = segkd("demo", "--quick", "--out-dir", str(out))  # finished runs are kept, not redone
    assert again.returncode == 0, again.stderr
    assert "finished earlier" in again.stdout


def test_quiet_is_passed_down_to_each_invocation(monkeypatch, tmp_path):
    """``-q`` reaches the code that draws progress bars as an argument, for that invocation only
    (it was an environment variable, SEGKD_QUIET, that stayed set for the rest of the process)."""
    from typer.testing import CliRunner

    import segkd.cli.train as train_cmds
    from segkd.cli import app

    seen: list = []
    monkeypatch.setattr("segkd.apps.runs.run_training", lambda config, overrides, *a: seen.append(
        "trainer.progress=false" in overrides) or (tmp_path, {}))
    monkeypatch.setattr(train_cmds, "print_summary", lambda *a: None)
    monkeypatch.setattr("segkd.data.download.download",
                        lambda *a, progress, **kw: seen.append(not progress))
    monkeypatch.setattr("segkd.apps.demo.run_demo", lambda *a, quiet: seen.append(quiet))
    runner = CliRunner()
    for args in (["-q", "train", "x.yaml"], ["train", "x.yaml"], ["-q", "download", "camvid"],
                 ["download", "camvid"], ["-q", "demo"], ["demo"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output, result.exception)
    assert seen == [True, False, True, False, True, False]
