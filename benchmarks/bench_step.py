"""Training-step benchmark: segkd's distillation step side by side with a bare PyTorch loop and
torchdistill (each with its defaults and tuned), on the same models, data, precision, memory
format, compile setting and malloc settings.

Variants (benchmarks/bench_variants.py), one step each per round, the order rotated each round
so that no variant always runs first or after the same neighbour:

    student        tuned student step: forward, CE, backward, fused Adam
    student_kd     student step + CE + KD against teacher logits computed beforehand
    teacher        teacher forward under no_grad, weights in the compute dtype
    segkd_ce       the supervised step through segkd (Distiller + engine.train.train_epoch)
    segkd_kd       CE + pixel KD through segkd's Distiller and the engine's hot loop
    segkd_ofd      CE + OFD (hooks, connectors; UNet pair) or segkd_cwd (CWD on logits)
    segkd_kd_cached  segkd_kd with the teacher cache (skipped with a note where it is absent)
    bare_kd        CE + KD written by hand, defaults (plain Adam, float32 teacher weights)
    bare_kd_tuned  the same with fused Adam and the teacher's weights in the compute dtype
    td_kd          torchdistill's DistillationBox with KDLoss, defaults
    td_kd_tuned    the same with fused Adam (its optimizer kwargs) and the cast teacher

    python benchmarks/bench_step.py --pair unet --device cpu --precision bf16 --batch 8 \
        --size 192,256 --iters 15 --json out.json

The floor: ``student_kd`` (student step + loss) plus ``teacher`` (the live teacher's forward),
summed per round. Every comparison is the median of per-round ratios with a bootstrap 95%
interval (benchmarks/bench_stats.py); the JSON keeps every round's raw samples and order.
"""
from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
from bench_profile import console, print_profile, profile_steps
from bench_stats import NO_DIFFERENCE, fmt_ratio, paired_ratio, rotated
from bench_variants import (  # noqa: F401
    CACHED,
    KD_T,
    REPO,
    Setup,
    Step,
    autocast,
    build_variants,
    make_bare_kd,
    make_segkd,
    make_student,
    make_teacher,
    sync,
    torchdistill_available,
)

CAMVID = REPO.parent / "shared" / "data" / "camvid"
PAIRS = {  # pair -> (teacher (arch, kwargs), student (arch, kwargs), classes, default feature method)
    "unet": (("unet", {"encoder": "kd_resnet34"}), ("unet", {"encoder": "kd_resnet18"}), 11, "ofd"),
    "deeplab": (("deeplabv3plus", {"encoder": "resnet101"}),
                ("deeplabv3plus", {"encoder": "resnet18"}), 21, "cwd"),
    "tiny": (("unet", {"encoder": "kd_resnet14"}), ("unet", {"encoder": "kd_resnet10"}), 11, "cwd"),
}  # "tiny": a seconds-long toy pair for the smoke test
JFZHANG95_TEACHER = ("jfzhang95_deeplabv3plus", {"backbone": "resnet101"})
DEFAULT_VARIANTS = ["student", "student_kd", "teacher", "segkd_ce", "segkd_kd", "segkd_{feat}",
                    CACHED, "bare_kd", "bare_kd_tuned", "td_kd", "td_kd_tuned"]
# (a, b) of every comparison; "floor" = student_kd + teacher per round, "floor_cached" = student_kd
COMPARISONS = [("segkd_kd", "floor"), ("segkd_ofd", "floor"), ("segkd_cwd", "floor"),
               ("bare_kd_tuned", "floor"), ("td_kd_tuned", "floor"),
               ("segkd_kd", "bare_kd_tuned"), ("segkd_kd", "td_kd_tuned"),
               ("segkd_kd", "bare_kd"), ("segkd_kd", "td_kd"),
               ("bare_kd_tuned", "bare_kd"), ("td_kd_tuned", "td_kd"), ("segkd_ce", "student"),
               (CACHED, "floor_cached"), (CACHED, "segkd_kd")]


