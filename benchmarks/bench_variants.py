"""The variants of the step benchmark: one training step each, on deep copies of the same models.

Every variant gets the same treatment: the student compiled with ``--compile`` (the teacher never
is, in any variant), the same batches, precision and memory format, and the process-wide malloc
settings of ``bench_step.py``. Two settings distinguish "defaults" from "tuned" peers:

    fused Adam                       (segkd's build_optimizer uses it wherever torch allows)
    teacher weights in compute dtype (conv/linear weights stored in bf16 under bf16 autocast,
                                      instead of re-cast from float32 at every step)

segkd applies both itself; ``bare_kd`` and ``td_kd`` are the peers as written with defaults,
``bare_kd_tuned`` and ``td_kd_tuned`` with both settings, written the way a user would (for
torchdistill: ``fused: True`` in its optimizer kwargs, and the teacher cast before it is handed
over). The floor variants (``student``, ``student_kd``, ``teacher``) are tuned too.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
KD_T = 2.0  # temperature of every KD variant (the camvid kd.yaml recipe)
Step = Callable[[list[dict]], None]
CACHED = "segkd_kd_cached"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def autocast(device: torch.device, precision: str):
    """bf16 autocast for ``precision == "bf16"``, else a disabled autocast."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def teacher_to_compute_dtype(teacher: nn.Module, dtype: torch.dtype) -> nn.Module:
    """What a user writes to keep a frozen teacher's conv/linear weights in the autocast dtype
    (BatchNorm stays float32, as autocast computes it)."""
    for m in teacher.modules():
        if type(m) in (nn.Conv2d, nn.Linear, nn.ConvTranspose2d):
            m.to(dtype)
    return teacher


@dataclass
class Setup:
    """Everything a variant builder needs; models are copied per variant."""

    teacher: nn.Module
    student: nn.Module
    device: torch.device
    precision: str
    channels_last: bool
    compile: bool
    ignore_index: int
    pair: str

    def models(self, tuned_teacher: bool = False) -> tuple[nn.Module, nn.Module]:
        """Fresh deep copies (teacher frozen, eval) on the device, in the memory format; with
        ``tuned_teacher`` the teacher's weights are in the compute dtype (bf16 under bf16)."""
        fmt = torch.channels_last if self.channels_last else torch.preserve_format
        t = copy.deepcopy(self.teacher).to(self.device, memory_format=fmt).eval()
        s = copy.deepcopy(self.student).to(self.device, memory_format=fmt).train()
        if tuned_teacher and self.precision == "bf16":
            teacher_to_compute_dtype(t, torch.bfloat16)
        return t, s

    def student_compiled(self, s: nn.Module) -> nn.Module:
        """``s`` compiled in place with ``--compile`` (every variant compiles its student)."""
        if self.compile:
            s.compile()
        return s

    def adam(self, params, fused: bool = False) -> torch.optim.Optimizer:
        kw = {"fused": True} if fused else {}
        return torch.optim.Adam([p for p in params if p.requires_grad], lr=1e-3, weight_decay=1e-4,
                                **kw)


