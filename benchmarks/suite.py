"""The whole benchmark suite in one command: every ``bench_step.py`` and ``bench_data.py`` run of
a tier, each in its own process, then the step rows, the headline comparisons (median of
per-round ratios with bootstrap 95% intervals), every comparison's verdict and the data
verdict, printed and written to ``DIR/suite.json`` and ``DIR/suite.md``.

    python benchmarks/suite.py --tier cpu|cpu-small|gpu [--quick] [--only unet,deeplab,data] \
        [--budget SECONDS] [--require-td] --out DIR
    python benchmarks/suite.py --tier gpu --budget 480 --dry-run --out DIR   # plan + estimates

Sub-commands run with this interpreter (``sys.executable``): run the suite from the venv that
has torchdistill (see requirements-torchdistill.txt) to get the ``td_kd`` rows; ``--require-td``
makes its absence an error. Each writes ``DIR/<name>.json`` and its console output to
``DIR/<name>.log``. A failed sub-command does not stop the others; the suite exits 1 at the end
and names it. ``--budget`` keeps the jobs (in plan order) whose estimates fit and stops a job
that runs past it.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import bench_data as bd  # benchmarks/ is not a package: imported through sys.path
import bench_step as bs
import suite_budget as sb
from suite_tables import print_tables, tables, write_markdown

STEP, DATA = "bench_step.py", "bench_data.py"

# ============================================================================ the plans
# Each entry: the script, then its arguments. The suite adds --data-root and --json (and
# --require-td to bench_step.py runs when it is given). Every bench_step run measures all its
# variants (defaults and tuned peers, the floor, segkd_kd_cached where the cache exists) in
# rotated rounds: 15 measured rounds give a bootstrap interval worth reading.
CPU = ["--device", "cpu", "--threads", "1"]  # one thread: CPU-time clock without spinning idlers
CPU_PLAN: list[list[str]] = [
    [STEP, "--pair", "unet", *CPU, "--precision", "bf16", "--batch", "8", "--size", "192,256",
     "--iters", "15", "--profile"],
    [STEP, "--pair", "unet", *CPU, "--precision", "32", "--batch", "8", "--size", "96,128",
     "--iters", "15"],
    [STEP, "--pair", "deeplab", *CPU, "--precision", "bf16", "--batch", "8", "--size", "96,128",
     "--iters", "15"],
    [DATA, "--pair", "unet", *CPU, "--precision", "bf16", "--batch", "8", "--size", "192,256",
     "--batches", "10", "--rounds", "3"],
]

# cpu-small: what a shared 2-core machine affords in ~15 min of CPU time: every pair at 96x128
CPU_SMALL_PLAN: list[list[str]] = [
    [STEP, "--pair", "unet", *CPU, "--precision", "bf16", "--batch", "8", "--size", "96,128",
     "--iters", "15"],
    [STEP, "--pair", "unet", *CPU, "--precision", "32", "--batch", "8", "--size", "96,128",
     "--iters", "15"],
    [STEP, "--pair", "deeplab", *CPU, "--precision", "bf16", "--batch", "8", "--size", "96,128",
     "--iters", "15"],
]

# GPU (one H200, --budget 480): CUDA-event timing, 3 steps per round, 2 warm-up rounds (compile);
# most informative first, so a budget cut drops the tail.
GPU = ["--device", "cuda", "--iters", "15", "--warmup", "2", "--steps", "3"]
# compiled runs: the variants that compare loops (each variant compiles its own student)
COMPILED = ["--compile", "--variants",
            "student_kd,teacher,segkd_kd,segkd_kd_cached,bare_kd_tuned,td_kd_tuned"]
UNET = [STEP, "--pair", "unet", *GPU, "--size", "192,256"]  # the CamVid recipe resolution
DEEPLAB = [STEP, "--pair", "deeplab", *GPU, "--size", "256,256"]
BF16_CL = ["--precision", "bf16", "--channels-last"]
GPU_PLAN: list[list[str]] = [
    [*UNET, *BF16_CL, "--batch", "8", "--no-compile"],
    [*UNET, *BF16_CL, "--batch", "8", *COMPILED],
    [*UNET, *BF16_CL, "--batch", "32", "--no-compile"],
    [*UNET, *BF16_CL, "--batch", "64", "--no-compile"],
    [*DEEPLAB, *BF16_CL, "--batch", "16", "--no-compile"],
    [DATA, "--pair", "unet", "--device", "cuda", "--precision", "bf16", "--batch", "32",
     "--size", "192,256", "--workers", "0,2,4,8", "--batches", "20", "--rounds", "2",
     "--step-rounds", "3"],
    [*UNET, "--precision", "32", "--channels-last", "--batch", "8", "--no-compile"],
    [*DEEPLAB, *BF16_CL, "--batch", "16", *COMPILED],
]

# --quick: these values replace the plan's, and every --size is halved.
QUICK = {STEP: {"--iters": "3", "--warmup": "1"},
         DATA: {"--batches": "3", "--rounds": "1", "--step-rounds": "1"}}

# The hidden --toy plan of tests/test_bench_smoke.py: the seconds-long "tiny" pair at 32x32.
TOY = ["--pair", "tiny", "--device", "cpu", "--threads", "1", "--batch", "2", "--size", "32,32"]
TOY_PLAN: list[list[str]] = [
    [STEP, *TOY, "--iters", "2", "--warmup", "0",
     "--variants", "student,student_kd,teacher,segkd_kd,segkd_cwd,bare_kd,bare_kd_tuned"],
    [DATA, *TOY, "--workers", "0", "--batches", "1", "--rounds", "1", "--step-rounds", "1"],
]

PLANS = {"cpu": CPU_PLAN, "cpu-small": CPU_SMALL_PLAN, "gpu": GPU_PLAN}


# ============================================================================ plan -> commands
@dataclass
class Job:
    """One sub-command: its name (the stem of its JSON and log), group, full argv, and its
    time estimate (suite_budget.py)."""

    name: str
    group: str  # the pair of a bench_step run, "data" for bench_data
    script: str
    args: list[str]
    argv: list[str] = field(default_factory=list)
    estimate: sb.Estimate = field(default_factory=lambda: sb.Estimate(0.0, ""))


def set_arg(args: list[str], flag: str, value: str) -> list[str]:
    """``args`` with ``flag``'s value replaced by ``value`` (appended when absent)."""
    out = list(args)
    if flag in out:
        out[out.index(flag) + 1] = value
    else:
        out += [flag, value]
    return out


