"""The CamVid `segkd compress` evidence: collect one run's small results into docs/results, and
the table over every collected run (benchmarks/compress_camvid.sh makes the runs).

    python benchmarks/compress_table.py --collect OUT docs/results/compress_camvid/p35/s0
    python benchmarks/compress_table.py [docs/results/compress_camvid]   # -> results.md there
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

SMALL = ("compress.json", "plan.json", "report.md")
RUN_FILES = ("summary.json", "metrics.jsonl")


def relative_paths(text: str) -> str:
    """Absolute paths of this machine written relative to the working directory."""
    cwd = Path.cwd().resolve()
    return text.replace(f"{cwd}/", "").replace(f"{cwd.parent}/", "../")


def collect(out: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in SMALL:
        if (out / name).is_file():
            (dest / name).write_text(relative_paths((out / name).read_text()))
    for run in ("student", "baseline"):
        for name in RUN_FILES:
            if (out / run / name).is_file():
                (dest / run).mkdir(exist_ok=True)
                (dest / run / name).write_text(relative_paths((out / run / name).read_text()))


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "—"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}" if len(values) > 1 else f"{values[0]:.4f}"


def table(root: Path) -> str:
    lines = ["# `segkd compress` on CamVid (camvid-small protocol)", "",
             "Teacher: ../shared/teachers/camvid-unet-r34-128x96.pt (UNet-R34, 24.4M). Each row: "
             "`bash benchmarks/compress_camvid.sh TARGET SEED`; val mIoU of the epoch chosen on a "
             "held-out 10% of train (select/mIoU), never on val; mean ± sample std over seeds; "
             "kept = student / teacher val mIoU; wall = the student run's wall time on one thread.",
             "", "| target | chosen | params (M) | of teacher | steps | seeds | student val mIoU | kept | "
             "baseline (CE, random init) | wall (min) |", "|---|---|---|---|---|---|---|---|---|---|"]
    note = None
    for group in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: (len(p.name), p.name)):
        seeds = [s for s in sorted(group.glob("s*"))
                 if (s / "compress.json").is_file() and (s / "student" / "summary.json").is_file()]
        states = [json.loads((s / "compress.json").read_text()) for s in seeds]
        if not states:
            continue
        res = lambda st, run: next((r for r in st.get("results", []) if r["run"] == run), None)  # noqa: E731
        teacher = res(states[0], "teacher")
        student = [res(s, "student")["splits"]["val"]["mIoU"] for s in states if res(s, "student")]
        base = [res(s, "baseline")["splits"]["val"]["mIoU"] for s in states if res(s, "baseline")]
        walls = [json.loads((s / "student" / "summary.json").read_text())["wall_time_s"] for s in seeds]
        t_val = teacher["splits"]["val"]["mIoU"]
        p = res(states[0], "student")["params"]
        lines.append(f"| {group.name[1:].split('_')[0]}% | {states[0]['candidate']} | {p / 1e6:.2f} | "
                     f"{100 * p / teacher['params']:.0f}% | {states[0]['steps']} | {len(states)} | "
                     f"{_mean_sd(student)} | "
                     f"{100 * statistics.mean(student) / t_val:.0f}% | {_mean_sd(base)} | "
                     f"{statistics.mean(walls) / 60:.0f} |")
        note = f"Teacher val mIoU (scored by compress on the same val): {t_val:.4f}."
    return "\n".join(lines + (["", note] if note else [])) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--collect", nargs=2, metavar=("OUT", "DEST"))
    ap.add_argument("root", nargs="?", default="docs/results/compress_camvid")
    a = ap.parse_args(argv)
    if a.collect:
        collect(Path(a.collect[0]), Path(a.collect[1]))
        print(f"collected {a.collect[0]} -> {a.collect[1]}")
        return
    text = table(Path(a.root))
    (Path(a.root) / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
