"""Deployment: ONNX / safetensors exports (parity checked), predictors, teacher-student comparison.

    info = export_onnx("best.pt", "s.onnx", dynamic_shape=True)  # raises ExportError on bad parity
    export_safetensors("best.pt", "s.safetensors")
    model, meta = load_safetensors_model("s.safetensors"); logits = OnnxPredictor("s.onnx")(images)
    fwd, meta = load_predictor("best.pt" | "s.onnx" | "s.safetensors")

Each export writes a sidecar JSON (``s.onnx`` -> ``s.json``; an ONNX and a safetensors export of
the same model share it) so the weights are usable without the training config::

    {"format": "segkd-export", "version": 1, "model": {"arch", "kwargs"}, "replacements": [...],
     "meta": {"classes", "num_classes", "mean", "std", "ignore_index", "size"},
     "onnx": {"file", "opset", "input_size", "dynamic_shape", "exporter", "parity"},
     "safetensors": {"file", "aliases", "tensors"}}

The same JSON is embedded in the file (ONNX ``metadata_props`` / safetensors header, key ``segkd``).
Nothing here unpickles anything but tensors (``load_checkpoint`` uses ``weights_only=True``).
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segkd.core.checkpoint import load_strict, nonfinite_keys
from segkd.core.constants import IMAGENET_MEAN, IMAGENET_STD
from segkd.core.errors import NonFiniteLoss, SegkdError
from segkd.models.spec import build_from_spec, model_from_checkpoint

EXPORT_FORMAT = "segkd-export"
Size = tuple[int, int]


class ExportError(SegkdError):
    """An export that failed or does not match PyTorch (parity), or an unusable exported file."""


def sidecar_path(path: str | Path) -> Path:
    """The JSON beside an exported file: ``x.onnx`` / ``x.safetensors`` -> ``x.json``."""
    return Path(path).with_suffix(".json")


def check_export_target(path: str | Path, what: str) -> Path:
    """ExportError now, before any model is loaded, when the export ``path`` or its sidecar JSON
    cannot be written: a folder or a read-only file in the way, an unwritable folder, a device,
    or a name whose sidecar would be the export itself (``x.json``)."""
    from segkd.core.writable import check_output_file

    out, side = Path(path), sidecar_path(path)
    if out.exists() and not out.is_file() and not out.is_dir():
        raise ExportError(f"cannot write {what} {out}: it is not a regular file (an export is a "
                          "file, with its description beside it); give a file path")
    if side == out:
        raise ExportError(f"cannot write {what} {out}: its description {side.name} would "
                          "overwrite it; name the file .onnx / .safetensors")
    check_output_file(out, what)
    check_output_file(side, f"{what} description")
    return out


def _refuse_nonfinite(model: nn.Module, source: str | Path, ckpt: dict) -> None:
    """NonFiniteLoss, before anything is written, when a parameter or buffer holds NaN/Inf."""
    bad = nonfinite_keys(model.state_dict())
    if not bad:
        return
    sel, prog = ckpt.get("selected") or {}, ckpt.get("progress") or {}
    when = (f" (stage '{sel.get('stage')}' epoch {sel.get('epoch')})" if sel else
            f" (stage {prog.get('stage', 0) + 1} epoch {prog.get('epoch')})" if prog else "")
    more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
    raise NonFiniteLoss(f"{source}{when}: {bad[0]}{more} hold NaN/Inf, so nothing was exported; "
                        "the run that wrote it diverged: export an earlier checkpoint, or train "
                        "again with a lower learning rate")


def _jsonable(obj: Any) -> Any:
    """Tensors / numpy values / tuples -> plain JSON types (anything else unknown -> str)."""
    def default(o: Any) -> Any:
        return o.tolist() if isinstance(o, (torch.Tensor, np.ndarray, np.generic)) else str(o)
    return json.loads(json.dumps(obj, default=default))


def _config_size(ckpt: dict) -> Size | None:
    """``data.size`` (else ``data.crop``) of the checkpoint's resolved config, if any."""
    data = (ckpt.get("config") or {}).get("data") or {}
    hw = data.get("size") or data.get("crop")
    return (int(hw[0]), int(hw[1])) if hw else None