def quick_args(script: str, args: list[str]) -> list[str]:
    """The --quick version of one entry: QUICK's values, and half the resolution."""
    for flag, value in QUICK[script].items():
        args = set_arg(args, flag, value)
    if "--size" in args:
        h, w = (int(v) for v in args[args.index("--size") + 1].split(","))
        args = set_arg(args, "--size", f"{max(32, h // 2)},{max(32, w // 2)}")
    return args


def _parsed(script: str, args: list[str]) -> argparse.Namespace:
    return (bs if script == STEP else bd).parse_args(args)


def job_name(script: str, args: list[str]) -> tuple[str, str]:
    """(name, group) from the script's own parser, so names follow its defaults:
    ``step_unet_cuda_bf16_b8_192x256[_nocl][_compile]``, ``data_unet_cpu_bf16_b8_192x256``."""
    a = _parsed(script, args)
    device = a.device.split(":")[0]
    prec = "fp32" if a.precision == "32" else a.precision
    stem = f"{a.pair}_{device}_{prec}_b{a.batch}_{a.size.replace(',', 'x')}"
    if script == DATA:
        return f"data_{stem}", "data"
    tags = ("" if a.channels_last else "_nocl") + ("_compile" if a.compile else "")
    return f"step_{stem}{tags}", a.pair


