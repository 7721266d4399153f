"""Data-pipeline benchmark: can segkd's CamVid training loader keep up with the training step?

Measures images/s of ``segkd.engine.data.make_loader`` over the CamVid train split with the
camvid recipe's transforms (resize to --size, horizontal flip, normalise; PNG decode every time,
``cache: false``, plus an in-memory ``cache: true`` pass at 0 workers = augmentation only) at
the recipe's default worker count and at 0/1/2 workers, next to the images/s a student step
(bare CE step) and segkd's KD step consume at the same batch, resolution and precision.

    python benchmarks/bench_data.py --size 192,256 --batch 8 --precision bf16 --json out.json

Loader and step measurements alternate in rounds (median per row). Each loader measurement
builds a fresh loader; its first batch (worker start-up) is timed separately from the
steady-state rate over the next ``--batches`` batches.

``--device`` (default: cuda when available) is where the steps run. On CUDA the loader pins
its batches (``pin_memory``) and each batch is copied to the GPU (``non_blocking``) inside the
timed loop, as a training loop would; step times are wall clock with ``torch.cuda.synchronize``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_step as bs  # noqa: E402  (the shared helpers of the step benchmark)

CPU = torch.device("cpu")


def default_workers(device_type: str = "cpu") -> int:
    """``data.num_workers`` of the camvid recipes (configs/camvid/_base.yaml), else DataCfg's,
    as a training run on ``device_type`` resolves it (``"auto"`` depends on the device)."""
    from segkd.config.schema import DataCfg, read_yaml
    from segkd.engine.data import resolve_workers

    base = bs.REPO / "configs" / "camvid" / "_base.yaml"
    value = DataCfg().num_workers
    if base.is_file():
        value = read_yaml(base).get("data", {}).get("num_workers", value)
    return resolve_workers(value, device_type)


def train_dataset(size: tuple[int, int], cache: bool, root: Path, count: int):
    """The training split through segkd's build_data (CamVid, else the synthetic set)."""
    from segkd.config.schema import DataCfg
    from segkd.engine.data import build_data

    if root.is_dir():
        cfg = DataCfg(name="camvid", root=str(root), size=size, cache=cache, val_split=None)
    else:
        cfg = DataCfg(name="synthetic", size=size, cache=cache, val_split=None,
                      options={"size": list(size), "num_images": count})
    return build_data(cfg).train, cfg.name


def time_loader(ds, batch: int, workers: int, batches: int, seed: int,
                device: torch.device = CPU) -> dict[str, float]:
    """A fresh loader: seconds to its first batch, then images/s over ``batches`` more.
    On CUDA the loader pins memory and every batch is copied to the device (timed)."""
    from segkd.engine.data import make_loader

    cuda = device.type == "cuda"
    loader = make_loader(ds, batch, True, workers, seed, pin_memory=cuda)

    def fetch(it) -> dict:
        b = next(it)
        if cuda:
            b = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
                 for k, v in b.items()}
        return b

    it = iter(loader)
    t0 = time.perf_counter()
    fetch(it)
    bs.sync(device)
    first = time.perf_counter() - t0
    n, t1 = 0, time.perf_counter()
    for _ in range(batches):
        try:
            b = fetch(it)
        except StopIteration:  # short epoch: start the next one (same loader)
            it = iter(loader)
            b = fetch(it)
        n += b["image"].shape[0]
    bs.sync(device)
    rate = n / (time.perf_counter() - t1)
    del it, loader
    return {"first_batch_s": first, "images_per_s": rate}


def warm_cache(ds) -> None:
    """Decode (and resize) every item once so a ``cache=True`` dataset serves them from memory."""
    for i in range(len(ds)):
        ds.load_prepared(i)


def step_rate(pair: str, precision: str, batch: int, size: tuple[int, int], channels_last: bool,
              rounds: int, root: Path,
              device: torch.device = CPU) -> dict[str, bs.Samples]:
    """Seconds per step of the bare student step and segkd's KD step (interleaved) on
    ``device`` (``bs.measure`` synchronises CUDA around every timed step)."""
    teacher, student, _ = bs.build_pair(pair)
    batches, ignore, _ = bs.load_batches(size, batch, 2, device, channels_last, root)
    su = bs.Setup(teacher, student, device, precision, channels_last, False, ignore, pair)
    variants, _ = bs.build_variants(su, ["student", "segkd_kd"], size, batches)
    return bs.measure(variants, batches, rounds, 1, 1, device)[0]


