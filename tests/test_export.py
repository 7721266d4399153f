"""ONNX / safetensors exports, predictors, comparison and refusal of malicious checkpoints."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from segkd.apps.deploy_compare import compare_models
from segkd.apps.export import (
    ExportError,
    OnnxPredictor,
    export_onnx,
    export_safetensors,
    load_predictor,
    load_safetensors_model,
    sidecar_path,
    smooth_image,
)
from segkd.core.checkpoint import load_checkpoint, save_checkpoint
from segkd.core.errors import CheckpointError
from segkd.engine.state import model_checkpoint
from segkd.models import create_model
from segkd.models.spec import apply_replacements, model_from_checkpoint

SIZE = (64, 64)
META = {"classes": ["sky", "road", "car"], "num_classes": 3, "mean": [0.5, 0.4, 0.3],
        "std": [0.2, 0.25, 0.3], "ignore_index": 255}
CHEAP = [{"paths": ["encoder.model.layer3.*.conv2"], "block": "dwsep",
          "options": {"kernel_size": 3, "dilation": 1}}]
SPECS = {
    "unet": ({"arch": "unet", "kwargs": {"encoder": "kd_resnet10", "num_classes": 3}}, []),
    "deeplab": ({"arch": "deeplabv3plus",
                 "kwargs": {"encoder": "resnet18", "num_classes": 3, "output_stride": 16}}, []),
    "cheap": ({"arch": "unet", "kwargs": {"encoder": "kd_resnet10", "num_classes": 3}}, CHEAP),
}
SEGKD = Path(sys.executable).with_name("segkd")


def _randomise_bn(model: torch.nn.Module) -> None:
    """Non-trivial BatchNorm statistics and affine weights, as in a trained model (timm zero-inits
    the last BN of each residual block, which would hide the residual branches)."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.copy_(0.5 + 0.5 * torch.rand(m.weight.shape, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Model checkpoints (unet, deeplabv3plus, cheap-conv unet) as segkd writes them."""
    root = tmp_path_factory.mktemp("ckpt")
    paths = {}
    for name, (spec, repl) in SPECS.items():
        torch.manual_seed(0)
        model = create_model(spec["arch"], **spec["kwargs"])
        apply_replacements(model, repl)
        _randomise_bn(model)
        cfg = {"data": {"size": list(SIZE)}}
        paths[name] = save_checkpoint(model_checkpoint(model, spec, repl, META, cfg), root / f"{name}.pt")
    return paths


def _torch_logits(ckpt: Path, x: torch.Tensor) -> np.ndarray:
    model = model_from_checkpoint(str(ckpt))[0].eval()
    with torch.no_grad():
        return model(x).numpy()