def _describe(ckpt: dict, meta: dict, size: Size | None) -> dict:
    """The sidecar's common part: model spec, replacements, and the checkpoint meta completed with
    defaults (classes, num_classes, mean, std, ignore_index, size = input size for predict)."""
    spec, out = _jsonable(ckpt["model"]), _jsonable(dict(meta))
    num = out.get("num_classes") or spec.get("kwargs", {}).get("num_classes")
    out.update(num_classes=num, mean=list(out.get("mean") or IMAGENET_MEAN),
               std=list(out.get("std") or IMAGENET_STD), size=list(size) if size else None)
    out.setdefault("classes", [str(i) for i in range(num or 0)])
    out.setdefault("ignore_index", 255)
    return {"model": spec, "replacements": _jsonable(ckpt.get("replacements") or []), "meta": out}


def _write_sidecar(path: Path, base: dict, section: str, info: dict) -> dict:
    """Write (or merge a ``section`` into) the sidecar JSON for ``path``; return the document."""
    side = sidecar_path(path)
    doc = {"format": EXPORT_FORMAT, "version": 1, **base}
    try:
        old = json.loads(side.read_text()) if side.is_file() else {}
    except (OSError, ValueError):
        old = {}
    if old.get("format") == EXPORT_FORMAT and all(old.get(k) == base[k] for k in ("model", "replacements")):
        doc = {**old, **base}  # same model: keep the other export's section
    doc[section] = info
    side.write_text(json.dumps(doc, indent=2))
    return doc


def _read_sidecar(path: Path, embedded: str | None) -> dict:
    """The sidecar JSON of an exported file, else the copy embedded in the file itself."""
    side = sidecar_path(path)
    text = side.read_text() if side.is_file() else embedded
    if not text:
        raise ExportError(f"{path}: no {side.name} beside it and no segkd metadata inside; "
                          "export it with `segkd export`")
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT or "model" not in doc:
        raise ExportError(f"{side} (or the copy inside {path.name}) is not a segkd export description")
    return doc


