"""Configs and command lines that used to be read silently wrong or to end in a traceback: a key
given twice, `--set` values that are not YAML, a bad `_base_`, `trainer.threads` below 1,
Ctrl-C, export targets that cannot be written, export files given where a checkpoint goes, the
teacher-cache refusal of photometric augmentation, and the precision default. Each is exit 2
(130 for Ctrl-C) and one line, with nothing written."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from conftest import tiny_cfg  # noqa: E402
from test_errors import write_config  # noqa: E402


def _one_line_error(proc, *needles: str) -> str:
    """Exit code 2, no traceback, one ``error:`` line holding every needle."""
    assert proc.returncode == 2, proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _must_not_run(*_a, **_k):
    raise AssertionError("this must be checked before any model is loaded")


@pytest.fixture
def cwd(tmp_path, monkeypatch) -> Path:
    """Run in an empty folder, so that "nothing written" includes a default runs/ folder."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _nothing_written(folder: Path, *keep: str) -> None:
    assert sorted(p.name for p in folder.iterdir()) == sorted(keep)


# ------------------------------------------------------------------- a key given twice
DUPLICATE_DATA = """\
data:
  name: folder
  root: my_images
model: {arch: unet, encoder: kd_resnet10}
stages:
- {name: train, epochs: 1}
data:
  batch_size: 2
"""


def test_a_second_data_block_is_an_error_not_the_synthetic_set(segkd, cwd):
    (cwd / "c.yaml").write_text(DUPLICATE_DATA)
    proc = segkd("train", "c.yaml")
    _one_line_error(proc, "c.yaml: key 'data' is given twice (lines 1 and 7)", "keep one")
    _nothing_written(cwd, "c.yaml")


def test_duplicate_keys_nested_in_lists_and_in_a_base_file(cwd):
    from segkd.config.schema import load_config
    from segkd.core.errors import ConfigError

    (cwd / "base.yaml").write_text("stages:\n- name: a\n  epochs: 2\n  epochs: 3\n")
    (cwd / "c.yaml").write_text("_base_: base.yaml\nseed: 1\n")
    with pytest.raises(ConfigError, match=r"base.yaml: key 'stages.0.epochs' is given twice "
                                          r"\(lines 3 and 4\)"):
        load_config(cwd / "c.yaml")
    # keys written beside a YAML merge key override the merged ones: that stays allowed
    (cwd / "m.yaml").write_text("_opt: &opt {name: adam, lr: 0.1}\nstages:\n"
                                "- {name: a, optimizer: {<<: *opt, lr: 0.01}}\n"
                                "- {name: b, optimizer: *opt}\n")
    cfg = load_config(cwd / "m.yaml")
    assert [s.optimizer.lr for s in cfg.stages] == [0.01, 0.1]


def test_duplicate_key_inside_a_set_value_and_a_set_key_given_twice(segkd, cwd):
    cfg = write_config(cwd / "c.yaml")
    proc = segkd("train", str(cfg), "--set", "data={name: folder, name: synthetic}")
    _one_line_error(proc, "--set data={name: folder, name: synthetic}: key 'data.name' is given "
                          "twice (line 1, columns 2 and 16)")
    proc = segkd("train", str(cfg), "--set", "data.batch_size=2", "--set", "data.batch_size=4")
    _one_line_error(proc, "--set data.batch_size is given twice ('data.batch_size=2', then "
                          "'data.batch_size=4'); keep one")
    _nothing_written(cwd, "c.yaml")
    # layered override lists (a study's `set`, then a method's) still override in order
    from segkd.config.schema import load_config

    assert load_config(cfg, ["data.batch_size=2", "data.batch_size=4"]).data.batch_size == 4


def test_duplicate_key_in_a_study_spec(segkd, cwd):
    cfg = write_config(cwd / "c.yaml")
    (cwd / "spec.yaml").write_text(f"name: s\nout_dir: out\nmethods: {{ce: {cfg}}}\n"
                                   "students: [kd_resnet10]\nseeds: [0]\nseeds: [1, 2]\n")
    _one_line_error(segkd("study", "spec.yaml", "--dry-run"),
                    "spec.yaml: key 'seeds' is given twice (lines 5 and 6)")
    _nothing_written(cwd, "c.yaml", "spec.yaml")


