"""Training-step benchmark: segkd's distillation step side by side with a bare PyTorch loop and
torchdistill, on the same models, data, precision and memory format.

Variants, measured in interleaved rounds (A B C ... A B C ...; median per variant), so that
background load slows every variant alike:

    student    bare student step: forward, CE, backward, Adam step
    teacher    teacher forward under no_grad
    segkd_ce   the same supervised step through segkd (Distiller + engine.train.train_epoch)
    segkd_kd   CE + pixel KD through segkd's Distiller and the engine's hot loop
    segkd_ofd  CE + OFD (hooks, connectors; UNet pair) or segkd_cwd (CWD on logits)
    bare_kd    the same CE + KD step written by hand
    td_kd      torchdistill's DistillationBox with KDLoss (when torchdistill is importable)

    python benchmarks/bench_step.py --pair unet --device cpu --precision bf16 --batch 8 \
        --size 192,256 --iters 5 --json out.json

Each variant owns deep copies of the initial student and teacher (same weights), so hooks or
optimiser state of one never touch another. Batches are loaded before timing (real CamVid via
segkd's dataset when ../shared/data/camvid exists, else the synthetic set).
"""
from __future__ import annotations

import argparse
import copy
import ctypes
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
CAMVID = REPO.parent / "shared" / "data" / "camvid"
PAIRS = {  # pair -> (teacher (arch, kwargs), student (arch, kwargs), classes, default feature method)
    "unet": (("unet", {"encoder": "kd_resnet34"}), ("unet", {"encoder": "kd_resnet18"}), 11, "ofd"),
    "deeplab": (("deeplabv3plus", {"encoder": "resnet101"}),
                ("deeplabv3plus", {"encoder": "resnet18"}), 21, "cwd"),
    "tiny": (("unet", {"encoder": "kd_resnet14"}), ("unet", {"encoder": "kd_resnet10"}), 11, "cwd"),
}  # "tiny": a seconds-long toy pair for the smoke test
JFZHANG95_TEACHER = ("jfzhang95_deeplabv3plus", {"backbone": "resnet101"})
KD_T = 2.0  # temperature of every KD variant (the camvid kd.yaml recipe)


# ============================================================================ machine & memory
def machine_info() -> dict:
    """CPU model, core count, torch version, GPU name; what a results row needs to be read."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        cpu = next((ln.split(":", 1)[1].strip() for ln in out.splitlines()
                    if ln.startswith("Model name")), platform.processor())
    except OSError:
        cpu = platform.processor()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "gpu": gpu,
            "threads": torch.get_num_threads(), "python": platform.python_version(),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "loadavg_start": list(os.getloadavg())}


def _status_kb(key: str) -> int:
    """A ``/proc/self/status`` field in kB (0 where /proc is absent)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class MemoryMeter:
    """Peak memory of one timed call, in MiB above the memory in use just before it.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: free heap pages are handed back first
    (glibc ``malloc_trim``), the kernel's peak-RSS mark is reset (``/proc/self/clear_refs``
    = 5), and the peak is ``VmHWM - VmRSS(before)``. That counts activations, gradients and
    temporaries the step allocates, not the weights or optimiser state that already exist.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        try:
            self._trim = ctypes.CDLL("libc.so.6").malloc_trim
        except OSError:
            self._trim = None
        self._base = 0

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return
        if self._trim is not None:
            self._trim(0)
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
        self._base = _status_kb("VmRSS") * 1024

    def peak_mib(self) -> float:
        if self.device.type == "cuda":
            return (torch.cuda.max_memory_allocated() - self._base) / 2**20
        return max(0, _status_kb("VmHWM") * 1024 - self._base) / 2**20


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def autocast(device: torch.device, precision: str):
    """bf16 autocast for ``precision == "bf16"``, else a disabled autocast."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


