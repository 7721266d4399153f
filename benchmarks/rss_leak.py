"""Memory-leak check: resident memory (RSS) of one training process, epoch after epoch.

Runs many short epochs on the built-in synthetic set in this process, reads ``VmRSS`` from
``/proc/self/status`` after every epoch (psutil is not needed), prints a table and the slope of
a least-squares line through the epochs after the warm-up. A leak shows as a steady positive
slope; allocator noise as a few MiB up and down around a flat line.

Usage (from the repository root, with the venv):

    .venv/bin/python benchmarks/rss_leak.py                      # 30 epochs, defaults
    .venv/bin/python benchmarks/rss_leak.py --epochs 100 --workers 2 --warmup 5
    .venv/bin/python benchmarks/rss_leak.py --encoder kd_resnet18 --size 96 128 --images 64
    .venv/bin/python benchmarks/rss_leak.py --json rss.json      # also write the samples

Options: --epochs N (30), --images N per split (32), --size H W (64 64), --batch-size (8),
--workers N DataLoader workers (0; >0 measures the main process only, add the workers' RSS with
``ps`` if needed), --warmup N epochs left out of the slope (3), --threads (1), --encoder
(kd_resnet10), --cache (keep decoded samples in memory: RSS grows during epoch 1 by design).
Exit code 0 always: this is a measurement, not a test (read the slope).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def rss_mib() -> float:
    """Resident set size of this process in MiB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("VmRSS not found in /proc/self/status (Linux only)")


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (0 with fewer than 2 points)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0


def make_config(args: argparse.Namespace):
    from segkd.config.schema import config_from_dict

    return config_from_dict({
        "name": "rss", "seed": 0,
        "data": {"name": "synthetic", "batch_size": args.batch_size, "num_workers": args.workers,
                 "cache": args.cache,
                 "options": {"num_images": args.images, "size": list(args.size), "num_classes": 6}},
        "model": {"arch": "unet", "encoder": args.encoder},
        "stages": [{"name": "train", "epochs": args.epochs, "terms": [{"loss": "ce"}],
                    "optimizer": {"name": "adam", "lr": 1e-3}}],
        "trainer": {"progress": False, "log_every": 10, "threads": args.threads},
        "eval": {"splits": ["val"], "per_image_iou": False},
    })


def measure(args: argparse.Namespace, run_dir: Path) -> list[dict]:
    """Train with ``Engine._epoch`` wrapped to sample RSS after every epoch."""
    import gc

    from segkd.engine import Engine

    samples: list[dict] = [{"epoch": 0, "rss_mib": rss_mib(), "time": 0.0}]
    original = Engine._epoch
    t0 = time.time()

    def epoch_then_sample(self, *a, **k):
        original(self, *a, **k)
        gc.collect()
        samples.append({"epoch": len(samples), "rss_mib": rss_mib(), "time": time.time() - t0})

    Engine._epoch = epoch_then_sample
    try:
        Engine(make_config(args), run_dir).run()
    finally:
        Engine._epoch = original
    return samples


def report(samples: list[dict], warmup: int) -> float:
    """Print the table; return the slope in MiB/epoch after the warm-up."""
    print(f"{'epoch':>5} {'RSS MiB':>9} {'delta':>8} {'time s':>7}")
    prev = samples[0]["rss_mib"]
    for s in samples:
        print(f"{s['epoch']:>5} {s['rss_mib']:>9.1f} {s['rss_mib'] - prev:>+8.1f} {s['time']:>7.1f}")
        prev = s["rss_mib"]
    tail = [s for s in samples if s["epoch"] > warmup]
    k = slope([s["epoch"] for s in tail], [s["rss_mib"] for s in tail])
    print(f"slope after epoch {warmup}: {k:+.3f} MiB/epoch over {len(tail)} epochs "
          f"(total {samples[-1]['rss_mib'] - samples[0]['rss_mib']:+.1f} MiB)")
    return k


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--size", type=int, nargs=2, default=(64, 64))
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--encoder", default="kd_resnet10")
    p.add_argument("--cache", action="store_true")
    p.add_argument("--json", type=Path, default=None, help="write the samples here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="segkd-rss-") as tmp:
        samples = measure(args, Path(tmp) / "run")
    k = report(samples, args.warmup)
    if args.json:
        args.json.write_text(json.dumps({"args": {k2: str(v) for k2, v in vars(args).items()},
                                         "samples": samples, "slope_mib_per_epoch": k}, indent=2))


if __name__ == "__main__":
    main()