def job_estimate(script: str, args: list[str]) -> sb.Estimate:
    """The job's time estimate; a bench_step run counts its variants as it would build them."""
    a = _parsed(script, args)
    if script == DATA:
        return sb.estimate_data(a)
    n = len(a.variants.split(",")) if a.variants else len(bs.DEFAULT_VARIANTS)
    return sb.estimate_step(a, n)


def build_jobs(plan: list[list[str]], out: Path, data_root: str, quick: bool,
               only: set[str] | None = None, require_td: bool = False) -> list[Job]:
    """Jobs of ``plan`` (filtered to the groups in ``only``), each writing into ``out``."""
    jobs: list[Job] = []
    seen: set[str] = set()
    for script, *args in plan:
        args = quick_args(script, args) if quick else list(args)
        name, group = job_name(script, args)
        if only and group not in only:
            continue
        base, i = name, 2
        while name in seen:  # the same settings twice (e.g. after --quick's halving)
            name, i = f"{base}_{i}", i + 1
        seen.add(name)
        extra = ["--require-td"] if require_td and script == STEP else []
        argv = [sys.executable, str(BENCH / script), *args, *extra, "--data-root", data_root,
                "--json", str(out / f"{name}.json")]
        jobs.append(Job(name, group, script, args, argv, job_estimate(script, args)))
    return jobs


def print_plan(jobs: list[Job], keep: list[bool], budget: float | None) -> None:
    """The dry run: each command with its estimate, the ones the budget leaves out marked."""
    for job, k in zip(jobs, keep):
        mark = "" if k else "  # left out: over the budget"
        print(f"# ~{job.estimate.seconds:.0f} s ({job.estimate.detail}){mark}")
        print(("# " if not k else "") + shlex.join(job.argv))
    total = sum(j.estimate.seconds for j, k in zip(jobs, keep) if k)
    left = sum(1 for k in keep if not k)
    print(f"# estimated total: {total:.0f} s ({total / 60:.1f} min) for {len(jobs) - left} of "
          f"{len(jobs)} job(s)" + (f"; budget {budget:.0f} s" if budget else ""))