# ============================================================================ machine & memory
def uptime() -> str:
    """``uptime``'s line (load averages), or the load averages alone where it is missing."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def machine_info() -> dict:
    """CPU model and flags, core count, torch version, GPU name, load: what a row needs to be
    read (the bf16 flags decide whether bf16 is native on this CPU)."""
    from segkd.engine.runtime import BF16_CPU_FLAGS, cpu_flags

    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        cpu = next((ln.split(":", 1)[1].strip() for ln in out.splitlines()
                    if ln.startswith("Model name")), platform.processor())
    except OSError:
        cpu = platform.processor()
    flags = cpu_flags()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "gpu": gpu,
            "threads": torch.get_num_threads(), "python": platform.python_version(),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "cpu_bf16_flags": sorted(set(BF16_CPU_FLAGS) & flags), "cpu_flags": sorted(flags),
            "uptime_start": uptime(), "loadavg_start": list(os.getloadavg())}


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





# ============================================================================ data and models
# ============================================================================ data and models
def load_batches(size: tuple[int, int], batch: int, count: int, device: torch.device,
                 channels_last: bool, root: Path = CAMVID) -> tuple[list[dict], int, str]:
    """``count`` training batches through segkd's own data path (CamVid train transforms:
    resize to ``size`` (H, W) + flip), moved to ``device``. Returns (batches, ignore, source)."""
    from segkd.config.schema import DataCfg
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



def quiet_malloc(device: torch.device, mode: str) -> bool:
    """``mode == "segkd"`` on the CPU: the malloc settings ``segkd train`` applies (heap kept, no
    mmap churn), process-wide, so every variant runs under them. Returns whether applied."""
    if device.type != "cpu" or mode != "segkd":
        return False
    from segkd.engine.fabric import quiet_malloc as segkd_quiet_malloc

    segkd_quiet_malloc()
    return True


# ============================================================================ measuring
@dataclass
class Samples:
    """Per-variant seconds per step, one value per measured round: wall clock, this process's
    CPU time (``time.process_time``, all threads), CUDA-event time on a GPU; and the peak memory."""

    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    cuda_seconds: list[float] = field(default_factory=list)
    page_faults: list[float] = field(default_factory=list)  # minor faults per step (CPU)
    peak_mib: float = 0.0

    def clock(self, which: str) -> list[float]:
        return {"cpu": self.cpu_seconds, "cuda": self.cuda_seconds}.get(which, self.seconds)


def _timed(run: Step, chunk: list[dict], device: torch.device) -> tuple[float, float, float, int]:
    """(wall s, CPU s, CUDA-event s or 0, minor faults) of one call of ``run``."""
    cuda = device.type == "cuda"
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)] if cuda else []
    sync(device)
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0, c0 = time.perf_counter(), time.process_time()
    if cuda:
        ev[0].record()
    run(chunk)
    if cuda:
        ev[1].record()
    sync(device)
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    return dt, dc, (ev[0].elapsed_time(ev[1]) / 1e3 if cuda else 0.0), faults


def measure(variants: dict[str, Step], batches: list[dict], rounds: int, warmup: int,
            steps: int, device: torch.device) -> tuple[dict[str, Samples], list[list[str]]]:
    """Rounds of every variant for ``steps`` steps on the same batches, the order rotated each
    round; warm-up rounds are not recorded. Returns the samples and each measured round's
    order. Memory is measured afterwards, apart (trimming the heap before a timed step would
    make the step pay page faults a training run does not)."""
    names = list(variants)
    out = {k: Samples() for k in names}
    orders: list[list[str]] = []
    for r in range(warmup + rounds):
        chunk = [batches[(r * steps + i) % len(batches)] for i in range(steps)]
        order = rotated(names, r)
        for name in order:
            dt, dc, dg, faults = _timed(variants[name], chunk, device)
            if r >= warmup:
                s = out[name]
                s.seconds.append(dt / steps)
                s.cpu_seconds.append(dc / steps)
                s.cuda_seconds.append(dg / steps)
                s.page_faults.append(faults / steps)
        if r >= warmup:
            orders.append(order)
    meter = MemoryMeter(device)
    for name, run in variants.items():
        meter.start()
        run(batches[:1])
        sync(device)
        out[name].peak_mib = meter.peak_mib()
    return out, orders


def series(samples: dict[str, Samples], clock: str) -> dict[str, list[float]]:
    """Per-round seconds of each variant on ``clock``, plus the floors built per round:
    ``floor`` = student_kd + teacher, ``floor_cached`` = student_kd."""
    out = {k: v.clock(clock) for k, v in samples.items()}
    if "student_kd" in out:
        out["floor_cached"] = list(out["student_kd"])
        if "teacher" in out:
            out["floor"] = [a + b for a, b in zip(out["student_kd"], out["teacher"])]
    return out


def summarise(samples: dict[str, Samples], batch: int, ctx: dict,
              clock: str = "wall") -> tuple[list[dict], dict, dict]:
    """Rows (median/min/max s/step on ``clock``, every round's raw samples on every clock,
    img/s, peak MiB), the median-based ratios to the floor, and the paired comparisons
    (median of per-round ratios, bootstrap 95% interval, verdict)."""
    rows = []
    for k, v in samples.items():
        t = v.clock(clock)
        rows.append({**ctx, "variant": k, "clock": clock, "median_s": statistics.median(t),
                     "min_s": min(t), "max_s": max(t),
                     "wall_median_s": statistics.median(v.seconds),
                     "cpu_median_s": statistics.median(v.cpu_seconds),
                     "images_per_s": batch / statistics.median(t), "peak_mib": v.peak_mib,
                     "page_faults": statistics.median(v.page_faults), "rounds": len(t),
                     "samples": {"wall": v.seconds, "cpu": v.cpu_seconds,
                                 **({"cuda": v.cuda_seconds} if clock == "cuda" else {}),
                                 "page_faults": v.page_faults}})
    ser = series(samples, clock)
    ratios: dict[str, float] = {}
    for floor in ("floor", "floor_cached"):
        if floor in ser:
            base = statistics.median(ser[floor])
            ratios[f"{floor}_s (median)"] = base
            for k in samples:
                ratios[f"{k}/{floor} (median)"] = statistics.median(ser[k]) / base
    comps = {f"{a}/{b}": paired_ratio(ser[a], ser[b], a, b)
             for a, b in COMPARISONS if a in ser and b in ser}
    return rows, ratios, comps


def print_tables(rows: list[dict], ratios: dict, comps: dict) -> None:
    """Rich tables of the rows and the comparisons."""
    from rich.markup import escape
    from rich.table import Table

    floor = ratios.get("floor_s (median)")
    clock = rows[0]["clock"] if rows else "wall"
    tab = Table(title=f"training step: median of rotated rounds ({clock} clock for s/step, "
                      "min-max, img/s, x floor = student_kd + teacher)")
    for col in ("variant", "device", "precision", "batch", "HxW", "s/step", "min-max",
                "wall s", "cpu s", "img/s", "peak MiB", "faults", "x floor"):
        tab.add_column(col, justify="left" if col == "variant" else "right", no_wrap=True)
    for r in rows:
        tab.add_row(r["variant"], r["device"], r["precision"], str(r["batch"]), r["resolution"],
                    f"{r['median_s']:.3f}", f"{r['min_s']:.3f}-{r['max_s']:.3f}",
                    f"{r['wall_median_s']:.3f}", f"{r['cpu_median_s']:.3f}",
                    f"{r['images_per_s']:.2f}", f"{r['peak_mib']:.0f}", f"{r['page_faults']:.0f}",
                    f"{r['median_s'] / floor:.2f}" if floor else "-")
    ct = Table(title=escape("paired comparisons (median of per-round ratios [bootstrap 95% "
                            "interval]; <1: a is faster)"))
    for col in ("a / b", "ratio [95% CI]", "verdict"):
        ct.add_column(col, no_wrap=True)
    for k, q in comps.items():
        ct.add_row(k, fmt_ratio(q), q["verdict"] if q["verdict"] != NO_DIFFERENCE else
                   f"[dim]{NO_DIFFERENCE}[/dim]")
    console().print(tab, ct)


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
    p.add_argument("--iters", type=int, default=15, help="measured rounds")
    p.add_argument("--warmup", type=int, default=1, help="unrecorded rounds first")
    p.add_argument("--steps", type=int, default=1, help="steps per variant per round")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                   help="torch.compile every variant's student (never the teacher)")
    p.add_argument("--malloc", choices=["segkd", "default"], default="segkd",
                   help="CPU: the malloc settings `segkd train` applies, for every variant "
                        "(default), or glibc's defaults")
    p.add_argument("--variants", default=None,
                   help="comma list; default " + ",".join(DEFAULT_VARIANTS) +
                        " (feat: ofd for unet, cwd for deeplab)")
    p.add_argument("--require-td", action="store_true",
                   help="fail (exit 2) when torchdistill is not importable instead of skipping")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--clock", choices=["auto", "wall", "cpu", "cuda"], default="auto",
                   help="time the ratios use; auto: cpu (process CPU time) on CPU, CUDA events "
                        "on CUDA")
    p.add_argument("--data-root", default=str(CAMVID))
    p.add_argument("--profile", action="store_true",
                   help="also profile one segkd_kd and one bare_kd_tuned step (torch.profiler)")
    p.add_argument("--note", default="", help="free text stored in the JSON (e.g. background load)")
    p.add_argument("--json", default=None, help="write results here")
    return p.parse_args(argv)


def fail(msg: str) -> None:
    """Bad arguments: one line, exit 2."""
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: Optional[list[str]] = None) -> dict:
    a = parse_args(argv)
    if a.iters < 1:
        fail("--iters must be at least 1")
    if a.require_td and not torchdistill_available():
        print("error: torchdistill is not importable and --require-td is set (see "
              "benchmarks/requirements-torchdistill.txt)")
        raise SystemExit(2)
    info = machine_info()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    clock = a.clock if a.clock != "auto" else ("cpu" if device.type == "cpu" else "cuda")
    if clock == "cuda" and device.type != "cuda":
        fail("--clock cuda needs --device cuda")
    malloc = quiet_malloc(device, a.malloc)
    size = tuple(int(v) for v in a.size.split(","))
    names = (a.variants.split(",") if a.variants else
             [v.format(feat=PAIRS[a.pair][3]) for v in DEFAULT_VARIANTS])
    teacher, student, _ = build_pair(a.pair, a.jfzhang95)
    batches, ignore, source = load_batches(size, a.batch, max(2, min(8, a.iters + a.warmup)),
                                           device, a.channels_last, Path(a.data_root))
    su = Setup(teacher, student, device, a.precision, a.channels_last, a.compile, ignore, a.pair)
    variants, skipped = build_variants(su, names, size, batches, a.require_td)
    samples, orders = measure(variants, batches, a.iters, a.warmup, a.steps, device)
    ctx = {"pair": a.pair, "device": device.type, "precision": a.precision, "batch": a.batch,
           "resolution": f"{size[0]}x{size[1]}", "channels_last": a.channels_last,
           "compile": a.compile, "malloc": "segkd" if malloc else "default", "data": source}
    rows, ratios, comps = summarise(samples, a.batch, ctx, clock)
    print_tables(rows, ratios, comps)
    result = {"machine": {**info, "threads": torch.get_num_threads(), "uptime_end": uptime(),
                          "loadavg_end": list(os.getloadavg())},
              "args": vars(a), "note": a.note, "rows": rows, "ratios": ratios,
              "comparisons": comps, "orders": orders, "skipped": skipped}
    if a.profile:
        keep = {k: v for k, v in variants.items() if k in ("segkd_kd", "bare_kd_tuned")}
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
