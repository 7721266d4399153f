"""Loader sizing (`num_workers: auto`) and the data-wait share every epoch reports."""
from __future__ import annotations

import json
import time

import pytest
import torch

from segkd.config.schema import config_from_dict
from segkd.core.errors import ConfigError
from segkd.engine.data import MAX_AUTO_WORKERS, resolve_workers


@pytest.mark.parametrize("value,device,world,cpus,expected", [
    (3, "cuda", 1, 16, 3),            # an explicit count is taken as given
    (0, "cpu", 1, 64, 0),
    ("auto", "cpu", 1, 2, 1),         # CPU-only: one worker, the cores go to the model
    ("auto", "cpu", 1, 1, 0),         # a single core: load inline
    ("auto", "cuda", 1, 16, MAX_AUTO_WORKERS),
    ("auto", "cuda", 1, 4, 3),        # one CPU left for the training process
    ("auto", "cuda", 8, 16, 1),       # 8 ranks on a 16-CPU node: 2 CPUs each
    ("auto", "cuda", 4, 64, MAX_AUTO_WORKERS),
])
def test_resolve_workers(value, device, world, cpus, expected):
    assert resolve_workers(value, device, world, cpus=cpus) == expected


def test_num_workers_accepts_auto_and_counts_only(tiny):
    assert config_from_dict(tiny(data={"num_workers": "auto"})).data.num_workers == "auto"
    assert config_from_dict(tiny(data={"num_workers": 4})).data.num_workers == 4
    with pytest.raises(ConfigError, match="num_workers"):
        config_from_dict(tiny(data={"num_workers": -1}))
    with pytest.raises(ConfigError, match="num_workers"):
        config_from_dict(tiny(data={"num_workers": "many"}))


class _Loader:
    """A loader of ``n`` batches that takes ``delay`` seconds to produce each one."""

    def __init__(self, n: int, delay: float) -> None:
        self.n, self.delay = n, delay

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        for _ in range(self.n):
            time.sleep(self.delay)
            yield {"image": torch.randn(2, 3, 16, 16), "mask": torch.randint(0, 3, (2, 16, 16))}


def _epoch(loader) -> dict:
    from lightning.fabric import Fabric

    from segkd.distill.distiller import Distiller, Term
    from segkd.engine.logger import RunLogger
    from segkd.engine.state import StageRun
    from segkd.engine.train import EpochSpec, train_epoch

    fabric = Fabric(accelerator="cpu", devices=1)
    student = torch.nn.Conv2d(3, 3, 1)
    d = Distiller(student)
    d.configure([Term(name="ce", loss="ce", teacher=None)], torch.zeros(2, 3, 16, 16))
    opt = torch.optim.SGD(d.parameters(), lr=0.1)
    module, opt = fabric.setup(d, opt)
    return train_epoch(fabric, StageRun(module=module, opt=opt, loader=loader, iters=len(loader)),
                       EpochSpec(labeled=True, title="t", where="test", log_every=100),
                       RunLogger(None, False, False))


def test_train_epoch_reports_the_share_spent_waiting_for_data():
    slow = _epoch(_Loader(4, delay=0.25))  # each batch: 0.25 s of loading vs ~1 ms of compute
    assert 0.5 < slow["data_wait"] <= 1.0
    assert slow["steps"] == 4 and slow["images"] == 8
    fast = _epoch(_Loader(4, delay=0.0))
    assert 0.0 <= fast["data_wait"] < slow["data_wait"]


def test_run_logs_data_wait_and_says_when_loading_is_the_bottleneck(tmp_path, tiny, capsys):
    from segkd.engine import Engine, health

    cfg = config_from_dict(tiny(stages=[{"name": "train", "epochs": 2, "terms": [{"loss": "ce"}],
                                         "optimizer": {"name": "adam", "lr": 1e-3}}]))
    eng = Engine(cfg, tmp_path / "run")
    # every epoch after the first is reported as data-bound: the run says so, once
    eng._say_if_data_bound(0.9, epoch=0)
    assert not eng._slow_data_said  # the first epoch pays for worker start-up: never judged
    eng.run()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    waits = [r["train/data_wait"] for r in rows if "train/data_wait" in r]
    assert len(waits) == 2 and all(0.0 <= w <= 1.0 for w in waits)
    assert "loader worker(s) per process" in capsys.readouterr().err
    eng._say_if_data_bound(health.DATA_BOUND + 0.1, epoch=1)
    eng._say_if_data_bound(health.DATA_BOUND + 0.1, epoch=2)
    err = capsys.readouterr().err
    assert err.count("data loading is the bottleneck") == 1 and "num_workers" in err


