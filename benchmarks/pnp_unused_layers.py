"""Does the CamVid teacher use the layers camvid_pnp.yaml replaces? (docs/benchmarks.md, Plug and Play)

For each Plug-and-Play arm of docs/results/camvid_pnp (the replaced convolutions are in its
summary.json), the teacher's val mIoU (a) with those convolutions freshly replaced, before any
training, and (b) with the residual branch of every block holding one zeroed (its bn2 weight and
bias set to 0: the block becomes its shortcut). Also for the camvid_pnp_front.yaml paths (a only).
Usage: python benchmarks/pnp_unused_layers.py  (../shared beside the checkout; ~2 min on 1 core)
"""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from segkd.apps.eval_checkpoint import checkpoint_split  # noqa: E402
from segkd.engine.data import make_loader  # noqa: E402
from segkd.eval.evaluate import evaluate  # noqa: E402
from segkd.models.spec import apply_replacements, model_from_checkpoint  # noqa: E402

TEACHER = ROOT.parent / "shared" / "teachers" / "camvid-unet-r34-128x96.pt"
FRONT = ["encoder.model.layer1.*.conv*", "encoder.model.layer2.*.conv*",
         "encoder.model.layer3.*.conv*", "decoder.blocks.*.conv*.0"]


def main() -> None:
    torch.set_num_threads(1)
    teacher, _, ckpt = model_from_checkpoint(str(TEACHER))
    _, ds = checkpoint_split(ckpt, "val", str(ROOT.parent / "shared" / "data" / "camvid"), None, (96, 128))
    loader = make_loader(ds, 8, False, 0, 0)

    def miou(model) -> float:
        model.eval()
        return float(evaluate(lambda x, _m: {"logits": model(x)}, loader, ds.num_classes,
                              ds.ignore_index, torch.device("cpu"), per_image=False)["mIoU"])

    out = {"teacher": miou(teacher)}
    for arm in ("pnp60", "pnp40"):
        summary = json.loads((ROOT / "docs/results/camvid_pnp" / arm / "kd_resnet34/f1.0/s0/summary.json").read_text())
        torch.manual_seed(0)
        fresh = copy.deepcopy(teacher)
        apply_replacements(fresh, summary["replacements"])
        out[f"{arm}_fresh"] = miou(fresh)
        zeroed = copy.deepcopy(teacher)
        for block in sorted({p.rsplit(".", 1)[0] for p in summary["replacements"][0]["paths"]}):
            bn = zeroed.get_submodule(block + ".bn2")
            torch.nn.init.zeros_(bn.weight)
            torch.nn.init.zeros_(bn.bias)
        out[f"{arm}_branches_zeroed"] = miou(zeroed)
    torch.manual_seed(0)
    front = copy.deepcopy(teacher)
    apply_replacements(front, [{"paths": FRONT, "block": "dwsep", "options": {"kernel_size": 5, "dilation": 2}}])
    out["front60_fresh"] = miou(front)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
