"""``trainer.precision: auto``: bf16 only where the device computes it natively (the CPU's flags
decide on a CPU), the choice and its reason in the run's summary.json."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from segkd.engine.runtime import cpu_flags, resolve_precision

REPO = Path(__file__).resolve().parents[1]
XEON = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\n"
EPYC = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16\n"
SPR = "processor\t: 0\nflags\t\t: fpu avx512f amx_bf16 amx_tile\n"


@pytest.mark.parametrize("info, want", [(XEON, "32"), (EPYC, "bf16-mixed"), (SPR, "bf16-mixed"),
                                        ("", "32")])
def test_auto_on_cpu_follows_the_bf16_flags(tmp_path, info, want):
    f = tmp_path / "cpuinfo"
    f.write_text(info)
    value, reason = resolve_precision("auto", "cpu", f)
    assert value == want and reason.startswith("auto: ")
    assert ("natively" in reason) is (want == "bf16-mixed")


def test_explicit_precisions_pass_through(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text(XEON)
    assert resolve_precision("bf16-mixed", "cpu", f) == ("bf16-mixed", "set in the config")
    assert resolve_precision("16-mixed", "cpu", f)[0] == "bf16-mixed"
    assert resolve_precision("16-mixed", "cuda", f)[0] == "16-mixed"
    assert resolve_precision("auto", "mps", f)[0] == "32"
    assert cpu_flags(tmp_path / "missing") == set()


def test_recipes_default_to_auto():
    for base in sorted((REPO / "configs").glob("*/_base.yaml")):
        assert yaml.safe_load(base.read_text())["trainer"]["precision"] == "auto", base


def test_summary_records_the_choice_and_reason(tmp_path, tiny):
    from segkd.config.schema import config_from_dict
    from segkd.engine import Engine

    cfg = config_from_dict(tiny(trainer={"precision": "auto"}, eval={"splits": []}))
    Engine(cfg, tmp_path / "run").run()
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())["precision"]
    value, reason = resolve_precision("auto", "cpu")
    assert saved == {"requested": "auto", "value": value, "reason": reason}


@pytest.mark.parametrize("bf16, want", [(True, "bf16-mixed"), (False, "16-mixed")])
def test_auto_on_cuda_follows_native_bf16(monkeypatch, bf16, want):
    import torch

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Some GPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    value, reason = resolve_precision("auto", "cuda")
    assert value == want and "Some GPU" in reason