def pixel_kd_bare(s: torch.Tensor, t: torch.Tensor, valid: torch.Tensor, temp: float) -> torch.Tensor:
    """T^2 * mean over valid pixels of KL(softmax(t/T) || softmax(s/T)), float32."""
    log_ps = F.log_softmax(s.float() / temp, dim=1)
    log_pt = F.log_softmax(t.float() / temp, dim=1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(1)
    return temp**2 * (kl * valid).sum() / valid.sum().clamp(min=1)


def _optimizer_step(loss: torch.Tensor, opt: torch.optim.Optimizer) -> None:
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def make_student(su: Setup) -> Step:
    """Tuned student step: forward, CE, backward, fused Adam (segkd_ce's reference)."""
    _, s = su.models()
    su.student_compiled(s)
    opt = su.adam(s.parameters(), fused=True)

    def run(batches: list[dict]) -> None:
        for b in batches:
            with autocast(su.device, su.precision):
                logits = s(b["image"])
            _optimizer_step(F.cross_entropy(logits.float(), b["mask"], ignore_index=su.ignore_index), opt)
    return run


def make_student_kd(su: Setup, batches: list[dict]) -> Step:
    """The floor's student half: student step + CE + KD against teacher logits computed once
    beforehand (kept in the compute dtype, as a cache would), fused Adam."""
    t, s = su.models(tuned_teacher=True)
    su.student_compiled(s)
    opt = su.adam(s.parameters(), fused=True)
    with torch.no_grad(), autocast(su.device, su.precision):
        cached = {id(b["image"]): t(b["image"]) for b in batches}
    del t

    def run(chunk: list[dict]) -> None:
        for b in chunk:
            x, y = b["image"], b["mask"]
            with autocast(su.device, su.precision):
                logits = s(x)
            loss = F.cross_entropy(logits.float(), y, ignore_index=su.ignore_index) \
                + pixel_kd_bare(logits, cached[id(x)], y != su.ignore_index, KD_T)
            _optimizer_step(loss, opt)
    return run


def make_teacher(su: Setup) -> Step:
    """Teacher forward under no_grad, weights in the compute dtype: the floor's other half."""
    t, _ = su.models(tuned_teacher=True)

    def run(batches: list[dict]) -> None:
        for b in batches:
            with torch.no_grad(), autocast(su.device, su.precision):
                t(b["image"])
    return run


def make_bare_kd(su: Setup, tuned: bool = False) -> Step:
    """CE + pixel KD (T=2, weight 1), written by hand; ``tuned``: fused Adam and the teacher's
    weights in the compute dtype."""
    t, s = su.models(tuned_teacher=tuned)
    su.student_compiled(s)
    opt = su.adam(s.parameters(), fused=tuned)

    def run(batches: list[dict]) -> None:
        for b in batches:
            x, y = b["image"], b["mask"]
            with autocast(su.device, su.precision):
                with torch.no_grad():
                    t_logits = t(x)
                logits = s(x)
            loss = F.cross_entropy(logits.float(), y, ignore_index=su.ignore_index) \
                + pixel_kd_bare(logits, t_logits, y != su.ignore_index, KD_T)
            _optimizer_step(loss, opt)
    return run


def segkd_terms(method: str, pair: str) -> list:
    """segkd Terms of the camvid recipes: ce (+ kd T=2 | cwd tau=4 w=3 | ofd from ofd.yaml)."""
    from segkd.distill.distiller import Term

    ce = Term(name="ce", loss="ce", teacher=None)
    if method == "ce":
        return [ce]
    if method == "kd":
        return [ce, Term(name="kd", loss="kd", options={"temperature": KD_T})]
    if method == "cwd":
        return [ce, Term(name="cwd", loss="cwd", weight=3.0, options={"tau": 4.0})]
    if method == "ofd" and pair == "unet":
        from segkd.config.schema import load_config
        from segkd.engine.build import stage_terms

        return stage_terms(load_config(REPO / "configs" / "camvid" / "ofd.yaml").stages[-1])
    raise SystemExit(f"segkd method '{method}' is not available for the {pair} pair")


def _segkd_step(su: Setup, method: str):
    """segkd's own path: Distiller.configure, build_optimizer, Fabric.setup. Returns (fabric,
    distiller, wrapped module, optimizer, run(batches, teacher_cache=None))."""
    from segkd.config.schema import OptimCfg, TrainerCfg
    from segkd.distill.distiller import Distiller
    from segkd.engine.fabric import make_fabric
    from segkd.engine.logger import RunLogger
    from segkd.engine.optim import build_optimizer
    from segkd.engine.runtime import autocast_dtype
    from segkd.engine.state import StageRun
    from segkd.engine.train import EpochSpec, train_epoch

    t, s = su.models()
    prec = "bf16-mixed" if su.precision == "bf16" else "32"
    fabric = make_fabric(TrainerCfg(precision=prec, accelerator=su.device.type, progress=False))
    d = Distiller(s, t if method != "ce" else None, ignore_index=su.ignore_index)
    d.store_teacher_weights_in(autocast_dtype(prec))  # as Engine does (build_distiller)
    d.configure(segkd_terms(method, su.pair), torch.zeros(2, 3, 64, 64, device=su.device))
    (getattr(d, "refresh_frozen", None) or d.refresh_frozen_bn)()  # the name changed once
    su.student_compiled(s)
    opt = build_optimizer(d, OptimCfg(name="adam", lr=1e-3, weight_decay=1e-4))
    module, opt = fabric.setup(d, opt, move_to_device=True)
    logger = RunLogger(None, False, False)

    def run(batches: list[dict], teacher_cache=None) -> None:
        run_ = StageRun(module=module, opt=opt, loader=batches, iters=len(batches),
                        teacher_cache=teacher_cache)
        train_epoch(fabric, run_, EpochSpec(labeled=True, title="bench", where="bench",
                                            channels_last=su.channels_last, log_every=10**9),
                    logger)
    return fabric, d, run


def make_segkd(su: Setup, method: str) -> Step:
    """segkd's training step (Distiller + Fabric + engine.train.train_epoch) for ``method``."""
    return _segkd_step(su, method)[2]


def make_segkd_cached(su: Setup, batches: list[dict]) -> Step:
    """segkd_kd with the teacher cache (``teacher.cache``): the teacher's outputs for every benchmark
    batch computed beforehand as ``build_teacher_cache`` computes them (the run's precision
    plugin and autocast, ``Distiller.teacher_outputs``), held in segkd's in-memory cache rows,
    and read through ``StageCache.batch`` in ``train_epoch``, as a cached run reads them."""
    from segkd.distill.cache_store import ArraySpec, MemoryArray
    from segkd.distill.teacher_cache import _TORCH_DTYPE_NAMES, CachedPosition, StageCache, _channels_last

    fabric, d, run = _segkd_step(su, "kd")
    precision = fabric.strategy.precision
    outs = []
    with torch.no_grad(), fabric.autocast():
        for b in batches:
            outs.append(d.teacher_outputs(precision.convert_input(b["image"])))
    rows = sum(len(b["image"]) for b in batches)
    arrays, layout = {}, {}
    for pos, t in outs[0].items():
        arrays[pos] = MemoryArray(ArraySpec(f"{pos[0]}.{pos[1]}", rows, tuple(t.shape[1:]),
                                            _TORCH_DTYPE_NAMES.get(t.dtype, "float32")))
        layout[pos] = _channels_last(t)
    indexed, start = {}, 0
    for b, out in zip(batches, outs):
        idx = list(range(start, start + len(b["image"])))
        for pos, t in out.items():
            arrays[pos].write(idx, t)
        indexed[id(b["image"])] = {**b, "index": torch.tensor(idx),
                                   "view": torch.zeros(len(idx), dtype=torch.long)}
        start += len(idx)
    cache = StageCache({p: CachedPosition(arrays[p], layout[p]) for p in arrays}, views=1)

    def step(chunk: list[dict]) -> None:
        run([indexed[id(b["image"])] for b in chunk], cache)
    return step


def torchdistill_available() -> bool:
    try:
        import torchdistill  # noqa: F401
    except ImportError:
        return False
    return True


def make_torchdistill(su: Setup, size: tuple[int, int], tuned: bool = False) -> Step:
    """torchdistill's DistillationBox: KDLoss (CE + beta * T^2 * KL), its own forward_process
    and post_forward_process (backward, Adam step). ``beta = 1/(H*W)`` turns its batchmean KL
    into the per-pixel mean that segkd and the bare loop use; it does not mask void pixels.
    ``tuned``: ``fused: True`` in its optimizer kwargs, the teacher cast before handing it over."""
    from torchdistill.core.distillation import get_distillation_box

    t, s = su.models(tuned_teacher=tuned)
    kd = {"student_module_path": ".", "student_module_io": "output", "teacher_module_path": ".",
          "teacher_module_io": "output", "temperature": KD_T, "alpha": 1.0,
          "beta": 1.0 / (size[0] * size[1]), "reduction": "batchmean",
          "ignore_index": su.ignore_index}
    adam = {"lr": 1e-3, "weight_decay": 1e-4, **({"fused": True} if tuned else {})}
    cfg = {"num_epochs": 1, "teacher": {"requires_grad": False, "forward_proc": "forward_batch_only"},
           "student": {"forward_proc": "forward_batch_only"},
           "optimizer": {"key": "Adam", "kwargs": adam},
           "criterion": {"key": "WeightedSumLoss", "kwargs": {"sub_terms": {
               "kd": {"criterion": {"key": "KDLoss", "kwargs": kd}, "weight": 1.0}}}}}
    box = get_distillation_box(t, s, {}, cfg, su.device, None, False, 1.0)
    su.student_compiled(box.student_model)
    box.pre_epoch_process(epoch=0)

    def run(batches: list[dict]) -> None:
        for b in batches:
            with autocast(su.device, su.precision):
                loss = box.forward_process(b["image"], b["mask"], supp_dict={})
            box.post_forward_process(loss=loss)
    return run


def teacher_cache_available() -> bool:
    """Whether the segkd on the path has the teacher cache (``teacher.cache``; an older checkout
    profiled through PYTHONPATH may not)."""
    from segkd.config.schema import TeacherCfg

    try:
        import segkd.distill.teacher_cache  # noqa: F401
    except ImportError:
        return False
    return "cache" in TeacherCfg.model_fields


def build_variants(su: Setup, names: list[str], size: tuple[int, int], batches: list[dict],
                   require_td: bool = False) -> tuple[dict[str, Step], dict[str, str]]:
    """(name -> step function, name -> why it was skipped) for the requested variants.
    torchdistill's rows are skipped when it is not importable, unless ``require_td``."""
    out: dict[str, Step] = {}
    skipped: dict[str, str] = {}
    for name in names:
        if name == "student":
            out[name] = make_student(su)
        elif name == "student_kd":
            out[name] = make_student_kd(su, batches)
        elif name == "teacher":
            out[name] = make_teacher(su)
        elif name in ("bare_kd", "bare_kd_tuned"):
            out[name] = make_bare_kd(su, tuned=name.endswith("_tuned"))
        elif name == CACHED:
            if teacher_cache_available():
                out[name] = make_segkd_cached(su, batches)
            else:
                skipped[name] = ("not available: segkd's teacher cache (teacher.cache) "
                                 "is not in this checkout")
        elif name.startswith("segkd_"):
            out[name] = make_segkd(su, name.split("_", 1)[1])
        elif name in ("td_kd", "td_kd_tuned"):
            if torchdistill_available():
                out[name] = make_torchdistill(su, size, tuned=name.endswith("_tuned"))
            elif require_td:
                raise SystemExit("torchdistill is not importable and --require-td is set: pip "
                                 "install -r benchmarks/requirements-torchdistill.txt (separate "
                                 "venv, see benchmarks/README.md)")
            else:
                skipped[name] = "not installed"
        else:
            raise SystemExit(f"unknown variant '{name}'")
    for name, why in skipped.items():
        print(f"{name}: {why}; skipping" if name == CACHED else
              f"torchdistill: {why} (pip install -r benchmarks/requirements-torchdistill.txt in a "
              f"separate venv); skipping {name}")
    return out, skipped
