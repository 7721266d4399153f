"""The teacher cache (``teacher.cache``): the frozen teacher's outputs, once per (image, view).

A frozen teacher in eval mode is a pure function of its input. When the training transforms
are deterministic per image except a random horizontal flip, every sample is one of two
*views* of an item (flipped or not), so the teacher's logits and hooked features at the
positions the active terms read can be computed once per (item, view) and looked up by the
``index``/``view`` every sample carries (:class:`segkd.engine.data.SeededDataset`, tagged by
:class:`segkd.data.transforms.ViewTags`).

Exact mode: both views are computed with the same code, precision, memory format and device
as the live step (:meth:`Distiller.teacher_outputs` under the run's autocast, in batches of at
least two images: on the CPU a batch of one takes other kernels), so losses and gradients are
bit for bit those of the live teacher. Any other random transform is refused, naming it.

The cache lives in ``<dir>/<key>/``: the key hashes the teacher file (the sha256 of the bytes
the teacher was loaded from, never a second read of the file), the run's teacher precision and
memory format, the data (dataset, every file's path, size and mtime, so the root, split and
fraction), the prepare step and transforms. Each position is its own array
(:mod:`cache_store`), so runs reading different features share the logits.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from torchvision.transforms import v2

from segkd.core.checkpoint import sha256_hex
from segkd.data.transforms import (
    ImageToFloat,
    JointRandomCrop,
    JointRandomScale,
    RandomHFlip,
    find_flip,
    transform_steps,
)
from segkd.distill.cache_store import (
    DTYPES,
    ArraySpec,
    CacheError,
    MemoryArray,
    PartialArray,
    check_writable,
    locked,
    open_complete,
)

LOGITS_POS = ("logits", "output")
# random steps of segkd's training transforms -> the config key that turns them on
_RANDOM_STEPS = ((JointRandomScale, "data.scale"), (v2.RandomCrop, "data.crop"),
                 (v2.ColorJitter, "data.color_jitter"), (v2.RandomApply, "data.blur"))
_EXACT_STEPS = (RandomHFlip, ImageToFloat)
_TORCH_DTYPE_NAMES = {v[0]: k for k, v in DTYPES.items()}


def default_dir() -> Path:
    """$SEGKD_CACHE_DIR, else $XDG_CACHE_HOME/segkd/teacher, else ~/.cache/segkd/teacher."""
    if os.environ.get("SEGKD_CACHE_DIR"):
        return Path(os.environ["SEGKD_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "segkd" / "teacher"


def _name(step) -> str:
    key = next((k for cls, k in _RANDOM_STEPS if isinstance(step, cls)), None)
    return f"{key} ({step!r})" if key else repr(step)


def check_exact(transform) -> None:
    """Raise CacheError naming the first random step other than a horizontal flip, and the
    fixes that work: approximate mode only where it accepts the transform."""
    for step in transform_steps(transform):
        if not isinstance(step, _EXACT_STEPS):
            try:
                check_approximate(transform)
                fix = "Remove it, set teacher.cache.mode: approximate, or teacher.cache: false"
            except CacheError:  # photometric steps: approximate mode refuses them too
                fix = "Remove it, or set teacher.cache: false (the live teacher)"
            raise CacheError(f"teacher.cache (exact) allows random horizontal flips only; "
                             f"{_name(step)} makes the teacher's output differ every epoch. {fix}")


def check_approximate(transform) -> Optional[JointRandomCrop]:
    """The crop of a transform the approximate cache can follow (flip, scale, crop); raise
    CacheError naming a photometric step, or a random scale without a crop."""
    steps = transform_steps(transform)
    for step in steps:
        if not isinstance(step, (*_EXACT_STEPS, JointRandomScale, JointRandomCrop)):
            raise CacheError(f"teacher.cache (approximate) follows flips, scales and crops only; "
                             f"{_name(step)} changes the image in other ways. Remove it, or "
                             "set teacher.cache: false")
    crop = next((s for s in steps if isinstance(s, JointRandomCrop)), None)
    if crop is None and any(isinstance(s, JointRandomScale) for s in steps):
        raise CacheError("teacher.cache (approximate) needs data.crop with data.scale (a fixed "
                         "training size); set data.crop or teacher.cache: false")
    return crop


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 over a model's state dict (names, dtypes, shapes and bytes)."""
    def chunks():
        for name, t in model.state_dict().items():
            t = t.detach().cpu().contiguous()
            yield f"{name}|{t.dtype}|{tuple(t.shape)}".encode()
            yield t.view(torch.uint8).numpy().tobytes() if t.numel() else b""

    return sha256_hex(chunks())


