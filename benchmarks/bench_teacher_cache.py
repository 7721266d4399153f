"""KD step with segkd's teacher cache against the student step + loss and the live KD step.

Variants, one training step each per round, the order rotated every round (so load on a shared
machine hits every variant alike); ratios are medians of per-round ratios:

    floor       segkd's KD step (CE + KD) with the teacher's logits already in memory, in the
                compute dtype: the student step + loss, nothing to look up
    cached_mem  segkd's KD step, teacher logits looked up per batch from the memory cache
                (StageCache.batch: gather rows by (index, view), move, lay out)
    cached_disk the same from the memory-mapped disk cache (rows CRC-checked when opened)
    live        segkd's KD step with the live teacher forward

    python benchmarks/bench_teacher_cache.py --arch unet --teacher kd_resnet34 \
        --student kd_resnet18 --size 96,128 --precision bf16 --rounds 15 --json out.json

Weights are random (timing only). The batches are random images of a 32-image "dataset"
with random flips; each step draws a random batch of ``--batch`` of them.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from segkd.config.schema import OptimCfg
from segkd.distill.cache_store import ArraySpec, MemoryArray, PartialArray
from segkd.distill.distiller import Distiller, Term
from segkd.distill.teacher_cache import CachedPosition, StageCache
from segkd.engine.optim import build_optimizer
from segkd.models import create_model

POS = ("logits", "output")
N_IMAGES = 32


def _setup(args):
    from lightning.fabric import Fabric

    torch.manual_seed(0)
    classes = args.classes
    teacher = create_model(args.arch, encoder=args.teacher, num_classes=classes).eval()
    student = create_model(args.arch, encoder=args.student, num_classes=classes)
    fabric = Fabric(accelerator="cpu", devices=1,
                    precision="bf16-mixed" if args.precision == "bf16" else "32")
    d = Distiller(student, teacher)
    d.store_teacher_weights_in(torch.bfloat16 if args.precision == "bf16" else None)
    d.to(memory_format=torch.channels_last)
    teacher.to(memory_format=torch.channels_last)
    h, w = args.size
    d.configure([Term(name="ce", loss="ce", teacher=None), Term(name="kd", loss="kd", options={"temperature": 2.0})],
                torch.zeros(2, 3, min(h, 128), min(w, 128)))
    opt = build_optimizer(d, OptimCfg(name="adam", lr=1e-4))
    module, opt = fabric.setup(d, opt)
    return fabric, d, module, opt


def _cache(fabric, d, images, folder: Path):
    """Teacher logits of every (image, view) as the engine's cache builds them: memory and disk."""
    prec = fabric.strategy.precision
    rows = []
    with torch.no_grad():
        for i in range(0, len(images), 8):
            x = torch.cat([images[i:i + 8], images[i:i + 8].flip(-1)])
            x = prec.convert_input(x.contiguous(memory_format=torch.channels_last))
            with fabric.autocast():
                t = d.teacher_outputs(x)[POS]
            n = len(x) // 2
            for j in range(n):  # row = index * 2 + view
                rows += [t[j], t[n + j]]
    t = torch.stack(rows)
    dtype = {torch.float32: "float32", torch.bfloat16: "bfloat16"}[t.dtype]
    spec = ArraySpec("logits.output." + dtype, len(rows), tuple(t.shape[1:]), dtype)
    mem = MemoryArray(spec)
    mem.write(list(range(len(rows))), t)
    part = PartialArray(folder, spec, {"bench": 1}, 2)
    part.write(list(range(len(rows))), t)
    disk = part.finish()
    cl = t.dim() == 4 and not t.is_contiguous()
    return (StageCache({POS: CachedPosition(mem, cl)}, 2),
            StageCache({POS: CachedPosition(disk, cl)}, 2), t)


def _step(fabric, module, opt, x, y, kw) -> None:
    out = module(x, y, keep_logits=False, **kw)
    fabric.backward(out["loss"])
    opt.step()
    opt.zero_grad(set_to_none=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="unet")
    ap.add_argument("--teacher", default="kd_resnet34")
    ap.add_argument("--student", default="kd_resnet18")
    ap.add_argument("--classes", type=int, default=11)
    ap.add_argument("--size", default="96,128", help="H,W")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    args.size = tuple(int(v) for v in args.size.split(","))
    if args.threads:
        torch.set_num_threads(args.threads)
    fabric, d, module, opt = _setup(args)
    g = torch.Generator().manual_seed(1)
    images = torch.randn(N_IMAGES, 3, *args.size, generator=g)
    with tempfile.TemporaryDirectory() as tmp:
        mem, disk, table = _cache(fabric, d, images, Path(tmp))
        variants = ["floor", "cached_mem", "cached_disk", "live"]
        times: dict[str, list[float]] = {v: [] for v in variants}
        for r in range(args.warmup + args.rounds):
            order = variants[r % 4:] + variants[:r % 4]
            for v in order:
                idx = torch.randperm(N_IMAGES, generator=g)[:args.batch]
                view = torch.randint(0, 2, (args.batch,), generator=g)
                x = torch.where(view.view(-1, 1, 1, 1).bool(), images[idx].flip(-1), images[idx])
                x = x.contiguous(memory_format=torch.channels_last)
                y = torch.randint(0, args.classes, (args.batch, *args.size), generator=g)
                batch = {"index": idx, "view": view}
                ready = {POS: table[idx * 2 + view]}  # the floor's logits: outside the clock
                t0 = time.perf_counter()
                if v == "floor":
                    kw = {"teacher_out": ready}
                elif v == "cached_mem":
                    kw = {"teacher_out": mem.batch(batch, fabric.device)}
                elif v == "cached_disk":
                    kw = {"teacher_out": disk.batch(batch, fabric.device)}
                else:
                    kw = {}
                _step(fabric, module, opt, x, y, kw)
                if r >= args.warmup:
                    times[v].append(time.perf_counter() - t0)
    med = {v: statistics.median(ts) for v, ts in times.items()}
    ratio = {f"{a}/{b}": statistics.median(x / y for x, y in zip(times[a], times[b]))
             for a, b in (("cached_mem", "floor"), ("cached_disk", "floor"), ("cached_mem", "live"),
                          ("cached_disk", "live"), ("floor", "live"))}
    print(f"{args.arch} {args.teacher}->{args.student} {args.size[1]}x{args.size[0]} "
          f"{args.precision} batch {args.batch}, {args.rounds} rounds, {torch.get_num_threads()} threads")
    for v in variants:
        print(f"  {v:12s} {med[v] * 1000:8.1f} ms/step (median)")
    for k, val in ratio.items():
        print(f"  {k:22s} {val:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": {**vars(args), "size": list(args.size)},
                                               "median_s": med, "ratios": ratio, "times": times},
                                              indent=1))


if __name__ == "__main__":
    main()
