"""A run's datasets (from ``segkd.data.dataset_from_config``), its loaders, samplers and collate."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler

from segkd.config.schema import DataCfg
from segkd.data import dataset_from_config, resolve_test_split, select_fraction, write_file_list
from segkd.data.base import SegmentationDataset
from segkd.data.transforms import ViewTags


def pad_collate(batch: list[dict], ignore_index: int = 255) -> dict[str, Any]:
    """Stack samples, padding images (0) and masks (ignore) at the bottom/right when sizes
    differ; ``hw`` keeps each original mask size."""
    hs = [b["image"].shape[-2] for b in batch]
    ws = [b["image"].shape[-1] for b in batch]
    mh = max(b["mask"].shape[-2] for b in batch)
    mw = max(b["mask"].shape[-1] for b in batch)
    H, W = max(hs), max(ws)
    images = torch.stack([F.pad(b["image"], (0, W - b["image"].shape[-1], 0, H - b["image"].shape[-2]))
                          for b in batch])
    masks = torch.stack([F.pad(b["mask"], (0, mw - b["mask"].shape[-1], 0, mh - b["mask"].shape[-2]),
                               value=ignore_index) for b in batch])
    out = {"image": images, "mask": masks, "name": [b["name"] for b in batch],
           "hw": torch.tensor([list(b["mask"].shape[-2:]) for b in batch])}
    if "index" in batch[0]:  # which item and view each sample is (the teacher cache's row)
        out["index"] = torch.tensor([b["index"] for b in batch])
        out["view"] = torch.tensor([b["view"] for b in batch])
    if "window" in batch[0]:  # where each sample's crop lay (the approximate teacher cache)
        out["window"] = torch.tensor([b["window"] for b in batch], dtype=torch.float32)
    return out


class _Collate:
    def __init__(self, ignore_index: int) -> None:
        self.ignore_index = ignore_index

    def __call__(self, batch):
        return pad_collate(batch, self.ignore_index)


@dataclass
class DataBundle:
    train: SegmentationDataset
    val: Optional[SegmentationDataset]
    test: Optional[SegmentationDataset]
    images: Optional[SegmentationDataset]  # unlabeled set for label-free stages (or None)
    classes: list[str]
    ignore_index: int
    mean: tuple
    std: tuple
    select: Optional[SegmentationDataset] = None  # held out of train to choose the best epoch


def check_data(cfg: DataCfg, splits: list[tuple[Optional[str], Any]], relax: str = "data.check=warn",
               train: Optional[str] = None) -> None:
    """The pre-flight data check (``data.check``) on a sample of each split (a split named
    twice, e.g. val used as test, is checked once; ``train``: the training split, whose classes
    must all appear in its sample)."""
    from segkd.data.check import check_splits

    named: dict[str, Any] = {}
    for name, ds in splits:
        if name and ds is not None:
            named.setdefault(name, ds)
    check_splits(named, cfg.check, cfg.check_files, cfg.options, relax=relax, train=train)


def build_data(cfg: DataCfg, run_dir: Path | None = None, need_images: bool = False) -> DataBundle:
    """Build train/val/test datasets (and the unlabeled set if a stage needs one).

    The training fraction is a seeded sample (``fraction_seed``); the chosen file list is
    written to ``run_dir/train_files.txt``.
    """
    train = dataset_from_config(cfg, cfg.train_split, train=True)
    select = None
    if cfg.select_fraction:
        select, train = _hold_out(cfg, train)
    if cfg.fraction < 1.0:
        idx = select_fraction(len(train), cfg.fraction, cfg.fraction_seed)
        train = train.subset(idx)
    val = dataset_from_config(cfg, cfg.val_split) if cfg.val_split else None
    test_split = resolve_test_split(cfg)
    test = dataset_from_config(cfg, test_split) if test_split else None
    check_data(cfg, [(cfg.train_split, train), (cfg.val_split, val), (test_split, test)],
               train=cfg.train_split)
    if run_dir is not None:
        write_file_list(train, range(len(train)), Path(run_dir) / "train_files.txt")
        if select is not None:
            write_file_list(select, range(len(select)), Path(run_dir) / "select_files.txt")
    images = None
    if cfg.unlabeled and need_images:
        images = dataset_from_config(cfg, train=True, unlabeled=True)
    return DataBundle(train, val, test, images, train.classes, train.ignore_index,
                      tuple(train.mean), tuple(train.std), select)


def _hold_out(cfg: DataCfg, train: SegmentationDataset):
    """(select, train): a seeded ``select_fraction`` of the training split, evaluated like val,
    and the rest, which trains."""
    from segkd.core.errors import ConfigError

    n = len(train)
    held = select_fraction(n, cfg.select_fraction, cfg.select_seed)
    if len(held) >= n:
        raise ConfigError(f"data.select_fraction={cfg.select_fraction} leaves no training image "
                          f"of {n}")
    held_set = set(held)
    select = dataset_from_config(cfg, cfg.train_split).subset(held)
    return select, train.subset([i for i in range(n) if i not in held_set])


class SeededSampler(torch.utils.data.Sampler):
    """Yields ``(index, sample_seed)``: every sample's augmentation is seeded from
    (run seed, epoch, index), so an epoch is reproducible whatever the worker count and after
    a resume, even with persistent workers."""

    def __init__(self, base, seed: int) -> None:
        self.base, self.seed, self.epoch = base, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if isinstance(self.base, DistributedSampler):
            self.base.set_epoch(epoch)
        elif isinstance(self.base, RandomSampler):
            self.base.generator.manual_seed(self.seed * 100_003 + epoch)

    def __iter__(self):
        tag = (self.seed * 1_000_003 + self.epoch) * 1_000_033
        return ((i, (tag + i) % (2 ** 62)) for i in self.base)

    def __len__(self) -> int:
        return len(self.base)


class SeededDataset(torch.utils.data.Dataset):
    """Wraps a dataset so that ``ds[(i, seed)]`` seeds torch's RNG before loading item ``i``.

    Each sample also says which item it is (``index``) and which view of it the random
    transforms made (``view``: 1 when horizontally flipped, else 0; ``window``: where a random
    crop lay): the teacher cache's key."""

    def __init__(self, ds) -> None:
        self.ds = ds
        self.tags = ViewTags(getattr(ds, "transform", None))

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, key):
        i, seed = key if isinstance(key, tuple) else (key, None)
        if seed is not None:
            # the CPU generator alone: the transforms draw from it, and torch.manual_seed would
            # also queue a lazy CUDA/XPU/MTIA seeding, formatting a stack trace each time
            # (measured: about a third of a cached CamVid loader's time per sample)
            torch.default_generator.manual_seed(seed)
        sample = self.ds[i]
        if isinstance(sample, dict):
            sample.update(index=i, **self.tags())
        return sample