def test_duplicate_key_in_prepare_json_options(segkd, cwd):
    proc = segkd("prepare", "folder", "--root", str(cwd / "nowhere"),
                 "--set", 'value_map={"0": 0, "0": 1}')
    _one_line_error(proc, "--set value_map={\"0\": 0, \"0\": 1}: key '0' is given twice")
    proc = segkd("prepare", "folder", "--root", str(cwd / "nowhere"),
                 "--set", "mask_suffix=_a", "--set", "mask_suffix=_b")
    _one_line_error(proc, "--set mask_suffix is given twice")


# ------------------------------------------------------- --set values that are not YAML
@pytest.mark.parametrize("value,needle", [
    ("data.size=[64,64", "expected ',' or ']', but got '<stream end>' at line 1, column 7"),
    ("data.name=\tsynthetic", "found character '\\t' that cannot start any token"),
    ("data.name=!!python/object/apply:os.system ['touch PWNED']",
     "the tag '!!python/object/apply:os.system' is not allowed"),
    ("data.name=!!python/object/new:os.system [touch PWNED]",
     "the tag '!!python/object/new:os.system' is not allowed"),
    ("data.name=!!python/name:os.system", "the tag '!!python/name:os.system' is not allowed"),
])
def test_set_value_that_is_not_yaml(segkd, cwd, value, needle):
    cfg = write_config(cwd / "c.yaml")
    proc = segkd("train", str(cfg), "--set", value)
    shown = value.replace("\t", "\\t")  # a tab is shown as \t
    _one_line_error(proc, f"--set {shown}: not valid YAML: ", needle)
    _nothing_written(cwd, "c.yaml")  # no runs/, and no tag ran anything (no PWNED file)


@pytest.mark.parametrize("base", ["_base_:\n", "_base_: 3\n", "_base_: [base.yaml, 1]\n",
                                  "_base_: ''\n"])
def test_base_that_is_not_a_file_name(segkd, cwd, base):
    cfg = write_config(cwd / "base.yaml")
    (cwd / "c.yaml").write_text(base + "seed: 1\n")
    proc = segkd("train", "c.yaml")
    _one_line_error(proc, "c.yaml: _base_ must be a file path (relative to this file) or a list "
                          "of them, got ")
    _nothing_written(cwd, "c.yaml", cfg.name)


# ------------------------------------------------------------------------ trainer.threads
@pytest.mark.parametrize("threads", ["-1", "0"])
def test_threads_below_one_is_refused(segkd, cwd, threads):
    cfg = write_config(cwd / "c.yaml")
    proc = segkd("train", str(cfg), "--set", f"trainer.threads={threads}")
    assert proc.returncode == 2, proc.stderr
    assert f"trainer.threads: Value error, threads must be >= 1 " in proc.stderr
    assert f"(got {threads})" in proc.stderr and "Traceback" not in proc.stderr
    _nothing_written(cwd, "c.yaml")