def smooth_image(batch: int, size: Size, mean: Sequence[float], std: Sequence[float],
                 seed: int = 0) -> torch.Tensor:
    """A natural-looking test input: smooth random colours in [0, 1], normalised -> [N,3,H,W]."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(batch, 3, max(size[0] // 8, 2), max(size[1] // 8, 2), generator=g)
    img = F.interpolate(low, size=size, mode="bicubic", align_corners=False).clamp(0, 1)
    img = img + 0.02 * torch.randn(img.shape, generator=g)  # a little texture
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    return ((img - m) / s).float()


def _errors(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """max |a-b| and ||a-b|| / ||b|| (b = reference)."""
    diff, ref = a.astype(np.float64) - b, float(np.linalg.norm(b.astype(np.float64)))
    return {"max_abs_err": float(np.abs(diff).max()), "rel_err": float(np.linalg.norm(diff)) / (ref or 1.0)}


def _torch_onnx_export(model: nn.Module, x: torch.Tensor, out: Path, opset: int,
                       dynamic_shape: bool) -> str:
    """torch.onnx.export, TorchScript exporter first, dynamo exporter as fallback -> its name."""
    axes = {0: "batch", 2: "height", 3: "width"}
    kw = dict(input_names=["image"], output_names=["logits"], opset_version=opset, verbose=False,
              dynamic_axes={"image": axes, "logits": axes} if dynamic_shape else None)
    errors = []
    for dynamo in (False, True):
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (x,), str(out), dynamo=dynamo, **kw)
            return "dynamo" if dynamo else "torchscript"
        except Exception as err:  # exporter missing or failing: try the other one
            errors.append(f"{'dynamo' if dynamo else 'torchscript'}: {str(err).splitlines()[0][:300]}")
    raise ExportError(f"ONNX export to {out} failed:\n  " + "\n  ".join(errors))


class OnnxPredictor:
    """Run an exported ``.onnx`` with onnxruntime: ``logits = predictor(images)``.

    ``images``: float32 ``[N,3,H,W]`` (numpy or torch), normalised with ``meta["mean"/"std"]``.
    Returns numpy float32 logits ``[N,C,H,W]``. A model exported with a fixed batch of 1 is run
    image by image; a fixed-size model refuses other sizes with a clear message. ``doc``
    replaces the sidecar JSON (else read beside the file or from its metadata).
    """

    def __init__(self, onnx_path: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",),
                 threads: int | None = None, doc: dict | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(onnx_path)
        if not self.path.is_file():
            raise ExportError(f"ONNX model not found: {self.path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or 0  # 0: onnxruntime's default
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=list(providers))
        except Exception as err:
            raise ExportError(f"cannot load {self.path}: {str(err).splitlines()[0]}") from None
        embedded = self.session.get_modelmeta().custom_metadata_map.get("segkd")
        self.doc = doc if doc is not None else _read_sidecar(self.path, embedded)
        inp = self.session.get_inputs()[0]
        self.input_name, self.input_shape = inp.name, list(inp.shape)

    @property
    def meta(self) -> dict:
        """classes, num_classes, mean, std, ignore_index, size (the fixed input size of a
        fixed-shape export, else the training data.size or None), input_size, dynamic_shape."""
        onnx, meta = self.doc.get("onnx", {}), dict(self.doc.get("meta", {}))
        if onnx.get("input_size") and not onnx.get("dynamic_shape"):
            meta["size"] = onnx["input_size"]
        return {**meta, "input_size": onnx.get("input_size"), "dynamic_shape": onnx.get("dynamic_shape")}

    def _check(self, x: np.ndarray) -> None:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ExportError(f"{self.path.name}: expected images [N,3,H,W], got {list(x.shape)}")
        if any(isinstance(w, int) and w != n for w, n in zip(self.input_shape[2:], x.shape[2:])):
            raise ExportError(f"{self.path.name} was exported for {self.input_shape[2]}x"
                              f"{self.input_shape[3]} inputs, got {x.shape[2]}x{x.shape[3]}; resize "
                              "the input or export with --dynamic-shape")

    def __call__(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        if isinstance(images, torch.Tensor):
            images = images.detach().cpu().numpy()
        x = np.ascontiguousarray(images, dtype=np.float32)
        self._check(x)
        if self.input_shape[0] == x.shape[0] or not isinstance(self.input_shape[0], int):
            return self.session.run(None, {self.input_name: x})[0]
        return np.concatenate([self.session.run(None, {self.input_name: x[i:i + 1]})[0]
                               for i in range(x.shape[0])])


def _parity(onnx_path: Path, model: nn.Module, meta: dict, sizes: list[Size]) -> dict:
    """onnxruntime vs PyTorch eval logits on smooth batch-2 images at each size -> worst errors."""
    pred = OnnxPredictor(onnx_path, doc={})
    checks = []
    for i, size in enumerate(sizes):
        x = smooth_image(2, size, meta["mean"], meta["std"], seed=i)
        with torch.no_grad():
            ref = model(x).numpy()
        checks.append({"size": list(size), "batch": 2, **_errors(pred(x), ref)})
    return {"max_abs_err": max(c["max_abs_err"] for c in checks),
            "rel_err": max(c["rel_err"] for c in checks), "checks": checks}


def _embed_onnx_metadata(path: Path, doc: dict) -> None:
    """Store the sidecar JSON in the model's ``metadata_props`` (graph untouched)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)  # a fresh export: no "segkd" key yet
    proto.metadata_props.add(key="segkd", value=json.dumps(doc))
    onnx.save(proto, str(path))


def export_onnx(checkpoint_path: str | Path, out_path: str | Path, opset: int = 17,
                dynamic_shape: bool = False, size: Size | None = None,
                tolerance: float = 1e-4) -> dict:
    """Export a checkpoint to ONNX (input ``image`` [N,3,H,W] normalised, output ``logits``), check it.

    ``size``: default ``data.size`` / ``data.crop`` of the checkpoint, else 512x512. A fixed export
    has batch 1; ``dynamic_shape`` makes batch, height and width dynamic (parity is then also
    checked at a second size). ``ExportError`` when ``||onnx - torch|| / ||torch|| > tolerance``.
    Returns the sidecar's ``onnx`` section plus ``path`` and ``sidecar``."""
    check_export_target(out_path, "--onnx")
    model, meta, ckpt = model_from_checkpoint(str(checkpoint_path))
    _refuse_nonfinite(model, checkpoint_path, ckpt)
    net = model.eval()
    size = tuple(size) if size else (_config_size(ckpt) or (512, 512))
    base = _describe(ckpt, meta, _config_size(ckpt))
    meta = base["meta"]
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    batch = 2 if dynamic_shape else 1
    exporter = _torch_onnx_export(net, smooth_image(batch, size, meta["mean"], meta["std"]), out,
                                  opset, dynamic_shape)
    sizes = [size] + ([(size[0] + 32, size[1] + 64)] if dynamic_shape else [])
    parity = {**_parity(out, net, meta, sizes), "tolerance": tolerance}
    parity["passed"] = bool(parity["rel_err"] <= tolerance)
    info = {"file": out.name, "opset": opset, "input_size": list(size),
            "dynamic_shape": dynamic_shape, "exporter": exporter, "parity": parity}
    doc = _write_sidecar(out, base, "onnx", info)
    _embed_onnx_metadata(out, doc)
    if not parity["passed"]:
        raise ExportError(f"ONNX parity check failed for {out}: relative error {parity['rel_err']:.3g} "
                          f"> tolerance {tolerance:g} (max abs {parity['max_abs_err']:.3g})")
    return {**info, "path": str(out), "sidecar": str(sidecar_path(out))}


