"""The engine-overhead check: the same model, data and settings trained
by a bare PyTorch loop and by `segkd train`, side by side, images/s of the training epochs.

    python benchmarks/bare_loop.py --data ../shared/data/camvid --epochs 2 --size 96,128 \
        --threads 1 --precision bf16 --json out.json

The bare loop uses the same model class (segkd.models.create_model), the same dataset object and
transforms (so data decoding costs the same), fused Adam + one-cycle per batch, CE with void
ignored, channels_last and CPU bf16 autocast when asked, and nothing else: no Fabric, no
Distiller, no hooks, no checkpoints, no validation. segkd's number is its summary's
train_images_per_s (training epochs only; validation and checkpoint time excluded, as for the
bare loop).

Same treatment for both: the malloc settings `segkd train` applies on the CPU (the bare loop's
process applies them too), `--compile` compiles both students (`trainer.compile=true` for segkd),
and the order alternates from round to round; the ratio segkd/bare is the median of per-round
ratios with a bootstrap 95% interval (benchmarks/bench_stats.py).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_stats import fmt_ratio, paired_ratio  # noqa: E402  (benchmarks/ is not a package)


def bare_epochs(data: str, epochs: int, size: tuple[int, int], precision: str, workers: int,
                compile: bool = False) -> float:
    from segkd.data import build_dataset, build_transforms
    from segkd.engine.data import make_loader
    from segkd.models import create_model

    ds = build_dataset("camvid", root=data, split="train", cache=True)
    ds.transform = build_transforms(True, size=size, hflip=True, ignore_index=ds.ignore_index)
    loader = make_loader(ds, 8, True, workers, 0)
    torch.manual_seed(0)
    model = create_model("unet", "kd_resnet18", 11).to(memory_format=torch.channels_last).train()
    if compile:
        model.compile()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4, fused=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-3, total_steps=epochs * len(loader), pct_start=0.1)
    images, seconds = 0, 0.0
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        t = time.perf_counter()
        for batch in loader:
            x = batch["image"].contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), batch["mask"], ignore_index=11)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            images += x.shape[0]
        seconds += time.perf_counter() - t
    return images / seconds


def segkd_epochs(data: str, epochs: int, size: tuple[int, int], precision: str, workers: int,
                 threads: int, compile: bool = False) -> float:
    with tempfile.TemporaryDirectory() as d:
        prec = "bf16-mixed" if precision == "bf16" else "32"
        cmd = [sys.executable, "-m", "segkd.cli", "-q", "train", "configs/camvid/unet_r18_scratch.yaml",
               "--run-dir", f"{d}/run", "--set", f"stages.0.epochs={epochs}", "--set", f"data.root={data}",
               "--set", f"data.size=[{size[0]},{size[1]}]", "--set", f"trainer.precision={prec}",
               "--set", f"data.num_workers={workers}", "--set", f"trainer.threads={threads}",
               "--set", "eval.splits=[]", "--set", "data.val_split=null",
               "--set", f"trainer.compile={'true' if compile else 'false'}"]
        subprocess.run(cmd, check=True, capture_output=True)
        return json.loads(Path(f"{d}/run/summary.json").read_text())["train_images_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/camvid")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--size", default="96,128")
    ap.add_argument("--precision", default="bf16", choices=["32", "bf16"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False)
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from segkd.engine.fabric import quiet_malloc

    quiet_malloc()  # what `segkd train` applies on the CPU, so both loops run under it
    size = tuple(int(v) for v in a.size.split(","))
    rows = []
    for r in range(a.rounds):  # interleaved, the order alternating, so load hits both alike
        runs = {"bare": lambda: bare_epochs(a.data, a.epochs, size, a.precision, a.workers, a.compile),
                "segkd": lambda: segkd_epochs(a.data, a.epochs, size, a.precision, a.workers,
                                              a.threads, a.compile)}
        order = ["bare", "segkd"] if r % 2 == 0 else ["segkd", "bare"]
        got = {k: runs[k]() for k in order}
        rows.append({"round": r, "order": order, "bare_img_s": round(got["bare"], 2),
                     "segkd_img_s": round(got["segkd"], 2), "ratio": round(got["segkd"] / got["bare"], 3)})
        print(rows[-1], flush=True)
    # time per image: segkd/bare < 1 means segkd is faster
    q = paired_ratio([1 / r["segkd_img_s"] for r in rows], [1 / r["bare_img_s"] for r in rows],
                     "segkd", "bare")
    print(f"segkd/bare time per image: {fmt_ratio(q)}: {q['verdict']}")
    out = {"args": vars(a), "rows": rows, "date": time.strftime("%Y-%m-%d %H:%M"),
           "malloc": "segkd", "segkd_over_bare_time": q,
           "mean_ratio": round(sum(r["ratio"] for r in rows) / len(rows), 3)}
    print(json.dumps(out))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