# ------------------------------------------------------------------------------- Ctrl-C
def test_ctrl_c_during_training_says_interrupted_and_exits_130(tmp_path):
    raw = tiny_cfg(stages=[{"name": "train", "epochs": 1000, "terms": [{"loss": "ce"}]}])
    cfg, run = tmp_path / "c.yaml", tmp_path / "run"
    cfg.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "segkd.cli", "-q", "train", str(cfg),
                             "--run-dir", str(run)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    try:
        while not ((run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").read_text()):
            assert proc.poll() is None, proc.communicate()
            assert time.time() - t0 < 600, "training did not start"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.splitlines()[-1] == "interrupted", err
    assert "Traceback" not in err


# ---------------------------------------------------------------- export targets, first
def test_export_whose_description_cannot_be_written_fails_before_loading(segkd, tmp_path,
                                                                         teacher_ckpt,
                                                                         monkeypatch):
    import segkd.apps.export as export

    monkeypatch.setattr(export, "model_from_checkpoint", _must_not_run)
    (tmp_path / "m.json").mkdir()  # where m.onnx's description goes
    proc = segkd("export", str(teacher_ckpt), "--onnx", str(tmp_path / "m.onnx"))
    _one_line_error(proc, f"cannot write --onnx description {tmp_path / 'm.json'}: it is a folder")
    # --safetensors first, --onnx second: both are checked before either is written
    proc = segkd("export", str(teacher_ckpt), "--safetensors", str(tmp_path / "s.safetensors"),
                 "--onnx", str(tmp_path / "m.onnx"))
    _one_line_error(proc, "cannot write --onnx description")
    proc = segkd("export", str(teacher_ckpt), "--onnx", str(tmp_path / "x.json"))
    _one_line_error(proc, f"cannot write --onnx {tmp_path / 'x.json'}: its description x.json "
                          "would overwrite it")
    _nothing_written(tmp_path, "m.json")
    from segkd.core.errors import SegkdError

    with pytest.raises(SegkdError, match="m.json: it is a folder"):  # the library checks too
        export.export_onnx(teacher_ckpt, tmp_path / "m.onnx")


# -------------------------------------------------------- an export where a checkpoint goes
@pytest.mark.parametrize("command", ["eval", "export", "stages"])
@pytest.mark.parametrize("suffix,kind", [(".onnx", "an ONNX export"),
                                         (".safetensors", "a safetensors export")])
def test_export_file_given_where_a_checkpoint_goes(segkd, cwd, teacher_ckpt, command, suffix,
                                                   kind):
    exported = cwd / f"m{suffix}"
    exported.write_bytes(b"\x08\x07\x12\x07pytorch")  # the first bytes of an ONNX protobuf
    args = {"eval": ["eval", str(exported)],
            "export": ["export", str(exported), "--onnx", "out.onnx"],
            "stages": ["stages", str(exported), "--teacher", str(teacher_ckpt)]}[command]
    _one_line_error(segkd(*args), f"{exported} is {kind}, not a checkpoint: segkd {command} "
                                  "takes a segkd checkpoint (.pt, e.g. the best.pt it was "
                                  "exported from) or a run directory")
    _nothing_written(cwd, exported.name)


def test_export_file_as_init_from(segkd, cwd):
    cfg = write_config(cwd / "c.yaml")
    proc = segkd("train", str(cfg), "--set", "model.init_from=student.onnx")
    assert proc.returncode == 2 and "model.init_from: Value error, 'student.onnx' is an export, " \
                                   "not a checkpoint: init_from takes a segkd checkpoint" in proc.stderr
    _nothing_written(cwd, "c.yaml")


# ------------------------------------------------------------------ the teacher cache
def test_exact_cache_refusal_suggests_approximate_only_where_it_is_accepted():
    from segkd.data.transforms import split_transforms
    from segkd.distill.cache_store import CacheError
    from segkd.distill.teacher_cache import check_approximate, check_exact

    def random_part(**kw):
        return split_transforms(True, size=(32, 32), **kw)[1]

    for kw in ({"color_jitter": 0.3}, {"blur": 1.0}, {"scale": (0.5, 2.0)}):
        with pytest.raises(CacheError) as err:
            check_exact(random_part(**kw))
        assert "approximate" not in str(err.value) and "teacher.cache: false" in str(err.value)
        with pytest.raises(CacheError):  # approximate mode refuses each of them, too
            check_approximate(random_part(**kw))
    geometric = random_part(scale=(0.5, 2.0), crop=(24, 24))
    with pytest.raises(CacheError, match="set teacher.cache.mode: approximate"):
        check_exact(geometric)
    assert check_approximate(geometric) is not None  # ...which then accepts it


# ----------------------------------------------------------------------- precision
def test_precision_defaults_to_auto_and_says_so(segkd, tmp_path):
    from segkd.config.schema import Config, TrainerCfg

    assert TrainerCfg().precision == "auto" and Config().trainer.precision == "auto"
    raw = yaml.safe_load(write_config(tmp_path / "c.yaml").read_text())
    assert "precision" not in raw["trainer"]
    proc = segkd("train", str(tmp_path / "c.yaml"), "--run-dir", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    line = next(l for l in proc.stderr.splitlines() if l.startswith("precision: "))
    assert "set in the config" not in line and "(auto: " in line, line
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["precision"]["requested"] == "auto"


def test_prepared_folder_config_says_precision_auto(segkd, tmp_path):
    from test_data_usability import membrane_tree

    root = membrane_tree(tmp_path / "membranes")
    segkd("prepare", "folder", "--root", str(root), "--config", str(tmp_path / "c.yaml"))
    assert yaml.safe_load((tmp_path / "c.yaml").read_text())["trainer"] == {"precision": "auto"}
