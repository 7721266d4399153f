"""A 2-process DDP run on CPU (gloo, Lightning Fabric's subprocess launcher) gives the same model
and metrics as one process with the same global batch.

Why the comparison can be tight: the training set is one global batch (4 images: 1 x 4 vs
2 x 2), every sample's augmentation is seeded by (seed, epoch, index) whatever rank loads it,
DDP averages the gradients of two per-rank mean losses (= the mean over 4 images, no ignored
pixels), SGD is linear in the gradient, and the validation confusion matrices are summed
across ranks. BatchNorm is the one thing that differs: without SyncBatchNorm (CUDA only)
each rank normalises with the statistics of its own 2 images, so these tests freeze every
BatchNorm (eval mode, fixed statistics): then weights agree to 1.5e-8 and every metric is
identical (measured). With BatchNorm training, the same 2-step runs differ as expected
(measured: val mIoU 0.1450 vs 0.1474, pixel acc 0.298 vs 0.304, BN running statistics up to
0.38 apart): not a bug, per-rank batch statistics; see docs/troubleshooting.md.

The one-process reference runs in this process (same Engine the CLI calls) to save a torch
import; the two-process run goes through the CLI, whose command Fabric re-runs for rank 1.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from segkd.core.checkpoint import load_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from test_errors import cli, write_config  # noqa: E402

FROZEN_BN = ["*bn*", "*downsample.1", "decoder.blocks.*.conv1.1", "decoder.blocks.*.conv2.1"]
STAGE = {"epochs": 2, "frozen": FROZEN_BN, "optimizer": {"name": "sgd", "lr": 0.05}}


def _config(tmp: Path, distill_from: Path | None) -> Path:
    stage = dict(STAGE, terms=[{"loss": "ce"}] + ([{"loss": "kd"}] if distill_from else []))
    extra = {"teacher": {"checkpoint": str(distill_from)}} if distill_from else {}
    # fp32: the match below is exact arithmetic; under auto, a CPU with AVX512-BF16 runs bf16
    # autocast, whose rounding differs between 1 x 4 and 2 x 2 images
    return write_config(tmp / "cfg.yaml", stages=[stage], **extra, trainer={"precision": "32"},
                        data={"options": {"num_images": 4}}, eval={"per_image_iou": True})


def _run_here(cfg: Path, run: Path) -> dict:
    """One process, in this one: ``Engine(load_config(cfg), run).run()``."""
    from segkd.config.schema import load_config
    from segkd.engine import Engine

    threads = torch.get_num_threads()
    try:
        return Engine(load_config(cfg), run).run()
    finally:
        torch.set_num_threads(threads)  # trainer.threads changes it process-wide


def _run(cfg: Path, run: Path, command: str, *sets: str) -> dict:
    args = [a for s in sets for a in ("--set", s)]
    proc = cli(command, str(cfg), "--run-dir", str(run), *args, timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((run / "summary.json").read_text())


@pytest.mark.parametrize("command", ["train", "distill"])
def test_two_cpu_processes_match_one(tmp_path, command, request):
    teacher = request.getfixturevalue("teacher_ckpt") if command == "distill" else None
    cfg = _config(tmp_path, teacher)
    one = _run_here(cfg, tmp_path / "one")
    two = _run(cfg, tmp_path / "two", command, "trainer.devices=2", "trainer.accelerator=cpu",
               "data.batch_size=2")
    assert (one["world_size"], two["world_size"]) == (1, 2)
    a, b = one["splits"]["val"], two["splits"]["val"]
    assert b["mIoU"] == pytest.approx(a["mIoU"], abs=1e-4)
    assert b["pixel_acc"] == pytest.approx(a["pixel_acc"], abs=1e-4)
    assert b["per_class_iou"] == pytest.approx(a["per_class_iou"], abs=1e-4)
    assert b["per_image_iou"] == pytest.approx(a["per_image_iou"], abs=1e-4)
    wa = load_checkpoint(tmp_path / "one" / "last.pt")["state_dict"]
    wb = load_checkpoint(tmp_path / "two" / "last.pt")["state_dict"]
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], atol=1e-5, rtol=1e-4, msg=k)


def _eval_worker(rank: int, world: int, rdv: str, out: str) -> None:
    """One of ``world`` gloo processes: evaluate a fixed conv net on the 5-image synthetic val
    split through the engine's loader and ``evaluate``, summing across processes; rank 0 saves
    the summed confusion matrix."""
    import torch.distributed as dist

    from segkd.data import build_dataset
    from segkd.engine.data import make_loader
    from segkd.eval.evaluate import evaluate

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rdv}", rank=rank, world_size=world)
    try:
        mat = _evaluate_5(rank, world, build_dataset, make_loader, evaluate,
                          lambda t: (dist.all_reduce(t), t)[1])
        if rank == 0:
            torch.save(mat, out)
    finally:
        dist.destroy_process_group()


def _evaluate_5(rank, world, build_dataset, make_loader, evaluate, reduce) -> torch.Tensor:
    """The confusion matrix ``evaluate`` reduces (its first reduced tensor) for 5 val images."""
    ds = build_dataset("synthetic", split="val", num_images=5, size=[24, 24], num_classes=4)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 4, 3, padding=1)).eval()
    loader = make_loader(ds, 2, False, 0, 0, world, rank)
    reduced: list[torch.Tensor] = []
    evaluate(lambda x, _m: {"logits": net(x)}, loader, 4, ds.ignore_index, torch.device("cpu"),
             per_image=False, reduce=lambda t: reduced.append(reduce(t).clone()) or reduced[-1])
    return reduced[0]


def test_ddp_evaluation_counts_every_image_once(tmp_path):
    """5 validation images on 2 gloo processes (3 + 2, no padding) give exactly the confusion
    matrix of one process."""
    import torch.multiprocessing as mp

    from segkd.data import build_dataset
    from segkd.engine.data import make_loader
    from segkd.eval.evaluate import evaluate

    one = _evaluate_5(0, 1, build_dataset, make_loader, evaluate, lambda t: t)
    assert int(one.sum()) == 5 * 24 * 24  # the synthetic masks have no ignored pixels
    mp.spawn(_eval_worker, args=(2, str(tmp_path / "rdv"), str(tmp_path / "cm.pt")), nprocs=2)
    two = torch.load(tmp_path / "cm.pt")
    assert torch.equal(two, one), (two, one)


def test_evaluation_shards_read_each_item_once():
    from segkd.data import build_dataset
    from segkd.engine.data import make_loader

    ds = build_dataset("synthetic", split="val", num_images=5, size=[8, 8])
    for world in (2, 3, 7):
        names = [n for r in range(world) for b in make_loader(ds, 2, False, 0, 0, world, r)
                 for n in b["name"]]
        assert sorted(names) == sorted(p.name for p, _ in ds.items), (world, names)


def test_two_processes_run_a_plan_whose_stage_has_parameters_outside_its_loss(tmp_path,
                                                                              teacher_ckpt):
    """Stage 1 trains layer3 and layer4 with a hint at layer3 only (as a Plug and Play or
    stagewise plan may): layer4's parameters receive no gradient, which DDP refuses unless it
    looks for unused parameters; stage 2 re-wraps the student to train the head. Two processes
    must give the one-process weights (layer4 untouched in both)."""
    hint = {"loss": "mse", "student": "encoder.model.layer3.0.act2",
            "teacher": "encoder.model.layer3.0.act2"}
    sgd = {"name": "sgd", "lr": 0.05, "momentum": 0.0}
    stages = [{"name": "hint", "epochs": 1, "iters_per_epoch": 2, "frozen": FROZEN_BN,
               "trainable": ["encoder.model.layer3", "encoder.model.layer4"], "terms": [hint],
               "optimizer": sgd},
              {"name": "head", "epochs": 1, "iters_per_epoch": 2, "frozen": FROZEN_BN,
               "trainable": ["segmentation_head"], "terms": [{"loss": "ce"}], "optimizer": sgd}]
    cfg = write_config(tmp_path / "cfg.yaml", stages=stages, teacher={"checkpoint": str(teacher_ckpt)},
                       trainer={"precision": "32"}, data={"options": {"num_images": 4}})
    one = _run_here(cfg, tmp_path / "one")
    two = _run(cfg, tmp_path / "two", "distill", "trainer.devices=2", "trainer.accelerator=cpu",
               "data.batch_size=2")
    assert (one["world_size"], two["world_size"]) == (1, 2)
    last = load_checkpoint(tmp_path / "two" / "last.pt")
    wa, wb = load_checkpoint(tmp_path / "one" / "last.pt")["state_dict"], last["state_dict"]
    assert [h["stage"] for h in last["history"]] == [0, 1]
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], atol=1e-5, rtol=1e-4, msg=k)
    from segkd.engine.state import seed_all
    from segkd.models.spec import build_from_spec

    seed_all(0)  # the config's seed: the student's initial weights
    init = build_from_spec(last["model"]).state_dict()
    # (the downsample convs: timm zero-initialises each block's last BN scale, frozen here)
    for k in ("encoder.model.layer4.0.downsample.0.weight", "encoder.model.layer3.0.downsample.0.weight"):
        assert torch.equal(wb[k], init[k]) == ("layer4" in k), k  # layer4 unused, layer3 trained
