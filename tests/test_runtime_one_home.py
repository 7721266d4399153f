"""One home each: the run's device and precision (one Runtime that Fabric, the Distiller and
summary.json read), the checkpoint dict and its format, the sha256 helper, the rank-zero check."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from segkd.config import TrainerCfg
from segkd.errors import ConfigError
from segkd.engine import runtime
from segkd.engine.runtime import resolve_runtime


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
    assert rt.summary() == {"requested": "auto", "value": "bf16-mixed", "reason": rt.reason}


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

    from segkd.config import config_from_dict
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