# ============================================================================ running
def run_job(job: Job, out: Path, timeout: float | None = None) -> dict:
    """Run one job, its output streamed to the console and to ``out/<name>.log``, killed after
    ``timeout`` seconds; returns the record stored in suite.json (command, exit status,
    seconds, and its JSON when it wrote one)."""
    log = out / f"{job.name}.log"
    print(f"\n=== {job.name} (estimate ~{job.estimate.seconds:.0f} s)\n$ {shlex.join(job.argv)}",
          flush=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(job.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=env, cwd=BENCH.parent)
        timer = threading.Timer(timeout, proc.kill) if timeout else None
        if timer:
            timer.start()
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            fh.write(line)
        rc = proc.wait()
        if timer:
            timer.cancel()
    js = out / f"{job.name}.json"
    result = json.loads(js.read_text()) if rc == 0 and js.is_file() else None
    ok = rc == 0 and result is not None
    if not ok:
        why = (f"killed at the budget ({timeout:.0f} s)" if timeout and rc < 0 else
               f"exit {rc}" if rc else "exit 0 but no JSON")
        print(f"=== {job.name} FAILED ({why}); log: {log}", flush=True)
    return {"name": job.name, "group": job.group, "script": job.script, "command": job.argv,
            "rc": rc, "ok": ok, "seconds": time.perf_counter() - t0, "log": str(log),
            "json": str(js), "estimate_s": job.estimate.seconds, "result": result}


def run_jobs(jobs: list[Job], keep: list[bool], out: Path, budget: float | None) -> list[dict]:
    """Run the kept jobs in order; with a budget, a job that would not end in time (by its
    estimate) is left out, and a running one is killed when the budget is spent."""
    records, t0 = [], time.perf_counter()
    for job, k in zip(jobs, keep):
        left = None if budget is None else budget - (time.perf_counter() - t0)
        if not k or (left is not None and job.estimate.seconds > left):
            print(f"\n=== {job.name}: left out (estimate {job.estimate.seconds:.0f} s, budget "
                  f"left {max(0.0, left or 0.0):.0f} s)", flush=True)
            continue
        records.append(run_job(job, out, left))
    return records


# ============================================================================ command line
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tier", choices=sorted(PLANS), default="cpu")
    p.add_argument("--quick", action="store_true",
                   help="fewer rounds and half the resolution: a fast sanity run")
    p.add_argument("--only", default=None,
                   help="comma list of groups to run: unet, deeplab, data")
    p.add_argument("--out", required=True, help="directory for the JSON, logs, suite.json/.md")
    p.add_argument("--data-root", default=str(bs.CAMVID))
    p.add_argument("--budget", type=float, default=None,
                   help="seconds: run the plan's jobs in order while their estimates fit, and "
                        "stop a running job when the budget is spent")
    p.add_argument("--require-td", action="store_true",
                   help="torchdistill must be importable: fail at once (exit 2) without it")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (commands, time estimates), run nothing")
    p.add_argument("--toy", action="store_true", help=argparse.SUPPRESS)  # the smoke test's plan
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run (or list) the tier's jobs; 0 when every one succeeded, else 1 (2: bad arguments,
    torchdistill missing under --require-td)."""
    a = parse_args(argv)
    out = Path(a.out).resolve()
    only = set(a.only.split(",")) if a.only else None
    groups = {"unet", "deeplab", "tiny", "data"}
    if only and not only <= groups:
        raise SystemExit(f"--only: unknown group(s) {sorted(only - groups)}; "
                         f"choose from unet, deeplab, data")
    if a.budget is not None and a.budget <= 0:
        raise SystemExit("--budget must be a positive number of seconds")
    jobs = build_jobs(TOY_PLAN if a.toy else PLANS[a.tier], out, a.data_root, a.quick, only,
                      a.require_td)
    keep = sb.within_budget([j.estimate.seconds for j in jobs], a.budget)
    if a.dry_run:
        print_plan(jobs, keep, a.budget)
        return 0
    if a.require_td and not bs.torchdistill_available():
        print(f"error: --require-td: torchdistill is not importable by {sys.executable} (install "
              "it per benchmarks/requirements-torchdistill.txt and run the suite with that venv)")
        return 2
    out.mkdir(parents=True, exist_ok=True)
    machine = bs.machine_info()
    started = datetime.datetime.now().isoformat(timespec="seconds")
    records = run_jobs(jobs, keep, out, a.budget)
    failed = [r["name"] for r in records if not r["ok"]]
    left_out = [j.name for j in jobs if j.name not in {r["name"] for r in records}]
    meta = {"tier": "toy" if a.toy else a.tier, "quick": a.quick, "only": a.only,
            "budget_s": a.budget, "require_td": a.require_td,
            "argv": [sys.executable, __file__, *(sys.argv[1:] if argv is None else argv)],
            "started": started, "finished": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": {**machine, "uptime_end": bs.uptime(), "loadavg_end": list(os.getloadavg())}}
    tabs = tables(records)
    print_tables(tabs)
    bs.write_json(str(out / "suite.json"), {
        **meta, "commands": [shlex.join(r["command"]) for r in records], "failed": failed,
        "left_out": left_out,
        "tables": [{"title": t.title, "headers": t.headers, "rows": t.rows} for t in tabs],
        "runs": records})
    write_markdown(out / "suite.md", tabs, meta, failed)
    print(f"wrote {out / 'suite.json'} and {out / 'suite.md'}")
    if left_out:
        print(f"left out by the budget: {', '.join(left_out)}")
    if failed:
        print(f"FAILED ({len(failed)} of {len(records)}): {', '.join(failed)}; logs in {out}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