class ShardSampler(torch.utils.data.Sampler):
    """Evaluation on ``world`` processes: rank ``r`` reads items r, r + world, r + 2 world, ...
    so every item is read exactly once over the ranks. (DistributedSampler pads an uneven split
    by repeating items, which the summed confusion matrix would count twice: CamVid's 101 val
    images became 102 samples on 2 ranks.) Ranks may get one item fewer than others."""

    def __init__(self, n: int, world: int, rank: int) -> None:
        self.items = range(rank, n, world)

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


MAX_AUTO_WORKERS = 8


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a SLURM allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def resolve_workers(value: int | str, device_type: str, local_world_size: int = 1,
                    cpus: int | None = None) -> int:
    """The loader worker count for ``data.num_workers`` (an int is taken as given).

    ``"auto"``: on an accelerator, this process's share of the CPUs less one for the process
    itself, between 1 and 8 (the share is what the other ranks on the node leave it); on a
    CPU-only run 1 worker, 0 on a single core: there the workers take cores from the model.
    """
    if value != "auto":
        return int(value)
    cpus = available_cpus() if cpus is None else cpus
    if device_type == "cpu":
        return 1 if cpus > 1 else 0
    share = cpus // max(1, local_world_size)
    return max(1, min(MAX_AUTO_WORKERS, share - 1))


def make_loader(ds, batch_size: int, train: bool, num_workers: int, seed: int,
                world_size: int = 1, rank: int = 0, pin_memory: bool = False) -> DataLoader:
    """A loader whose order and augmentation depend only on (seed, epoch): call
    ``loader.sampler.set_epoch(epoch)`` before each epoch."""
    if world_size > 1 and train:
        base = DistributedSampler(ds, num_replicas=world_size, rank=rank, shuffle=True,
                                  seed=seed, drop_last=True)
    elif world_size > 1:  # evaluation: every item exactly once, no padding
        base = ShardSampler(len(ds), world_size, rank)
    else:
        base = RandomSampler(ds, generator=torch.Generator().manual_seed(seed)) if train \
            else SequentialSampler(ds)
    return DataLoader(SeededDataset(ds), batch_size=batch_size, sampler=SeededSampler(base, seed),
                      num_workers=num_workers, collate_fn=_Collate(ds.ignore_index),
                      drop_last=train and len(base) >= batch_size, pin_memory=pin_memory,
                      persistent_workers=num_workers > 0,
                      prefetch_factor=4 if num_workers > 0 else None)