# ============================================================================ data and models
def load_batches(size: tuple[int, int], batch: int, count: int, device: torch.device,
                 channels_last: bool, root: Path = CAMVID) -> tuple[list[dict], int, str]:
    """``count`` training batches through segkd's own data path (CamVid train transforms:
    resize to ``size`` (H, W) + flip), moved to ``device``. Returns (batches, ignore, source)."""
    from segkd.config import DataCfg
    from segkd.engine.data import build_data, make_loader

    if root.is_dir():
        cfg = DataCfg(name="camvid", root=str(root), size=size, batch_size=batch, num_workers=0,
                      val_split=None)
    else:
        cfg = DataCfg(name="synthetic", size=size, batch_size=batch, num_workers=0, val_split=None,
                      options={"size": list(size), "num_images": max(batch * count, batch)})
    data = build_data(cfg)
    loader = make_loader(data.train, batch, True, 0, seed=0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out: list[dict] = []
    while len(out) < count:
        for b in loader:
            out.append({"image": b["image"].to(device).contiguous(memory_format=fmt),
                        "mask": b["mask"].to(device)})
            if len(out) == count:
                break
    return out, data.ignore_index, cfg.name


def build_pair(pair: str, jfzhang95: bool = False) -> tuple[nn.Module, nn.Module, int]:
    """(teacher, student, num_classes) with random weights (speed does not depend on them)."""
    from segkd.models import create_model

    (t_arch, t_kw), (s_arch, s_kw), classes, _ = PAIRS[pair]
    if jfzhang95 and pair == "deeplab":
        t_arch, t_kw = JFZHANG95_TEACHER
    torch.manual_seed(0)
    teacher = create_model(t_arch, num_classes=classes, **t_kw)
    student = create_model(s_arch, num_classes=classes, **s_kw)
    return teacher.eval().requires_grad_(False), student, classes


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

    def models(self) -> tuple[nn.Module, nn.Module]:
        """Fresh deep copies (teacher frozen, eval) on the device, in the memory format."""
        fmt = torch.channels_last if self.channels_last else torch.preserve_format
        t = copy.deepcopy(self.teacher).to(self.device, memory_format=fmt).eval()
        s = copy.deepcopy(self.student).to(self.device, memory_format=fmt).train()
        return t, s

    def adam(self, params) -> torch.optim.Optimizer:
        return torch.optim.Adam([p for p in params if p.requires_grad], lr=1e-3, weight_decay=1e-4)


# ============================================================================ variants
Step = Callable[[list[dict]], None]


def pixel_kd_bare(s: torch.Tensor, t: torch.Tensor, valid: torch.Tensor, temp: float) -> torch.Tensor:
    """T^2 * mean over valid pixels of KL(softmax(t/T) || softmax(s/T)), float32."""
    log_ps = F.log_softmax(s.float() / temp, dim=1)
    log_pt = F.log_softmax(t.float() / temp, dim=1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(1)
    return temp**2 * (kl * valid).sum() / valid.sum().clamp(min=1)


def make_student(su: Setup) -> Step:
    """Bare student step: CE, backward, Adam. Half of the floor."""
    _, s = su.models()
    if su.compile:
        s.compile()
    opt = su.adam(s.parameters())

    def run(batches: list[dict]) -> None:
        for b in batches:
            with autocast(su.device, su.precision):
                logits = s(b["image"])
            loss = F.cross_entropy(logits.float(), b["mask"], ignore_index=su.ignore_index)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    return run


def make_teacher(su: Setup) -> Step:
    """Teacher forward under no_grad: the other half of the floor."""
    t, _ = su.models()

    def run(batches: list[dict]) -> None:
        for b in batches:
            with torch.no_grad(), autocast(su.device, su.precision):
                t(b["image"])
    return run


def make_bare_kd(su: Setup) -> Step:
    """CE + pixel KD (T=2, weight 1), written by hand: the reference segkd should match."""
    t, s = su.models()
    opt = su.adam(s.parameters())

    def run(batches: list[dict]) -> None:
        for b in batches:
            x, y = b["image"], b["mask"]
            with autocast(su.device, su.precision):
                with torch.no_grad():
                    t_logits = t(x)
                logits = s(x)
            loss = F.cross_entropy(logits.float(), y, ignore_index=su.ignore_index) \
                + pixel_kd_bare(logits, t_logits, y != su.ignore_index, KD_T)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
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
        from segkd.config import load_config
        from segkd.engine.build import stage_terms

        return stage_terms(load_config(REPO / "configs" / "camvid" / "ofd.yaml").stages[-1])
    raise SystemExit(f"segkd method '{method}' is not available for the {pair} pair")


def make_segkd(su: Setup, method: str) -> Step:
    """segkd's own path: Distiller.configure, build_optimizer, Fabric.setup, train_epoch."""
    from segkd.config import OptimCfg, TrainerCfg
    from segkd.distill.distiller import Distiller
    from segkd.engine.build import autocast_dtype
    from segkd.engine.fabric import make_fabric
    from segkd.engine.logger import RunLogger
    from segkd.engine.optim import build_optimizer
    from segkd.engine.train import train_epoch

    t, s = su.models()
    prec = "bf16-mixed" if su.precision == "bf16" else "32"
    fabric = make_fabric(TrainerCfg(precision=prec, accelerator=su.device.type, progress=False))
    d = Distiller(s, t if method != "ce" else None, ignore_index=su.ignore_index)
    d.store_teacher_weights_in(autocast_dtype(prec))  # as Engine does (build_distiller)
    h, w = 64, 64
    d.configure(segkd_terms(method, su.pair), torch.zeros(2, 3, h, w, device=su.device))
    d.refresh_frozen_bn()
    if su.compile:
        s.compile()
    opt = build_optimizer(d, OptimCfg(name="adam", lr=1e-3, weight_decay=1e-4))
    module, opt = fabric.setup(d, opt, move_to_device=True)
    logger = RunLogger(None, False, False)

    def run(batches: list[dict]) -> None:
        train_epoch(fabric, module, opt, None, batches, len(batches), labeled=True, accum=1,
                    grad_clip=None, channels_last=su.channels_last, log_every=10**9,
                    logger=logger, title="bench", step0=0, where="bench")
    return run


def torchdistill_available() -> bool:
    try:
        import torchdistill  # noqa: F401
    except ImportError:
        return False
    return True


def make_torchdistill(su: Setup, size: tuple[int, int]) -> Step:
    """torchdistill's DistillationBox: KDLoss (CE + beta * T^2 * KL), its own forward_process
    and post_forward_process (backward, Adam step). ``beta = 1/(H*W)`` turns its batchmean KL
    into the per-pixel mean that segkd and the bare loop use; it does not mask void pixels."""
    from torchdistill.core.distillation import get_distillation_box

    t, s = su.models()
    kd = {"student_module_path": ".", "student_module_io": "output", "teacher_module_path": ".",
          "teacher_module_io": "output", "temperature": KD_T, "alpha": 1.0,
          "beta": 1.0 / (size[0] * size[1]), "reduction": "batchmean",
          "ignore_index": su.ignore_index}
    cfg = {"num_epochs": 1, "teacher": {"requires_grad": False, "forward_proc": "forward_batch_only"},
           "student": {"forward_proc": "forward_batch_only"},
           "optimizer": {"key": "Adam", "kwargs": {"lr": 1e-3, "weight_decay": 1e-4}},
           "criterion": {"key": "WeightedSumLoss", "kwargs": {"sub_terms": {
               "kd": {"criterion": {"key": "KDLoss", "kwargs": kd}, "weight": 1.0}}}}}
    box = get_distillation_box(t, s, {}, cfg, su.device, None, False, 1.0)
    if su.compile:
        box.student_model.compile()
    box.pre_epoch_process(epoch=0)

    def run(batches: list[dict]) -> None:
        for b in batches:
            with autocast(su.device, su.precision):
                loss = box.forward_process(b["image"], b["mask"], supp_dict={})
            box.post_forward_process(loss=loss)
    return run


def build_variants(su: Setup, names: list[str], size: tuple[int, int]) -> dict[str, Step]:
    """Name -> step function for the requested variants (td_kd skipped when not installed)."""
    out: dict[str, Step] = {}
    for name in names:
        if name == "student":
            out[name] = make_student(su)
        elif name == "teacher":
            out[name] = make_teacher(su)
        elif name == "bare_kd":
            out[name] = make_bare_kd(su)
        elif name.startswith("segkd_"):
            out[name] = make_segkd(su, name.split("_", 1)[1])
        elif name == "td_kd":
            if torchdistill_available():
                out[name] = make_torchdistill(su, size)
            else:
                print("torchdistill: not installed (pip install -r benchmarks/"
                      "requirements-torchdistill.txt in a separate venv); skipping td_kd")
        else:
            raise SystemExit(f"unknown variant '{name}'")
    return out


# ============================================================================ measuring
@dataclass
class Samples:
    """Per-variant seconds per step, one value per measured round: wall clock and this
    process's CPU time (``time.process_time``, all threads), and the peak memory."""

    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    page_faults: list[float] = field(default_factory=list)  # minor faults per step (CPU)
    peak_mib: float = 0.0

    def clock(self, which: str) -> list[float]:
        return self.cpu_seconds if which == "cpu" else self.seconds


def measure(variants: dict[str, Step], batches: list[dict], rounds: int, warmup: int,
            steps: int, device: torch.device) -> dict[str, Samples]:
    """Interleaved rounds: every round runs each variant for ``steps`` steps on the same
    batches; warm-up rounds are not recorded. Memory is measured afterwards, apart (trimming
    the heap before a timed step would make the step pay page faults a training run does not)."""
    out = {k: Samples() for k in variants}
    for r in range(warmup + rounds):
        chunk = [batches[(r * steps + i) % len(batches)] for i in range(steps)]
        for name, run in variants.items():
            sync(device)
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0, c0 = time.perf_counter(), time.process_time()
            run(chunk)
            sync(device)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
            if r >= warmup:
                out[name].seconds.append(dt / steps)
                out[name].cpu_seconds.append(dc / steps)
                out[name].page_faults.append(faults / steps)
    meter = MemoryMeter(device)
    for name, run in variants.items():
        meter.start()
        run(batches[:1])
        sync(device)
        out[name].peak_mib = meter.peak_mib()
    return out


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of a/b (same round: same background load)."""
    return statistics.median(x / y for x, y in zip(a, b))


def summarise(samples: dict[str, Samples], batch: int, ctx: dict,
              clock: str = "wall") -> tuple[list[dict], dict]:
    """Rows (median and min s/step on both clocks, img/s and peak MiB) and the headline
    ratios, computed on ``clock`` ("wall", or "cpu": process CPU time, which a busy machine
    inflates far less than wall time) from medians, from minima, and paired per round."""
    rows = []
    for k, v in samples.items():
        t = v.clock(clock)
        rows.append({**ctx, "variant": k, "clock": clock, "median_s": statistics.median(t),
                     "min_s": min(t), "max_s": max(t), "wall_median_s": statistics.median(v.seconds),
                     "cpu_median_s": statistics.median(v.cpu_seconds),
                     "images_per_s": batch / statistics.median(t), "peak_mib": v.peak_mib,
                     "page_faults": statistics.median(v.page_faults),
                     "rounds": len(t)})
    ratios: dict[str, float] = {}
    for stat, f in (("median", statistics.median), ("min", min)):
        val = {k: f(v.clock(clock)) for k, v in samples.items()}
        if "teacher" in val and "student" in val:
            floor = val["teacher"] + val["student"]
            ratios[f"floor_s ({stat})"] = floor
            for k in val:
                if k.endswith(("_kd", "_ofd", "_cwd")):
                    ratios[f"{k}/floor ({stat})"] = val[k] / floor
        for a, b in (("segkd_kd", "bare_kd"), ("segkd_kd", "td_kd"), ("bare_kd", "td_kd"),
                     ("segkd_ce", "student")):
            if a in val and b in val:
                ratios[f"{a}/{b} ({stat})"] = val[a] / val[b]
                if stat == "median":
                    ratios[f"{a}/{b} (paired)"] = paired_ratio(samples[a].clock(clock),
                                                               samples[b].clock(clock))
    return rows, ratios


def print_tables(rows: list[dict], ratios: dict) -> None:
    """Rich tables of the rows and ratios."""
    from rich.table import Table

    floor = ratios.get("floor_s (median)")
    clock = rows[0]["clock"] if rows else "wall"
    tab = Table(title=f"training step: median of interleaved rounds ({clock} clock for s/step, "
                      "min-max, img/s, x floor)")
    for col in ("variant", "device", "precision", "batch", "HxW", "s/step", "min-max",
                "wall s", "cpu s", "img/s", "peak MiB", "faults", "x floor"):
        tab.add_column(col, justify="left" if col == "variant" else "right", no_wrap=True)
    for r in rows:
        tab.add_row(r["variant"], r["device"], r["precision"], str(r["batch"]), r["resolution"],
                    f"{r['median_s']:.3f}", f"{r['min_s']:.3f}-{r['max_s']:.3f}",
                    f"{r['wall_median_s']:.3f}", f"{r['cpu_median_s']:.3f}",
                    f"{r['images_per_s']:.2f}", f"{r['peak_mib']:.0f}", f"{r['page_faults']:.0f}",
                    f"{r['median_s'] / floor:.2f}" if floor else "-")
    rt = Table(title="ratios (time; <1 is faster)")
    rt.add_column("ratio")
    rt.add_column("value", justify="right")
    for k, v in ratios.items():
        rt.add_row(k, f"{v:.3f}")
    console().print(tab, rt)


# ============================================================================ profiling
def profile_steps(variants: dict[str, Step], batches: list[dict], device: torch.device,
                  top: int = 15) -> dict:
    """One profiled step of each given variant (after the timed rounds): top ops by self time
    and the op-level difference between ``segkd_kd`` and ``bare_kd`` when both are given."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    out: dict = {}
    per_op: dict[str, dict[str, tuple[float, int]]] = {}
    for name, run in variants.items():
        run(batches[:1])  # warm
        sync(device)
        t0 = time.perf_counter()
        with profile(activities=acts) as prof:
            run(batches[:1])
            sync(device)
        wall = time.perf_counter() - t0
        ev = prof.key_averages()
        per_op[name] = {e.key: (e.self_cpu_time_total / 1e3, e.count) for e in ev}
        total = sum(ms for ms, _ in per_op[name].values())
        rows = sorted(per_op[name].items(), key=lambda kv: -kv[1][0])[:top]
        out[name] = {"wall_ms": wall * 1e3, "self_cpu_ms_total": total, **phases(ev),
                     "op_calls": sum(c for _, c in per_op[name].values()),
                     "top": [{"op": k, "self_ms": ms, "calls": c, "pct": 100 * ms / total}
                             for k, (ms, c) in rows]}
    if "segkd_kd" in per_op and "bare_kd" in per_op:
        a, b = per_op["segkd_kd"], per_op["bare_kd"]
        diff = {k: (a.get(k, (0, 0))[0] - b.get(k, (0, 0))[0],
                    a.get(k, (0, 0))[1] - b.get(k, (0, 0))[1]) for k in set(a) | set(b)}
        big = sorted(diff.items(), key=lambda kv: -abs(kv[1][0]))[:top]
        out["segkd_minus_bare"] = [{"op": k, "self_ms": ms, "calls": c} for k, (ms, c) in big]
    return out


def phases(events) -> dict[str, float]:
    """Inclusive CPU ms of the optimiser step and of backward (autograd engine functions);
    forward and the rest is what remains of the op self time."""
    opt = sum(e.cpu_time_total for e in events if e.key.startswith("Optimizer.step")) / 1e3
    bwd = sum(e.cpu_time_total for e in events
              if e.key.startswith("autograd::engine::evaluate_function")) / 1e3
    return {"optimizer_ms": opt, "backward_ms": bwd}


def console():
    """A rich console at least 120 columns wide (pipes default to 80, too narrow)."""
    import shutil

    from rich.console import Console

    return Console(width=max(140, shutil.get_terminal_size().columns))


def print_profile(prof: dict) -> None:
    from rich.table import Table

    con = console()
    for name, p in prof.items():
        if name == "segkd_minus_bare":
            continue
        tab = Table(title=f"{name}: one step, wall {p['wall_ms']:.0f} ms (op self time "
                          f"{p['self_cpu_ms_total']:.0f} ms: backward {p['backward_ms']:.0f}, "
                          f"optimizer {p['optimizer_ms']:.0f}), {p['op_calls']} op calls")
        for col in ("op", "self ms", "%", "calls"):
            tab.add_column(col, justify="left" if col == "op" else "right")
        for r in p["top"]:
            tab.add_row(r["op"], f"{r['self_ms']:.1f}", f"{r['pct']:.1f}", str(r["calls"]))
        con.print(tab)
    if "segkd_minus_bare" in prof:
        tab = Table(title="segkd_kd minus bare_kd, per op (self ms, calls)")
        for col in ("op", "self ms", "calls"):
            tab.add_column(col, justify="left" if col == "op" else "right")
        for r in prof["segkd_minus_bare"]:
            tab.add_row(r["op"], f"{r['self_ms']:+.1f}", f"{r['calls']:+d}")
        con.print(tab)


# ============================================================================ command line
def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pair", choices=sorted(PAIRS), default="unet")
    p.add_argument("--jfzhang95", action="store_true",
                   help="deeplab pair: the jfzhang95 DeepLabV3+ R101 teacher instead of smp's")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", choices=["32", "bf16"], default="32")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", default="192,256", help="H,W")
    p.add_argument("--iters", type=int, default=5, help="measured rounds")
    p.add_argument("--warmup", type=int, default=1, help="unrecorded rounds first")
    p.add_argument("--steps", type=int, default=1, help="steps per variant per round")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--variants", default=None,
                   help="comma list; default student,teacher,segkd_ce,segkd_kd,segkd_<feat>,"
                        "bare_kd,td_kd (feat: ofd for unet, cwd for deeplab)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--clock", choices=["auto", "wall", "cpu"], default="auto",
                   help="time the ratios use; auto: cpu (process CPU time) on CPU, wall on CUDA")
    p.add_argument("--data-root", default=str(CAMVID))
    p.add_argument("--profile", action="store_true",
                   help="also profile one segkd_kd and one bare_kd step (torch.profiler)")
    p.add_argument("--note", default="", help="free text stored in the JSON (e.g. background load)")
    p.add_argument("--json", default=None, help="write results here")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> dict:
    a = parse_args(argv)
    info = machine_info()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    size = tuple(int(v) for v in a.size.split(","))
    names = (a.variants.split(",") if a.variants else
             ["student", "teacher", "segkd_ce", "segkd_kd", f"segkd_{PAIRS[a.pair][3]}", "bare_kd",
              "td_kd"])
    teacher, student, _ = build_pair(a.pair, a.jfzhang95)
    batches, ignore, source = load_batches(size, a.batch, max(2, min(8, a.iters + a.warmup)),
                                           device, a.channels_last, Path(a.data_root))
    su = Setup(teacher, student, device, a.precision, a.channels_last, a.compile, ignore, a.pair)
    variants = build_variants(su, names, size)
    samples = measure(variants, batches, a.iters, a.warmup, a.steps, device)
    ctx = {"pair": a.pair, "device": device.type, "precision": a.precision, "batch": a.batch,
           "resolution": f"{size[0]}x{size[1]}", "channels_last": a.channels_last,
           "compile": a.compile, "data": source}
    clock = a.clock if a.clock != "auto" else ("cpu" if device.type == "cpu" else "wall")
    rows, ratios = summarise(samples, a.batch, ctx, clock)
    print_tables(rows, ratios)
    result = {"machine": {**info, "threads": torch.get_num_threads(), "loadavg_end": list(os.getloadavg())},
              "args": vars(a), "note": a.note, "rows": rows, "ratios": ratios}
    if a.profile:
        keep = {k: v for k, v in variants.items() if k in ("segkd_kd", "bare_kd")}
        result["profile"] = profile_steps(keep, batches, device)
        print_profile(result["profile"])
    write_json(a.json, result)
    return result


def write_json(path: Optional[str], obj: dict) -> None:
    """Write ``obj`` as JSON to ``path`` (parents created); nothing when ``path`` is None."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(obj, indent=1))


if __name__ == "__main__":
    main()
