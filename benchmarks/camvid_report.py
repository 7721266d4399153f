"""Markdown tables for docs/benchmarks.md from the CamVid CPU runs (no number typed by hand).

    python benchmarks/camvid_report.py /work/runs > /tmp/camvid_tables.md

Reads <runs>/teacher-r34, baseline-r18 and r18-<method> run directories (summary.json,
config.yaml, metrics.jsonl) written by benchmarks/camvid_queue_*.sh and camvid_arms.sh.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
           "Pedestrian", "Bicyclist"]
ARMS = [("teacher-r34", "teacher UNet-R34 (30 ep, scale+crop aug)"), ("baseline-r18", "baseline UNet-R18 (CE)"),
        ("r18-kd", "KD"), ("r18-at", "AT"), ("r18-ofd", "OFD"), ("r18-cwd", "CWD"), ("r18-dist", "DIST"),
        ("r18-combo", "combo: DIST + OFD"), ("r18-pnp", "Plug and Play (R34, cheap convs, images only)")]


def _row(runs: Path, d: str, label: str, base: float | None) -> tuple[str, str] | None:
    f = runs / d / "summary.json"
    if not f.is_file():
        return None
    s = json.loads(f.read_text())
    v = s["splits"]["val"]
    delta = "" if base is None or d.startswith("teacher") else f"{v['mIoU'] - base:+.4f}"
    epochs = sum(1 for _ in (runs / d / "metrics.jsonl").read_text().splitlines()
                 if '"val/mIoU"' in _)
    main = (f"| {label} | {s['params'] / 1e6:.2f} | {epochs} | {v['mIoU']:.4f} | {delta} | "
            f"{v['pixel_acc']:.4f} | {v['per_image_iou']:.4f} | {s['train_images_per_s']:.2f} | "
            f"{s['wall_time_s'] / 60:.1f} |")
    pc = "| " + label + " | " + " | ".join("—" if x is None else f"{x:.2f}" for x in v["per_class_iou"]) + " |"
    return main, pc


def main(runs: Path) -> None:
    base_f = runs / "baseline-r18" / "summary.json"
    base = json.loads(base_f.read_text())["splits"]["val"]["mIoU"] if base_f.is_file() else None
    rows = [r for d, label in ARMS if (r := _row(runs, d, label, base))]
    print("| run | params (M) | epochs | val mIoU | vs baseline | pixel acc | per-image IoU (kdsemseg) | train img/s | wall (min) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for main_row, _ in rows:
        print(main_row)
    print()
    print("| run | " + " | ".join(CLASSES) + " |")
    print("|---|" + "---|" * len(CLASSES))
    for _, pc in rows:
        print(pc)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/work/runs"))