def _synthetic_train():
    from segkd.config.schema import DataCfg
    from segkd.engine.data import build_data

    cfg = DataCfg(name="synthetic", batch_size=4, num_workers=0, hflip=True, scale=(0.5, 1.5),
                  crop=(24, 24), options={"num_images": 12, "size": [32, 32], "num_classes": 4})
    return build_data(cfg).train


def _epoch_batches(ds, workers: int, epoch: int) -> list[dict]:
    from segkd.engine.data import make_loader

    loader = make_loader(ds, 4, True, workers, seed=3)
    loader.sampler.set_epoch(epoch)
    return list(loader)


def test_augmentation_depends_on_seed_and_epoch_not_on_workers():
    ds = _synthetic_train()
    inline, two = _epoch_batches(ds, 0, epoch=1), _epoch_batches(ds, 2, epoch=1)
    for a, b in zip(inline, two, strict=True):
        assert a["name"] == b["name"]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    other = _epoch_batches(ds, 0, epoch=2)
    assert not all(torch.equal(a["image"], b["image"]) for a, b in zip(inline, other))


def test_per_sample_seeding_leaves_accelerator_generators_alone(monkeypatch):
    """Seeding each sample must not go through torch.manual_seed: on a CUDA build that queues a
    lazy CUDA seeding and formats a stack trace per sample (a third of a cached loader's time)."""
    def refuse(*_a, **_k):
        raise AssertionError("per-sample seeding touched the CUDA generators")

    monkeypatch.setattr(torch.cuda, "manual_seed_all", refuse)
    ds = _synthetic_train()
    assert len(_epoch_batches(ds, 0, epoch=0)) == 3


def test_cached_training_items_hold_the_resized_image_and_match_the_uncached_pipeline():
    """With data.cache the fixed resize is paid once: the cache holds the prepared item, and
    every sample equals what the one-piece pipeline gives for the same random state."""
    from segkd.config.schema import DataCfg
    from segkd.data.transforms import build_transforms
    from segkd.engine.data import build_data

    opts = {"num_images": 6, "size": [40, 48], "num_classes": 4}
    cached = build_data(DataCfg(name="synthetic", size=(20, 24), scale=(0.75, 1.25), crop=(16, 16),
                                color_jitter=0.3, cache=True, options=opts)).train
    plain = build_data(DataCfg(name="synthetic", cache=False, options=opts)).train
    plain.transform = build_transforms(True, size=(20, 24), scale=(0.75, 1.25), crop=(16, 16),
                                       color_jitter=0.3, ignore_index=plain.ignore_index)
    for i in range(len(cached)):
        for seed in (0, 1):
            torch.manual_seed(seed)
            a = cached[i]
            torch.manual_seed(seed)
            b = plain[i]
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    image, mask = cached._cache[0]
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, 20, 24)
    assert tuple(mask.shape) == (20, 24)


def test_cached_eval_items_resize_the_image_only():
    from segkd.config.schema import DataCfg
    from segkd.data import dataset_from_config

    cfg = DataCfg(name="synthetic", size=(20, 24), cache=True,
                  options={"num_images": 4, "size": [40, 48], "num_classes": 4})
    val = dataset_from_config(cfg, "val")
    item = val[0]
    assert tuple(item["image"].shape) == (3, 20, 24) and tuple(item["mask"].shape) == (40, 48)
    image, _ = val._cache[0]
    assert image.dtype == torch.uint8 and torch.equal(val[0]["image"], item["image"])