def measure_loaders(size, batch, workers: list[int], batches: int, rounds: int, root: Path,
                    device: torch.device = CPU) -> tuple[dict[str, list[dict]], str]:
    """Rows ``"w=N cache=off"`` (fresh dataset each time: every PNG decoded) and
    ``"w=0 cache=on"`` (decoded once beforehand: augmentation, normalisation, collation)."""
    count = max(batch * (batches + 2), 64)
    cached, source = train_dataset(size, True, root, count)
    warm_cache(cached)
    out: dict[str, list[dict]] = {}
    for r in range(rounds):
        for w in workers:
            ds, _ = train_dataset(size, False, root, count)
            out.setdefault(f"w={w} cache=off", []).append(
                time_loader(ds, batch, w, batches, r, device))
        out.setdefault("w=0 cache=on", []).append(time_loader(cached, batch, 0, batches, r, device))
    return out, source


def summarise(loaders: dict[str, list[dict]], steps: dict[str, bs.Samples], batch: int,
              default_w: int, ctx: dict) -> tuple[list[dict], dict]:
    """Median rows, and the verdicts: loader rate over each step's consumption rate."""
    rows = []
    for name, runs in loaders.items():
        rows.append({**ctx, "what": f"loader {name}",
                     "images_per_s": statistics.median(r["images_per_s"] for r in runs),
                     "first_batch_s": statistics.median(r["first_batch_s"] for r in runs)})
    for name, s in steps.items():
        rows.append({**ctx, "what": f"step {name}",
                     "images_per_s": batch / statistics.median(s.seconds), "first_batch_s": None})
    rate = {r["what"]: r["images_per_s"] for r in rows}
    verdict: dict[str, float] = {}
    for step in steps:
        need = rate[f"step {step}"]
        for w in sorted({0, default_w}):
            verdict[f"loader w={w} / step {step}"] = rate[f"loader w={w} cache=off"] / need
        # serial CPU share of data work when the loader runs in the training process (w=0)
        t_data, t_step = 1 / rate["loader w=0 cache=off"], 1 / need
        verdict[f"data share of CPU time, w=0, {step}"] = t_data / (t_data + t_step)
    return rows, verdict


def print_tables(rows: list[dict], verdict: dict) -> None:
    from rich.table import Table

    tab = Table(title="data pipeline vs training step (images/s, median of rounds)")
    for col in ("what", "device", "precision", "batch", "HxW", "img/s", "first batch s"):
        tab.add_column(col, justify="left" if col == "what" else "right")
    for r in rows:
        fb = "-" if r["first_batch_s"] is None else f"{r['first_batch_s']:.2f}"
        tab.add_row(r["what"], r["device"], r["precision"], str(r["batch"]), r["resolution"],
                    f"{r['images_per_s']:.1f}", fb)
    vt = Table(title="loader rate / step consumption (>1: loading keeps up)")
    vt.add_column("ratio")
    vt.add_column("value", justify="right")
    for k, v in verdict.items():
        vt.add_row(k, f"{v:.2f}")
    bs.console().print(tab, vt)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pair", choices=sorted(bs.PAIRS), default="unet")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="where the steps run; cuda also pins the loader's memory")
    p.add_argument("--precision", choices=["32", "bf16"], default="32")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", default="192,256", help="H,W")
    p.add_argument("--workers", default="0,1,2", help="comma list; the recipe default is added")
    p.add_argument("--batches", type=int, default=10, help="timed batches per loader measurement")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--step-rounds", type=int, default=3)
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--data-root", default=str(bs.CAMVID))
    p.add_argument("--note", default="")
    p.add_argument("--json", default=None)
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> dict:
    a = parse_args(argv)
    info = bs.machine_info()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    size = tuple(int(v) for v in a.size.split(","))
    root = Path(a.data_root)
    default_w = default_workers(device.type)
    workers = sorted({int(w) for w in a.workers.split(",")} | {default_w})
    loaders, source = measure_loaders(size, a.batch, workers, a.batches, a.rounds, root, device)
    steps = step_rate(a.pair, a.precision, a.batch, size, a.channels_last, a.step_rounds, root,
                      device)
    ctx = {"pair": a.pair, "device": device.type, "precision": a.precision, "batch": a.batch,
           "resolution": f"{size[0]}x{size[1]}", "data": source, "default_workers": default_w}
    rows, verdict = summarise(loaders, steps, a.batch, default_w, ctx)
    print_tables(rows, verdict)
    result = {"machine": {**info, "threads": torch.get_num_threads(),
                          "loadavg_end": list(os.getloadavg())},
              "args": vars(a), "note": a.note, "rows": rows, "verdict": verdict}
    bs.write_json(a.json, result)
    return result


if __name__ == "__main__":
    main()