@pytest.fixture(scope="module")
def exported(ckpts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    """Each checkpoint exported once to a fixed-size ONNX -> {name: (path, info)}."""
    root = tmp_path_factory.mktemp("onnx")
    # size comes from the checkpoint's data.size
    return {name: (root / f"{name}.onnx", export_onnx(ckpt, root / f"{name}.onnx"))
            for name, ckpt in ckpts.items()}


@pytest.mark.parametrize("name", list(SPECS))
def test_onnx_export_parity(ckpts: dict[str, Path], exported: dict[str, tuple], name: str) -> None:
    out, info = exported[name]
    assert out.is_file() and info["input_size"] == list(SIZE) and info["parity"]["passed"]
    assert info["parity"]["rel_err"] < 1e-4 and info["parity"]["checks"][0]["batch"] == 2
    print(f"{name}: max abs {info['parity']['max_abs_err']:.3g} rel {info['parity']['rel_err']:.3g}")
    side = json.loads(sidecar_path(out).read_text())
    assert side["model"] == SPECS[name][0] and side["replacements"] == SPECS[name][1]
    assert side["meta"]["classes"] == META["classes"] and side["meta"]["mean"] == META["mean"]
    assert side["onnx"]["opset"] == 17 and side["meta"]["ignore_index"] == 255
    # the predictor equals PyTorch, also for a batch larger than the fixed export batch (1)
    x = smooth_image(3, SIZE, META["mean"], META["std"], seed=5)
    pred = OnnxPredictor(out)
    np.testing.assert_allclose(pred(x), _torch_logits(ckpts[name], x), atol=1e-4, rtol=1e-4)
    assert pred.meta["num_classes"] == 3 and pred.meta["size"] == list(SIZE)
    with pytest.raises(ExportError, match="dynamic-shape"):
        pred(smooth_image(1, (96, 64), META["mean"], META["std"]))


def test_onnx_dynamic_shape(ckpts: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "dyn.onnx"
    info = export_onnx(ckpts["cheap"], out, dynamic_shape=True, size=SIZE, opset=17)
    sizes = [c["size"] for c in info["parity"]["checks"]]
    assert sizes == [[64, 64], [96, 128]] and info["parity"]["rel_err"] < 1e-4
    sidecar_path(out).unlink()  # the metadata embedded in the .onnx suffices
    pred = OnnxPredictor(out)
    x = smooth_image(1, (96, 32), META["mean"], META["std"], seed=3)
    np.testing.assert_allclose(pred(x), _torch_logits(ckpts["cheap"], x), atol=1e-4, rtol=1e-4)
    assert pred.meta["dynamic_shape"] is True and pred.meta["classes"] == META["classes"]


def test_parity_failure_raises(ckpts: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="parity check failed"):
        export_onnx(ckpts["unet"], tmp_path / "u.onnx", tolerance=-1.0)


def test_safetensors_round_trip(ckpts: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "cheap.safetensors"
    info = export_safetensors(ckpts["cheap"], out)
    side = json.loads(sidecar_path(out).read_text())
    assert side["model"] == SPECS["cheap"][0] and side["replacements"] == CHEAP
    assert side["meta"]["classes"] == META["classes"] and info["tensors"] > 0
    ref = load_checkpoint(ckpts["cheap"])["state_dict"]
    for drop_sidecar in (False, True):
        if drop_sidecar:
            sidecar_path(out).unlink()  # rebuilt from the safetensors header alone
        model, meta = load_safetensors_model(out)
        state = model.state_dict()
        assert state.keys() == ref.keys() and all(torch.equal(state[k], ref[k]) for k in ref)
        assert meta["num_classes"] == 3


def test_safetensors_shared_weights(tmp_path: Path) -> None:
    """Tied weights are saved once (safetensors refuses shared storage) and restored."""
    from segkd.apps.export import _dedupe

    w = torch.randn(4, 4)
    tensors, aliases = _dedupe({"a.weight": w, "b.weight": w, "c": w[:2]})
    assert aliases == {"b.weight": "a.weight"} and set(tensors) == {"a.weight", "c"}
    assert tensors["c"].is_contiguous() and tensors["c"].data_ptr() != w.data_ptr()


def test_load_predictor_pt_and_onnx(ckpts: dict[str, Path], exported: dict[str, tuple]) -> None:
    onnx_path = exported["deeplab"][0]
    x = smooth_image(2, SIZE, META["mean"], META["std"], seed=1)
    outs = []
    for path in (ckpts["deeplab"], onnx_path):
        fwd, meta = load_predictor(path)
        assert meta["mean"] == META["mean"] and meta["classes"] == META["classes"]
        y = fwd(x)
        assert isinstance(y, torch.Tensor) and y.shape == (2, 3, *SIZE)
        outs.append(y)
    torch.testing.assert_close(outs[0], outs[1], atol=1e-4, rtol=1e-4)


def test_compare_models(ckpts: dict[str, Path], exported: dict[str, tuple]) -> None:
    # an .onnx student: its architecture comes from the sidecar, the teacher is exported on the fly
    rows = compare_models(str(ckpts["unet"]), str(exported["cheap"][0]), size=SIZE)
    assert [r["name"] for r in rows] == ["teacher", "student"]
    assert rows[1]["params"] < rows[0]["params"] and rows[1]["gflops"] < rows[0]["gflops"]
    assert all(r["latency_ms"] > 0 and r["onnx_latency_ms"] > 0 for r in rows)


def test_compare_models_at_a_deployment_setting(ckpts: dict[str, Path]) -> None:
    """bf16, batch 2, channels_last on the CPU; ONNX exported with a dynamic batch for it."""
    from segkd.apps.deploy_compare import LatencySetup

    setup = LatencySetup(dtype="bf16", batch=2, channels_last=True, warmup=1, iters=2)
    rows = compare_models(str(ckpts["unet"]), str(ckpts["deeplab"]), size=SIZE, onnx=True,
                          setup=setup)
    assert all(r["latency_ms"] > 0 and r["onnx_latency_ms"] > 0 for r in rows)


@pytest.mark.parametrize("setup,message", [
    ({"dtype": "int8"}, "fp32, bf16 or fp16"),
    ({"dtype": "fp16"}, "GPU measurement"),
    ({"batch": 0}, "batch must be >= 1"),
])
def test_latency_setup_errors_are_clear(setup: dict, message: str) -> None:
    from segkd.apps.deploy_compare import LatencySetup

    with pytest.raises(ExportError, match=message):
        LatencySetup(**setup).check()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_latency_without_cuda_is_a_clear_error(ckpts: dict[str, Path], segkd) -> None:
    from segkd.apps.deploy_compare import onnx_providers

    proc = segkd("info", "--compare", str(ckpts["unet"]), "--compare", str(ckpts["deeplab"]),
                 "--device", "cuda", "--size", "32,32")
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr and "Traceback" not in proc.stderr
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ExportError, match="onnxruntime-gpu"):
            onnx_providers("cuda")


def test_cli_export(ckpts: dict[str, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from segkd.cli import app
    from segkd.cli.export import register

    register(app)
    onnx_path, st_path = tmp_path / "s.onnx", tmp_path / "w" / "s.safetensors"
    res = CliRunner().invoke(app, ["export", str(ckpts["unet"]), "--onnx", str(onnx_path),
                                   "--safetensors", str(st_path), "--size", "64,64"])
    assert res.exit_code == 0, res.output
    assert "parity" in res.output and onnx_path.is_file() and st_path.is_file()
    side = json.loads(sidecar_path(onnx_path).read_text())
    assert "onnx" in side and "safetensors" not in side  # different folders, separate sidecars


class Evil:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def test_malicious_checkpoint_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "segkd-checkpoint", "model": {"arch": "unet"}, "x": Evil(marker)}, evil)
    with pytest.raises(CheckpointError, match="refusing"):
        load_checkpoint(evil)
    with pytest.raises(CheckpointError, match="refusing"):
        export_onnx(evil, tmp_path / "x.onnx")
    assert not marker.exists()
    env = {**os.environ, "COLUMNS": "1000"}  # rich wraps long lines at 80 columns without a tty
    proc = subprocess.run([str(SEGKD), "export", str(evil), "--onnx", str(tmp_path / "x.onnx")],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2 and "refusing" in proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert not marker.exists() and not (tmp_path / "x.onnx").exists()
    # the payload is live: an unsafe load would have executed it
    torch.load(evil, weights_only=False)
    assert marker.exists()
