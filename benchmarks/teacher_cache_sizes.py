"""Teacher-cache sizes: what `teacher.cache` stores per recipe and prepared size, computed.

The cached tensors' shapes come from one forward of the teacher architecture (random weights)
with the recipe's hooks, at the prepared size; size = images x views x elements x bytes.

    python benchmarks/teacher_cache_sizes.py
"""
from __future__ import annotations

import torch

from segkd.config.schema import load_config
from segkd.distill.losses.contract import contract_of
from segkd.distill.recorder import Recorder
from segkd.engine.build import stage_terms
from segkd.models import create_model

CAMVID_TRAIN, CITYSCAPES_TRAIN = 367, 2975


def positions(recipe: str) -> list[tuple[str, str]]:
    """Teacher positions the recipe's terms read (all stages)."""
    cfg = load_config(recipe)
    terms = [contract_of(t.loss).resolve(t) for s in cfg.stages for t in stage_terms(s)]
    return list(dict.fromkeys(p for t in terms for p in t.positions("teacher")))


@torch.no_grad()
def elements(model: torch.nn.Module, pos: list[tuple[str, str]], hw: tuple[int, int]) -> int:
    """Elements per image of the tensors at ``pos`` ('logits' = the model's output)."""
    rec = Recorder(model, "teacher")
    for p, kind in pos:
        if p != "logits":
            rec.add(p, kind)
    out = model(torch.zeros(1, 3, *hw))
    out = out if isinstance(out, torch.Tensor) else out[0]
    n = sum(rec.get((p, k)).numel() for p, k in pos if p != "logits")
    rec.remove()
    return n + (out.numel() if any(p == "logits" for p, _ in pos) else 0)


def main() -> None:
    unet = create_model("unet", encoder="kd_resnet34", num_classes=11).eval()
    rows = []
    for recipe in ("kd", "ofd", "at", "fitnet", "stagewise"):
        pos = positions(f"configs/camvid/{recipe}.yaml")
        for hw in ((96, 128), (192, 256)):
            n = elements(unet, pos, hw)
            rows.append((f"CamVid {recipe} ({len(pos)} position(s))", f"{hw[1]}x{hw[0]}",
                         CAMVID_TRAIN, n))
    # Cityscapes: DeepLabV3 R101 logits (19 classes) at the prepared 1024x512, computed
    rows.append(("Cityscapes logits (19 classes)", "1024x512", CITYSCAPES_TRAIN, 19 * 512 * 1024))
    rows.append(("Cityscapes logits (19 classes)", "2048x1024", CITYSCAPES_TRAIN, 19 * 1024 * 2048))
    print(f"{'what':38s} {'size':>9s} {'images':>6s} {'elem/img':>10s} {'bf16, 2 views':>14s} "
          f"{'fp32, 2 views':>14s}")
    for what, size, n_img, n in rows:
        bf16, fp32 = (n_img * 2 * n * b / 2 ** 20 for b in (2, 4))
        print(f"{what:38s} {size:>9s} {n_img:6d} {n:10,d} {bf16:11,.0f} MiB {fp32:11,.0f} MiB")


if __name__ == "__main__":
    main()
