"""The whole benchmark suite in one command: every ``bench_step.py`` and ``bench_data.py`` run of
a tier, each in its own process, then one combined table, the headline ratios and the data
verdict, printed and written to ``DIR/suite.json`` and ``DIR/suite.md``.

    python benchmarks/suite.py --tier cpu|gpu [--quick] [--only unet,deeplab,data] --out DIR
    python benchmarks/suite.py --tier gpu --dry-run --out DIR     # print the commands only

Sub-commands run with this interpreter (``sys.executable``): run the suite from the venv that
has torchdistill (see requirements-torchdistill.txt) to get the ``td_kd`` rows. Each writes
``DIR/<name>.json`` and its console output to ``DIR/<name>.log``. A failed sub-command does not
stop the others; the suite exits 1 at the end and names it.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import bench_data as bd  # benchmarks/ is not a package: imported through sys.path
import bench_step as bs

if TYPE_CHECKING:
    import rich.table

STEP, DATA = "bench_step.py", "bench_data.py"

# ============================================================================ the plans
# Each entry: the script, then its arguments. The suite adds --data-root and --json.
CPU = ["--device", "cpu", "--threads", "1"]  # one thread: CPU-time clock without spinning idlers
CPU_PLAN: list[list[str]] = [
    [STEP, "--pair", "unet", *CPU, "--precision", "bf16", "--batch", "8", "--size", "192,256",
     "--iters", "5", "--profile"],
    [STEP, "--pair", "unet", *CPU, "--precision", "32", "--batch", "8", "--size", "192,256",
     "--iters", "5"],
    [STEP, "--pair", "deeplab", *CPU, "--precision", "bf16", "--batch", "8", "--size", "96,128",
     "--iters", "4"],
    [DATA, "--pair", "unet", *CPU, "--precision", "bf16", "--batch", "8", "--size", "192,256",
     "--batches", "10", "--rounds", "3"],
]

# GPU: wall clock with synchronize, 5 steps per timed round, 2 warm-up rounds (compilation).
GPU = ["--device", "cuda", "--iters", "10", "--warmup", "2", "--steps", "5"]
UNET = [STEP, "--pair", "unet", *GPU, "--size", "192,256"]  # the CamVid recipe resolution
DEEPLAB = [STEP, "--pair", "deeplab", *GPU, "--size", "256,256"]
BF16_CL = ["--precision", "bf16", "--channels-last"]
GPU_PLAN: list[list[str]] = [
    [*UNET, *BF16_CL, "--batch", "8", "--no-compile"],
    [*UNET, *BF16_CL, "--batch", "8", "--compile"],
    [*UNET, "--precision", "32", "--channels-last", "--batch", "8", "--no-compile"],
    [*UNET, "--precision", "bf16", "--no-channels-last", "--batch", "8", "--no-compile"],
    *([*UNET, *BF16_CL, "--batch", str(b), "--no-compile"] for b in (16, 32, 64, 128)),
    [*DEEPLAB, *BF16_CL, "--batch", "8", "--no-compile"],
    [*DEEPLAB, *BF16_CL, "--batch", "8", "--compile"],
    [*DEEPLAB, "--precision", "32", "--channels-last", "--batch", "8", "--no-compile"],
    [*DEEPLAB, "--precision", "bf16", "--no-channels-last", "--batch", "8", "--no-compile"],
    *([*DEEPLAB, *BF16_CL, "--batch", str(b), "--no-compile"] for b in (16, 32, 64)),
    *([DATA, "--pair", "unet", "--device", "cuda", "--precision", "bf16", "--batch", str(b),
       "--size", "192,256", "--workers", "0,1,2,4,8", "--batches", "20", "--rounds", "3",
       "--step-rounds", "5"] for b in (8, 32)),
]

# --quick: these values replace the plan's, and every --size is halved.
QUICK = {STEP: {"--iters": "2", "--warmup": "1"},
         DATA: {"--batches": "3", "--rounds": "1", "--step-rounds": "1"}}

# The hidden --toy plan of tests/test_bench_smoke.py: the seconds-long "tiny" pair at 32x32.
TOY = ["--pair", "tiny", "--device", "cpu", "--threads", "1", "--batch", "2", "--size", "32,32"]
TOY_PLAN: list[list[str]] = [
    [STEP, *TOY, "--iters", "1", "--warmup", "0",
     "--variants", "student,teacher,segkd_kd,segkd_cwd,bare_kd"],
    [DATA, *TOY, "--workers", "0", "--batches", "1", "--rounds", "1", "--step-rounds", "1"],
]

PLANS = {"cpu": CPU_PLAN, "gpu": GPU_PLAN}
FEATURE_VARIANTS = ("segkd_ofd", "segkd_cwd")


# ============================================================================ plan -> commands
@dataclass
class Job:
    """One sub-command: its name (the stem of its JSON and log), group and full argv."""

    name: str
    group: str  # the pair of a bench_step run, "data" for bench_data
    script: str
    args: list[str]
    argv: list[str] = field(default_factory=list)


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


def job_name(script: str, args: list[str]) -> tuple[str, str]:
    """(name, group) from the script's own parser, so names follow its defaults:
    ``step_unet_cuda_bf16_b8_192x256[_nocl][_compile]``, ``data_unet_cpu_bf16_b8_192x256``."""
    a = (bs if script == STEP else bd).parse_args(args)
    device = a.device.split(":")[0]
    prec = "fp32" if a.precision == "32" else a.precision
    stem = f"{a.pair}_{device}_{prec}_b{a.batch}_{a.size.replace(',', 'x')}"
    if script == DATA:
        return f"data_{stem}", "data"
    tags = ("" if a.channels_last else "_nocl") + ("_compile" if a.compile else "")
    return f"step_{stem}{tags}", a.pair


def build_jobs(plan: list[list[str]], out: Path, data_root: str, quick: bool,
               only: set[str] | None = None) -> list[Job]:
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
        argv = [sys.executable, str(BENCH / script), *args, "--data-root", data_root,
                "--json", str(out / f"{name}.json")]
        jobs.append(Job(name, group, script, args, argv))
    return jobs


# ============================================================================ running
def run_job(job: Job, out: Path) -> dict:
    """Run one job, its output streamed to the console and to ``out/<name>.log``; returns the
    record stored in suite.json (command, exit status, seconds, and its JSON when it wrote one)."""
    log = out / f"{job.name}.log"
    print(f"\n=== {job.name}\n$ {shlex.join(job.argv)}", flush=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(job.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=env, cwd=BENCH.parent)
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            fh.write(line)
        rc = proc.wait()
    js = out / f"{job.name}.json"
    result = json.loads(js.read_text()) if rc == 0 and js.is_file() else None
    ok = rc == 0 and result is not None
    if not ok:
        why = f"exit {rc}" if rc else "exit 0 but no JSON"
        print(f"=== {job.name} FAILED ({why}); log: {log}", flush=True)
    return {"name": job.name, "group": job.group, "script": job.script, "command": job.argv,
            "rc": rc, "ok": ok, "seconds": time.perf_counter() - t0, "log": str(log),
            "json": str(js), "result": result}


# ============================================================================ tables
@dataclass
class Table:
    """A titled table of strings, rendered both by rich (console) and as Markdown (docs)."""

    title: str
    headers: list[str]
    rows: list[list[str]]

    def rich(self) -> rich.table.Table:
        """A rich table, cells never wrapped (print_tables widens the console instead)."""
        from rich.table import Table as RichTable

        tab = RichTable(title=self.title)
        for i, h in enumerate(self.headers):
            tab.add_column(h, justify="left" if i == 0 else "right", no_wrap=True)
        for r in self.rows:
            tab.add_row(*r)
        return tab

    def markdown(self) -> str:
        """A bold title line, then a pipe table."""
        lines = [f"**{self.title}**", "", "| " + " | ".join(self.headers) + " |",
                 "|" + "---|" * len(self.headers)]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines)


def _f(v: float | None, fmt: str = ".3f") -> str:
    return "-" if v is None else format(v, fmt)


def _prec(p: str) -> str:
    return "fp32" if p == "32" else p


def _ctx(r: dict) -> list[str]:
    """pair, device, precision, batch, resolution, channels_last, compile of a step row."""
    return [r["pair"], r["device"], _prec(r["precision"]), str(r["batch"]), r["resolution"],
            "on" if r["channels_last"] else "off", "on" if r["compile"] else "off"]


CTX = ["pair", "device", "precision", "batch", "HxW", "channels_last", "compile"]


def step_table(records: list[dict]) -> Table:
    """Every variant row of every bench_step run."""
    rows = []
    for rec in records:
        floor = rec["result"]["ratios"].get("floor_s (median)")
        for r in rec["result"]["rows"]:
            rows.append([*_ctx(r), r["variant"], _f(r["median_s"]), r["clock"],
                         _f(r["images_per_s"], ".2f"), _f(r["peak_mib"], ".0f"),
                         _f(r["median_s"] / floor if floor else None, ".2f")])
    return Table("training step: median s/step of interleaved rounds (img/s on the same clock; "
                 "peak MiB above the step's start)",
                 [*CTX, "variant", "s/step", "clock", "img/s", "peak MiB", "x floor"], rows)


def _median_paired(ratios: dict, a: str, b: str) -> str:
    """``"median; paired"`` of the ratio a/b, "-" when the run lacks a or b."""
    m, p = ratios.get(f"{a}/{b} (median)"), ratios.get(f"{a}/{b} (paired)")
    return "-" if m is None else f"{m:.3f}; {_f(p)}"


def headline_table(records: list[dict]) -> Table:
    """The headline ratios of each bench_step run (median; "paired": median of per-round ratios)."""
    rows = []
    for rec in records:
        q, rows0 = rec["result"]["ratios"], rec["result"]["rows"]
        feat = next((v for v in FEATURE_VARIANTS if f"{v}/floor (median)" in q), None)
        rows.append([*_ctx(rows0[0]), _f(q.get("floor_s (median)")),
                     _f(q.get("segkd_kd/floor (median)")),
                     f"{q[f'{feat}/floor (median)']:.3f} ({feat.split('_')[1]})" if feat else "-",
                     _f(q.get("bare_kd/floor (median)")), _f(q.get("td_kd/floor (median)")),
                     _median_paired(q, "segkd_kd", "bare_kd"),
                     _median_paired(q, "segkd_kd", "td_kd"),
                     _f(q.get("segkd_ce/student (median)"))])
    return Table("headline ratios (time, median over rounds; 'a; b' = median; paired)",
                 [*CTX, "floor s", "segkd_kd/floor", "segkd_feat/floor", "bare_kd/floor",
                  "td_kd/floor", "segkd_kd/bare_kd", "segkd_kd/td_kd", "segkd_ce/student"], rows)


def data_table(records: list[dict]) -> Table:
    """Per bench_data run: loader images/s at the default worker count (PNG decode each time)
    against what the student step and segkd's KD step consume, and the verdict."""
    rows = []
    for rec in records:
        res = rec["result"]
        rate = {r["what"]: r["images_per_s"] for r in res["rows"]}
        r0 = res["rows"][0]
        w = r0["default_workers"]
        load = rate.get(f"loader w={w} cache=off")
        need = {s: rate.get(f"step {s}") for s in ("student", "segkd_kd")}
        ratio = {s: load / n if load and n else None for s, n in need.items()}
        worst = min((v for v in ratio.values() if v is not None), default=None)
        verdict = "-" if worst is None else ("keeps up" if worst >= 1 else "data-bound")
        rows.append([r0["pair"], r0["device"], _prec(r0["precision"]), str(r0["batch"]),
                     r0["resolution"], str(w), _f(load, ".1f"),
                     _f(rate.get("loader w=0 cache=off"), ".1f"),
                     _f(rate.get("loader w=0 cache=on"), ".1f"), _f(need["student"], ".1f"),
                     _f(need["segkd_kd"], ".1f"), _f(ratio["student"], ".2f"),
                     _f(ratio["segkd_kd"], ".2f"), verdict])
    return Table("data pipeline vs training step (img/s; loader at the recipes' default workers, "
                 "PNG decode every batch)",
                 ["pair", "device", "precision", "batch", "HxW", "workers", "loader img/s",
                  "loader w=0", "w=0 cache=on", "student step", "segkd_kd step",
                  "loader/student", "loader/segkd_kd", "verdict"], rows)


