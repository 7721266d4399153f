"""One home each: the run's device and precision (one Runtime that Fabric, the Distiller and
summary.json read), the checkpoint dict and its format, the sha256 helper, the rank-zero check."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from segkd.config.schema import TrainerCfg
from segkd.core.errors import ConfigError
from segkd.engine import runtime
from segkd.engine.runtime import resolve_runtime

PKG = Path(__file__).resolve().parents[1] / "segkd"


def _bf16_gpu(monkeypatch, available: bool = True) -> None:
    """A machine whose CUDA GPU computes bf16 natively (as segkd's and torch's probes report it;
    torch.cuda.is_available itself stays as it is: the optimiser asks it too)."""
    monkeypatch.setattr(runtime, "cuda_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)


@pytest.mark.parametrize("accelerator", ["gpu", "cuda", "auto", "GPU"])
def test_lightning_accelerator_names_resolve_to_cuda_and_its_precision(monkeypatch, accelerator):
    _bf16_gpu(monkeypatch)
    rt = resolve_runtime(TrainerCfg(accelerator=accelerator, precision="auto"))
    assert (rt.device_type, rt.accelerator, rt.precision) == ("cuda", "cuda", "bf16-mixed")
    assert rt.compute_dtype == torch.bfloat16 and "Fake GPU" in rt.reason
    assert rt.summary() == {"requested": "auto", "value": "bf16-mixed", "reason": rt.reason,
                            "tf32": False}


def test_fp32_on_cuda_is_fp32_unless_tf32_is_allowed(monkeypatch):
    """PyTorch runs cuDNN convolutions in TensorFloat-32 by default while the run says fp32;
    segkd turns that off on CUDA (and records it) unless trainer.tf32 allows it, and leaves the
    CPU's flags alone."""
    _bf16_gpu(monkeypatch)
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = True  # PyTorch's default
        rt = resolve_runtime(TrainerCfg(accelerator="gpu", precision="32"))
        runtime.apply_tf32(rt)
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert rt.summary()["tf32"] is False
        rt = resolve_runtime(TrainerCfg(accelerator="gpu", precision="32", tf32=True))
        runtime.apply_tf32(rt)
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        assert rt.summary()["tf32"] is True
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        cpu = resolve_runtime(TrainerCfg(accelerator="cpu", precision="32", tf32=False))
        runtime.apply_tf32(cpu)
        assert torch.backends.cudnn.allow_tf32 and "tf32" not in cpu.summary() and not cpu.tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_cpu_auto_and_unknown_accelerators(monkeypatch, tmp_path):
    _bf16_gpu(monkeypatch, available=False)
    info = tmp_path / "cpuinfo"
    info.write_text("flags\t: fpu avx2\n")
    for name in ("cpu", "auto"):
        rt = resolve_runtime(TrainerCfg(accelerator=name, precision="auto"), info)
        assert (rt.device_type, rt.precision, rt.compute_dtype) == ("cpu", "32", None)
    rt = resolve_runtime(TrainerCfg(accelerator="cpu", precision="16-mixed"), info)
    assert (rt.precision, rt.compute_dtype) == ("bf16-mixed", torch.bfloat16)
    assert resolve_runtime(TrainerCfg(accelerator="mps", precision="auto")).precision == "32"
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        resolve_runtime(TrainerCfg(accelerator="gpu"))
    with pytest.raises(ConfigError, match="'tpu' is not known"):
        resolve_runtime(TrainerCfg(accelerator="tpu"))


def _recording_engine(monkeypatch, tmp_path, tiny, accelerator: str):
    """An Engine on a bf16 GPU whose Fabric is replaced by a CPU one that records what it was
    given; a randomly initialised teacher; the dict of Fabric's arguments."""
    import lightning.fabric

    from segkd.config.schema import config_from_dict
    from segkd.engine import Engine

    _bf16_gpu(monkeypatch)
    given: dict = {}
    real = lightning.fabric.Fabric

    def recording_fabric(**kw):
        given.update(kw)
        return real(**{**kw, "accelerator": "cpu"})

    monkeypatch.setattr(lightning.fabric, "Fabric", recording_fabric)
    raw = tiny(teacher={"model": {"arch": "unet", "encoder": "kd_resnet10"}},
               trainer={"precision": "auto", "accelerator": accelerator},
               stages=[{"name": "kd", "epochs": 1, "terms": [{"loss": "ce"}, {"loss": "kd"}],
                        "optimizer": {"name": "adam", "lr": 1e-3}}], eval={"splits": []})
    return Engine(config_from_dict(raw), tmp_path / "run"), given


def _teacher_conv_dtypes(eng) -> set:
    return {m.weight.dtype for m in eng.distiller.teacher.modules() if type(m) is nn.Conv2d}


