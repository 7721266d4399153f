"""Cost of the pre-flight data check (segkd.data.check, ``data.check_files``) on a dataset.

    python benchmarks/data_check_cost.py --data-root ../shared/data/camvid --files 16 64

Builds the train and val splits, then times ``check_splits`` (what train/distill/eval run before
the first step) ``--repeats`` times per sample size; prints the median, min and max seconds, the
pairs decoded and the labeled share of the sampled pixels.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from segkd.data import build_dataset
from segkd.data.check import check_splits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default="../shared/data/camvid")
    ap.add_argument("--dataset", default="camvid")
    ap.add_argument("--splits", nargs="+", default=["train", "val"])
    ap.add_argument("--files", nargs="+", type=int, default=[16, 64], help="check_files values")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    datasets = {s: build_dataset(args.dataset, root=args.data_root, split=s) for s in args.splits}
    for files in args.files:
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            facts = check_splits(datasets, "error", files)
            times.append(time.perf_counter() - start)
        pairs = sum(f.checked for f in facts)
        shares = ", ".join(f"{f.split} {f.labeled / max(1, f.pixels):.1%}" for f in facts)
        print(f"check_files={files}: {pairs} pairs, median {statistics.median(times):.3f} s "
              f"(min {min(times):.3f}, max {max(times):.3f}); labeled: {shares}")


if __name__ == "__main__":
    main()