def _dedupe(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Contiguous CPU copies with storage unshared; exact duplicates (tied weights) -> aliases."""
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}  # dropped key -> kept key
    seen: dict[tuple, str] = {}  # (storage, offset, shape, stride, dtype) -> first key
    for key, t in state.items():
        t = t.detach().cpu()
        ident = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if t.numel() and ident in seen:
            aliases[key] = seen[ident]
        else:
            seen[ident], tensors[key] = key, t.contiguous().clone()
    return tensors, aliases


def export_safetensors(checkpoint_path: str | Path, out_path: str | Path) -> dict:
    """Write the checkpoint's weights as safetensors + the sidecar JSON (spec, replacements, meta)."""
    from safetensors.torch import save_file

    check_export_target(out_path, "--safetensors")
    model, meta, ckpt = model_from_checkpoint(str(checkpoint_path))
    _refuse_nonfinite(model, checkpoint_path, ckpt)
    tensors, aliases = _dedupe(model.state_dict())
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    base = _describe(ckpt, meta, _config_size(ckpt))
    info = {"file": out.name, "aliases": aliases, "tensors": len(tensors)}
    doc = _write_sidecar(out, base, "safetensors", info)
    save_file(tensors, str(out), metadata={"segkd": json.dumps(doc)})
    _default_mode(out)
    return {**info, "path": str(out), "sidecar": str(sidecar_path(out))}


def _default_mode(path: Path) -> None:
    """Give ``path`` the mode a plain ``open()`` would (0666 less the umask, 0644 as a rule):
    safetensors writes its file 0600, unlike the .onnx, .json and .pt files beside it."""
    umask = os.umask(0o022)  # reading the umask means setting it; restored on the next line
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def load_safetensors_model(path: str | Path) -> tuple[nn.Module, dict]:
    """Rebuild the architecture from the sidecar (or embedded) JSON and load the weights strictly."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"safetensors file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            embedded = (f.metadata() or {}).get("segkd")
            state = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as err:
        raise ExportError(f"cannot read {path}: {str(err).splitlines()[0]}") from None
    doc = _read_sidecar(path, embedded)
    for key, target in doc.get("safetensors", {}).get("aliases", {}).items():
        state[key] = state[target]
    model = build_from_spec(doc["model"], doc.get("replacements"))
    load_strict(model, state, str(path))
    return model.eval(), doc.get("meta", {})


def load_predictor(path: str | Path, device: str = "cpu"
                   ) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict]:
    """``(fwd, meta)`` for a segkd checkpoint (.pt / run dir), an .onnx or a .safetensors export.

    ``fwd`` maps a normalised float batch ``[N,3,H,W]`` to logits ``[N,C,H,W]`` (torch, on the
    input's device); ``meta`` has classes, num_classes, mean, std, ignore_index, size.
    """
    path = Path(path)
    if path.suffix == ".onnx":
        pred = OnnxPredictor(path)
        return (lambda x: torch.from_numpy(pred(x)).to(x.device)), pred.meta
    if path.suffix == ".safetensors":
        model, meta = load_safetensors_model(path)
    else:
        model, meta, ckpt = model_from_checkpoint(str(path))
        meta = _describe(ckpt, meta, _config_size(ckpt))["meta"]
    net = model.to(device).eval()

    def fwd(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return net(x.to(device)).to(x.device)
    return fwd, meta