def dataset_identity(ds) -> dict:
    """What makes a dataset's prepared training samples what they are (for the cache key)."""
    def lines():
        for img, _ in ds.items:
            p = Path(img).expanduser().resolve()
            st = p.stat() if p.is_file() else None
            yield f"{p}|{st.st_size if st else '-'}|{st.st_mtime_ns if st else '-'}\n".encode()

    return {"dataset": getattr(ds, "name", type(ds).__name__), "items": len(ds.items),
            "files": sha256_hex(lines()), "prepare": repr(ds.prepare),
            "transform": repr(ds.transform),
            "mean": list(ds.mean), "std": list(ds.std),
            "options": repr(sorted((k, v) for k, v in vars(ds).items()
                                   if k in ("seed", "size", "split")))}


@dataclass
class CachedPosition:
    """One cached teacher tensor: its rows and the memory format the live teacher gives it."""

    array: object  # MemoryArray | DiskArray: .read(rows) -> CPU tensor
    channels_last: bool


class StageCache:
    """The cached teacher tensors of one stage's positions, looked up per batch."""

    def __init__(self, positions: dict[tuple[str, str], CachedPosition], views: int) -> None:
        self.positions, self.views = positions, views

    def batch(self, batch: dict, device: torch.device) -> dict[tuple[str, str], torch.Tensor]:
        """``{position: tensor [N, ...]}`` for a loader batch (``index`` and ``view`` keys)."""
        if "index" not in batch:
            raise CacheError("teacher cache: the batch does not say which items it holds "
                             "(no 'index'); it must come from segkd's training loader")
        rows = batch["index"] * self.views + batch["view"]
        out = {}
        for pos, c in self.positions.items():
            t = self._shape(pos, c.array.read(rows), batch).to(device, non_blocking=True)
            out[pos] = t.contiguous(memory_format=torch.channels_last) if c.channels_last else t
        return out

    def _shape(self, pos: tuple[str, str], t: torch.Tensor, batch: dict) -> torch.Tensor:
        return t