def test_fabric_runs_the_precision_the_run_records_with_accelerator_gpu(monkeypatch, tmp_path,
                                                                       tiny, capsys):
    """``trainer.accelerator: gpu`` on a bf16 GPU: Fabric runs the precision the log,
    summary.json and the teacher's stored weights say."""
    eng, given = _recording_engine(monkeypatch, tmp_path, tiny, "gpu")
    eng.run()
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())["precision"]
    assert given["accelerator"] == "cuda"
    assert given["precision"] == saved["value"] == "bf16-mixed"
    assert "precision: bf16-mixed (auto: Fake GPU" in capsys.readouterr().err
    assert _teacher_conv_dtypes(eng) == {torch.bfloat16}


@pytest.mark.parametrize("accelerator", ["cuda", "auto"])
def test_fabric_and_the_run_read_one_runtime(monkeypatch, tmp_path, tiny, accelerator):
    eng, given = _recording_engine(monkeypatch, tmp_path, tiny, accelerator)
    eng._setup()  # what summary.json records, the teacher's weights
    assert (given["accelerator"], given["precision"]) == ("cuda", "bf16-mixed")
    assert eng.precision == eng.runtime.summary() and eng.precision["value"] == "bf16-mixed"
    assert _teacher_conv_dtypes(eng) == {torch.bfloat16}


# ----------------------------------------------------------------------------- one home each
def _code_trees() -> dict[str, ast.Module]:
    return {".".join(p.relative_to(PKG.parent).with_suffix("").parts): ast.parse(p.read_text())
            for p in sorted(PKG.rglob("*.py"))}


def _where(pred) -> set[str]:
    return {mod for mod, tree in _code_trees().items() if any(pred(n) for n in ast.walk(tree))}


def test_checkpoint_format_sha256_and_rank_zero_each_have_one_home():
    def const(value):
        return lambda n: isinstance(n, ast.Constant) and n.value == value

    assert _where(const("segkd-checkpoint")) == {"segkd.core.checkpoint"}
    assert _where(lambda n: isinstance(n, ast.ImportFrom) and (n.module or "").endswith("checkpoint")
                  and any(a.name in ("FORMAT", "VERSION") for a in n.names)) == set()
    assert _where(lambda n: isinstance(n, ast.Attribute) and n.attr == "sha256"
                  and isinstance(n.value, ast.Name) and n.value.id == "hashlib") == {"segkd.core.checkpoint"}
    assert _where(const("LOCAL_RANK")) == {"segkd.core.distributed"}
    defined = [mod for mod, tree in _code_trees().items() for n in tree.body
               if isinstance(n, ast.FunctionDef) and n.name in ("model_checkpoint", "is_rank_zero")]
    assert sorted(defined) == ["segkd.core.checkpoint", "segkd.core.distributed"]


def test_model_checkpoint_is_the_engines_and_the_importers():
    """A run's model checkpoint holds replacements and config; an imported teacher neither."""
    from segkd.core.checkpoint import FORMAT, is_segkd, model_checkpoint

    model = nn.Conv2d(3, 2, 1)
    spec = {"arch": "x", "kwargs": {}}
    run = model_checkpoint(model, spec, [], {"num_classes": 2}, {"seed": 0}, {"kind": "run"})
    assert list(run) == ["format", "version", "kind", "model", "replacements", "state_dict",
                         "meta", "config"] and run["kind"] == "run" and is_segkd(run)
    imported = model_checkpoint(model, spec, None, {"num_classes": 2})
    assert list(imported) == ["format", "version", "kind", "model", "state_dict", "meta"]
    assert imported["format"] == FORMAT and imported["kind"] == "model"
    assert torch.equal(imported["state_dict"]["weight"], model.weight.detach())


def test_one_sha256_for_files_buffers_and_downloads(tmp_path):
    import hashlib

    from segkd.core.checkpoint import sha256_file, sha256_hex

    f = tmp_path / "blob"
    f.write_bytes(b"segkd" * 1000)
    want = hashlib.sha256(f.read_bytes()).hexdigest()
    assert sha256_file(f) == sha256_hex([f.read_bytes()]) == sha256_hex([b"segkd"] * 1000) == want


def test_every_part_of_a_run_agrees_on_rank_zero(tmp_path, monkeypatch, capsys):
    """Under SLURM's second task the pre-flight warnings stay silent, as the run lock does."""
    from segkd.core.runlock import LOCK_NAME, run_lock
    from segkd.data import check

    for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(k, raising=False)
    check._say("first process")
    assert "first process" in capsys.readouterr().err
    monkeypatch.setenv("SLURM_PROCID", "1")
    check._say("second process")
    with run_lock(tmp_path, print):
        assert not (tmp_path / LOCK_NAME).exists()
    assert capsys.readouterr().err == ""