def tables(records: list[dict]) -> list[Table]:
    """The suite's three tables from the successful records (empty tables left out)."""
    ok = [r for r in records if r["ok"]]
    steps = [r for r in ok if r["script"] == STEP and r["result"]["rows"]]
    data = [r for r in ok if r["script"] == DATA and r["result"]["rows"]]
    out = [step_table(steps), headline_table(steps), data_table(data)]
    return [t for t in out if t.rows]


def print_tables(tabs: list[Table]) -> None:
    """Print with rich, the console widened to the widest table so that no cell wraps."""
    from rich.console import Console

    con = bs.console()
    rendered = [t.rich() for t in tabs]
    wide = con.options.update_width(10**4)
    need = max((con.measure(r, options=wide).maximum for r in rendered), default=0)
    if need > con.width:
        con = Console(width=need)
    con.print(*rendered)


def write_markdown(path: Path, tabs: list[Table], meta: dict, failed: list[str]) -> None:
    """``suite.md``: a header line (tier, machine, date) and the tables, ready to paste."""
    m = meta["machine"]
    machine = (f"Machine: {m['cpu']}, {m['cores']} cores, GPU {m['gpu'] or 'none'}, torch "
               f"{m['torch']}, Python {m['python']}; {meta['started']}. Commands and every row: "
               "`suite.json`.")
    head = [f"# Benchmark suite: {meta['tier']} tier{' (quick)' if meta['quick'] else ''}", "",
            machine, ""]
    if failed:
        head += [f"Failed sub-commands: {', '.join(failed)}.", ""]
    path.write_text("\n".join(head) + "\n" + "\n\n".join(t.markdown() for t in tabs) + "\n")


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
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--toy", action="store_true", help=argparse.SUPPRESS)  # the smoke test's plan
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run (or list) the tier's jobs; 0 when every one succeeded, else 1."""
    a = parse_args(argv)
    out = Path(a.out).resolve()
    only = set(a.only.split(",")) if a.only else None
    groups = {"unet", "deeplab", "tiny", "data"}
    if only and not only <= groups:
        raise SystemExit(f"--only: unknown group(s) {sorted(only - groups)}; "
                         f"choose from unet, deeplab, data")
    jobs = build_jobs(TOY_PLAN if a.toy else PLANS[a.tier], out, a.data_root, a.quick, only)
    if a.dry_run:
        for job in jobs:
            print(shlex.join(job.argv))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    machine = bs.machine_info()
    started = datetime.datetime.now().isoformat(timespec="seconds")
    records = [run_job(job, out) for job in jobs]
    failed = [r["name"] for r in records if not r["ok"]]
    meta = {"tier": "toy" if a.toy else a.tier, "quick": a.quick, "only": a.only,
            "argv": [sys.executable, __file__, *(sys.argv[1:] if argv is None else argv)],
            "started": started, "finished": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": {**machine, "loadavg_end": list(os.getloadavg())}}
    tabs = tables(records)
    print_tables(tabs)
    bs.write_json(str(out / "suite.json"), {
        **meta, "commands": [shlex.join(r["command"]) for r in records], "failed": failed,
        "tables": [{"title": t.title, "headers": t.headers, "rows": t.rows} for t in tabs],
        "runs": records})
    write_markdown(out / "suite.md", tabs, meta, failed)
    print(f"wrote {out / 'suite.json'} and {out / 'suite.md'}")
    if failed:
        print(f"FAILED ({len(failed)} of {len(records)}): {', '.join(failed)}; logs in {out}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