class WarpedStageCache(StageCache):
    """Approximate mode: the cached output (teacher on the prepared image, per flip) is cut
    and resized like the image was: each sample's crop ``window`` (prepared-image coordinates;
    a scale does not change them) is sampled bilinearly onto the grid the live teacher gives
    at the crop size (``sizes``); the crop's padding and the half pixel past the image edge
    repeat the edge (as a resize clamps there).

    The flipped sample is the crop of the flipped image at the mirrored window, so the cached
    flipped view (the teacher on the flipped image) is sampled at x -> -x."""

    def __init__(self, positions: dict, views: int, sizes: dict[tuple[str, str], tuple[int, int]]):
        super().__init__(positions, views)
        self.sizes = sizes

    def _shape(self, pos: tuple[str, str], t: torch.Tensor, batch: dict) -> torch.Tensor:
        import torch.nn.functional as F

        y0, y1, x0, x1 = batch["window"].unbind(1)
        tx = torch.where(batch["view"] == 1, -(x1 + x0) / 2, (x1 + x0) / 2)
        theta = torch.zeros(len(t), 2, 3)
        theta[:, 0, 0], theta[:, 0, 2] = (x1 - x0) / 2, tx
        theta[:, 1, 1], theta[:, 1, 2] = (y1 - y0) / 2, (y1 + y0) / 2
        grid = F.affine_grid(theta, [len(t), t.shape[1], *self.sizes[pos]], align_corners=False)
        out = F.grid_sample(t.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out.to(t.dtype)


def _channels_last(t: torch.Tensor) -> bool:
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def _mib(n: int) -> str:
    return f"{n / 2 ** 20:,.1f} MiB"


def _free_memory() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


class TeacherCache:
    """Builds or opens the cache of each stage's teacher positions (see the module docstring).

    ``teacher_fn(images) -> {position: tensor}``: the teacher exactly as the training step
    runs it (precision conversion, autocast, :meth:`Distiller.teacher_outputs`).
    ``key``: the teacher and compute settings; the dataset's identity is added per dataset.
    """

    def __init__(self, cfg, teacher_fn: Callable, key: dict, batch_size: int,
                 channels_last: bool, device: torch.device, say: Callable[[str], None],
                 progress=None) -> None:
        self.cfg, self.teacher_fn, self.key = cfg, teacher_fn, key
        self.batch_size = max(2, cfg.batch_size or batch_size)
        self.channels_last, self.device, self.say, self.progress = channels_last, device, say, progress
        self.root = Path(cfg.dir).expanduser() if cfg.dir else default_dir()
        self._memory: dict[tuple[str, str], MemoryArray] = {}
        self._ids: dict[int, dict] = {}

    # ------------------------------------------------------------------ inputs
    def _views(self, ds, flip: Optional[RandomHFlip], item: int, views: int) -> list[torch.Tensor]:
        """Item ``item``'s image in each view (1 = flipped) as the training loader gives it:
        the dataset's own transform and normalisation, the flip forced (the item is loaded
        once). Approximate mode: the prepared image (flipped in view 1), before scale or crop."""
        from torchvision import tv_tensors
        from torchvision.transforms.v2 import functional as TF

        image, mask = ds.load_prepared(item)
        out = []
        for view in range(views):
            if self.cfg.mode == "approximate":
                img = tv_tensors.Image(image)
                img = TF.to_dtype(TF.horizontal_flip(img) if view else img, torch.float32, scale=True)
            else:
                if flip is not None:
                    flip.force = bool(view)
                try:
                    img = ds.transform(tv_tensors.Image(image), tv_tensors.Mask(mask))[0]
                finally:
                    if flip is not None:
                        flip.force = None
            out.append(ds.normalize(img))
        return out

    def _outputs(self, ds, flip, items: list[int], views: int):
        """(rows, {position: tensor}) for ``items`` x their views; at least two images."""
        rows = [i * views + v for i in items for v in range(views)]
        x = torch.stack([v for i in items for v in self._views(ds, flip, i, views)])
        if len(rows) == 1:  # the CPU computes a batch of one with other kernels: pad to two
            x = torch.cat([x, x])
        out = self._teacher(x)
        return rows, {p: t[:len(rows)] for p, t in out.items()}

    def _teacher(self, x: torch.Tensor) -> dict:
        x = x.to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.teacher_fn(x)

    # ------------------------------------------------------------------ stage
    def for_stage(self, ds, positions: list[tuple[str, str]]) -> Optional[StageCache]:
        """The cache of ``positions`` for training set ``ds`` (built now when missing), or
        None when nothing is needed or it does not fit (``over_budget: live``)."""
        if not positions:
            return None
        crop = None
        if self.cfg.mode == "approximate":
            crop = check_approximate(ds.transform)
        else:
            check_exact(ds.transform)
        flip = find_flip(ds.transform)
        views = 2 if flip is not None else 1
        if id(ds) not in self._ids:  # stats every file: once per dataset
            self._ids[id(ds)] = dataset_identity(ds)
        key = {**self.key, **self._ids[id(ds)], "views": views}
        digest = sha256_hex([json.dumps(key, sort_keys=True).encode()])[:20]
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            _, probe = self._outputs(ds, flip, [0], views)
        specs, layout = {}, {}
        for pos, t in probe.items():
            dtype = _TORCH_DTYPE_NAMES.get(t.dtype, "float32") if self.cfg.dtype == "auto" else self.cfg.dtype
            specs[pos] = ArraySpec(f"{pos[0]}.{pos[1]}.{dtype}", len(ds) * views, tuple(t.shape[1:]), dtype)
            layout[pos] = _channels_last(t)
        if not self._fits(specs, digest, len(ds), views):
            return None
        if self.cfg.storage == "memory":
            arrays = self._memory_arrays(ds, flip, specs, views)
        else:
            arrays = self._disk_arrays(ds, flip, specs, views, self.root / digest, key)
        cached = {p: CachedPosition(arrays[p], layout[p]) for p in specs}
        if crop is None:
            return StageCache(cached, views)
        with torch.random.fork_rng(devices=[]), torch.no_grad():  # the live grid at the crop size
            live = self._teacher(torch.zeros(2, 3, *crop.size))
        return WarpedStageCache(cached, views, {p: tuple(t.shape[-2:]) for p, t in live.items()})

    def _fits(self, specs: dict, digest: str, n: int, views: int) -> bool:
        """Print the size; False (with a message) or CacheError when it is over budget."""
        total = sum(s.nbytes for s in specs.values())
        what = ", ".join(f"{s.name} {list(s.shape)}" for s in specs.values())
        where = "memory" if self.cfg.storage == "memory" else str(self.root / digest)
        self.say(f"teacher cache ({self.cfg.mode}): {n} images x {views} view(s), {what}: "
                 f"{_mib(total)} ({where})")
        if self.cfg.storage == "memory":
            limit, room = _free_memory() // 2, "half the available memory"
        else:
            have = self.root
            while not have.exists() and have != have.parent:
                have = have.parent
            limit, room = shutil.disk_usage(have).free + sum(
                (self.root / digest / f"{s.name}.bin").stat().st_size
                for s in specs.values() if (self.root / digest / f"{s.name}.bin").is_file()), "free disk"
        if self.cfg.budget_mb is not None and self.cfg.budget_mb * 2 ** 20 < limit:
            limit, room = int(self.cfg.budget_mb * 2 ** 20), "teacher.cache.budget_mb"
        if total <= limit:
            return True
        msg = f"teacher cache needs {_mib(total)}, more than {room} ({_mib(limit)})"
        if self.cfg.over_budget == "refuse":
            raise CacheError(msg + ": raise the budget, use teacher.cache.dtype: bfloat16 or "
                             "float16, or set teacher.cache.over_budget: live")
        self.say(f"[yellow]{msg}: this stage runs the live teacher[/yellow]")
        return False

    def _build(self, ds, flip, writers: dict, views: int, todo: list[int], title: str) -> None:
        """Compute the teacher on items ``todo`` (all views) and write every position."""
        per = max(1, self.batch_size // views)
        chunks = [todo[i:i + per] for i in range(0, len(todo), per)]
        if self.progress is not None:
            self.progress.start_epoch(title, len(chunks))
        start = time.perf_counter()
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                for chunk in chunks:
                    rows, out = self._outputs(ds, flip, chunk, views)
                    for pos, w in writers.items():
                        w.write(rows, out[pos])
                        if hasattr(w, "save_progress"):
                            w.save_progress()
                    if self.progress is not None:
                        self.progress.advance()
        finally:
            if self.progress is not None:
                self.progress.end_epoch()
        self.say(f"teacher cache: {len(todo)} images x {views} view(s) computed in "
                 f"{time.perf_counter() - start:.1f} s")

    def _memory_arrays(self, ds, flip, specs: dict, views: int) -> dict:
        keep = {p: a for p, a in self._memory.items() if p in specs and a.spec == specs[p]}
        new = {p: MemoryArray(s) for p, s in specs.items() if p not in keep}
        if new:
            self._build(ds, flip, new, views, list(range(len(ds))), "teacher cache")
        self._memory = {**keep, **new}
        return self._memory

    def _disk_arrays(self, ds, flip, specs: dict, views: int, folder: Path, key: dict) -> dict:
        check_writable(folder)
        key_file = folder / "key.json"
        if not key_file.is_file():
            key_file.write_text(json.dumps(key, indent=1, sort_keys=True))
        names = [s.name for s in specs.values()]
        with locked(folder, names, self.say):
            arrays = {p: open_complete(folder, s, key, self.say) for p, s in specs.items()}
            parts = {p: PartialArray(folder, specs[p], key, views) for p, a in arrays.items() if a is None}
            if parts:
                todo = [i for i in range(len(ds)) if any(i not in w.done for w in parts.values())]
                resumed = len(ds) - len(todo)
                self.say(f"teacher cache: building {', '.join(w.spec.name for w in parts.values())}"
                         + (f" (resuming: {resumed} of {len(ds)} images done)" if resumed else ""))
                self._build(ds, flip, parts, views, todo, "teacher cache")
                arrays.update({p: w.finish() for p, w in parts.items()})
        return arrays
