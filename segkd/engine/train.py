"""One training epoch: the hot loop. No host synchronisation except at log points."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import torch

from segkd.core.errors import NonFiniteLoss
from segkd.engine.state import StageRun


@dataclass(frozen=True)
class EpochSpec:
    """How one epoch trains: ``labeled`` batches carry masks; ``accum`` iterations per optimiser
    step; ``title`` names the progress bar, ``where`` the epoch in a non-finite-loss error and
    ``last_good`` the checkpoints it can fall back on (a sentence naming only files that exist);
    ``step0`` is the run's optimiser step count before the epoch (x axis of the step log)."""

    labeled: bool
    title: str
    where: str
    step0: int = 0
    accum: int = 1
    grad_clip: Optional[float] = None
    channels_last: bool = False
    log_every: int = 50
    last_good: str = "No checkpoint was written before it"


def _batches(loader, iters: int):
    """``iters`` batches, restarting the loader when it is exhausted (endless epochs)."""
    n = 0
    while n < iters:
        for batch in loader:
            yield batch
            n += 1
            if n >= iters:
                return


def _check_finite(out: dict, spec: "EpochSpec", i: int) -> None:
    if bool(torch.isfinite(out["loss"])):
        return
    bad = [k[5:] for k, v in out.items() if k.startswith("loss/") and not bool(torch.isfinite(v))]
    raise NonFiniteLoss(f"loss became non-finite at {spec.where}, iteration {i + 1}: "
                        f"term(s) {', '.join(bad) or 'total'}. {spec.last_good}; lower the "
                        "learning rate or a term weight.")


def _clip(fabric, run: StageRun, spec: "EpochSpec", out: dict, i: int) -> None:
    """Clip the gradient norm (``trainer.grad_clip``); a non-finite norm is the same clear
    NonFiniteLoss as a non-finite loss (torch's own error is a bare traceback)."""
    try:
        fabric.clip_gradients(run.module, run.opt, max_norm=spec.grad_clip)
    except RuntimeError as err:
        if "non-finite" not in str(err):
            raise
        raise NonFiniteLoss(f"gradient norm became non-finite at {spec.where}, iteration {i + 1} "
                            f"(loss {float(out['loss'].detach()):.4g}). {spec.last_good}; lower the "
                            "learning rate or a term weight.") from None


def train_epoch(fabric, run: StageRun, spec: EpochSpec, logger) -> dict:
    """Train ``run.iters`` iterations of ``run.loader``; return mean losses, optimiser steps,
    images seen and ``data_wait``: the share of the epoch's wall time spent waiting for the next batch.

    The host never waits for the accelerator here (no synchronisation outside log points), so
    time blocked in the loader is time the accelerator could have been fed: a share near 0
    means the data pipeline keeps up, a large one that it is the bottleneck.
    ``run.teacher_cache``: a :class:`segkd.distill.teacher_cache.StageCache` whose teacher
    outputs replace the live teacher's. The schedule steps here when ``run.when == "iter"``.
    """
    module, opt, iters, teacher_cache = run.module, run.opt, run.iters, run.teacher_cache
    sched = run.sched if run.when == "iter" else None
    labeled, accum, channels_last, log_every = spec.labeled, spec.accum, spec.channels_last, spec.log_every
    module.train()
    device = fabric.device
    sums: dict[str, torch.Tensor] = {}
    steps, images = 0, 0
    check_every = 1 if device.type == "cpu" else log_every  # CPU: checking costs nothing
    logger.start_epoch(spec.title, iters)
    source, waited, start = _batches(run.loader, iters), 0.0, time.perf_counter()
    for i in range(iters):
        tw = time.perf_counter()
        batch = next(source, None)
        waited += time.perf_counter() - tw
        if batch is None:
            break
        x = batch["image"].to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = batch["mask"].to(device, non_blocking=True) if labeled else None
        boundary = (i + 1) % accum == 0 or i + 1 == iters
        with fabric.no_backward_sync(module, enabled=not boundary):
            kw = {} if teacher_cache is None else {"teacher_out": teacher_cache.batch(batch, device)}
            out = module(x, y, keep_logits=False, **kw)
            fabric.backward(out["loss"] / accum)
        if boundary:
            if spec.grad_clip:
                _clip(fabric, run, spec, out, i)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if sched is not None:
                sched.step()
            steps += 1
        for k, v in out.items():
            if k.startswith("loss"):
                sums[k] = sums.get(k, 0) + v.detach()
        images += x.shape[0]
        if (i + 1) % check_every == 0 or i + 1 == iters:
            _check_finite(out, spec, i)
        status = None
        if (i + 1) % log_every == 0:
            status = (f"loss {float(sums['loss']) / (i + 1):.4f}  lr {opt.param_groups[0]['lr']:.2e}  "
                      f"{images / (time.perf_counter() - start):.1f} img/s")
            logger.log({"train/loss_step": float(out["loss"].detach()), "lr": opt.param_groups[0]["lr"]},
                       spec.step0 + steps)
        logger.advance(status)
    logger.end_epoch()
    stats = {k: float(v) / iters for k, v in sums.items()}
    wall = time.perf_counter() - start
    return {**stats, "steps": steps, "images": images, "data_wait": waited / wall if wall > 0 else 0.0}
