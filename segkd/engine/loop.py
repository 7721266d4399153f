"""The engine: one loop for every recipe. A run is a list of stages; each stage installs its
terms, trainable parts and replacements on the Distiller, gets a fresh optimiser and schedule,
and trains for its epochs. The engine never branches on a method name."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import torch

from segkd.config.schema import Config, StageCfg, dump_config
from segkd.core.checkpoint import load_checkpoint, load_strict, model_checkpoint, save_checkpoint
from segkd.core.errors import ConfigError, NonFiniteLoss
from segkd.engine.build import build_distiller, build_teacher, build_teacher_cache, same_teacher, stage_terms
from segkd.engine.data import build_data, make_loader, resolve_workers
from segkd.engine.fabric import allow_recompiles, make_fabric, quiet_malloc
from segkd.engine.health import (RunHealth, bn_steps_needed, collapse_warning, data_bound_message,
                                 few_steps_warning, mode_check, nonfinite_message, nonfinite_state,
                                 training_batchnorms)
from segkd.engine.init import initialise_student
from segkd.engine.logger import RunLogger, epoch_line
from segkd.engine.optim import build_optimizer, build_scheduler, extend_optimizer
from segkd.engine.plan import optimizer_chain, schedule_span, stage_trainable
from segkd.engine.runtime import resolve_runtime
from segkd.engine.selection import selection
from segkd.engine.state import Progress, StageRun, rng_state, seed_all, set_rng_state
from segkd.engine.train import EpochSpec, train_epoch
from segkd.eval.evaluate import evaluate
from segkd.models.spec import apply_replacements, build_from_spec, model_spec

class Engine:
    """Runs a Config in ``run_dir`` (``resume=True`` continues from ``run_dir/last.pt``)."""

    def __init__(self, cfg: Config, run_dir: str | Path, resume: bool = False) -> None:
        self.cfg, self.run_dir, self.resume = cfg, Path(run_dir), resume
        self.runtime = resolve_runtime(cfg.trainer)  # device and precision: read, never re-resolved
        self.fabric = make_fabric(cfg.trainer, self.runtime)
        self.replacements: list[dict] = []  # exact paths, in order: rebuilds the architecture
        self.replaced_records: list[dict] = []  # per-conv params before/after (for reports)
        self.counters = Progress()
        self.history: list[dict] = []
        self._slow_data_said = False
        self._opt: Optional[torch.optim.Optimizer] = None  # the raw optimizer of the stage
        self.health = RunHealth()  # warnings given, what each checkpoint written holds
        self._seen: dict = {}  # this epoch's validation: per-split pixel counts, a batch of images

    @property
    def progress(self) -> dict[str, Any]:
        """The counters in their checkpoint form (a copy: change :attr:`counters`)."""
        return self.counters.to_dict()

    # ================================================================== setup
    def _setup(self) -> Optional[dict]:
        f, cfg = self.fabric, self.cfg
        f.launch()
        if f.device.type == "cpu":
            quiet_malloc()
        self.precision = self.runtime.summary()
        if cfg.trainer.threads:
            torch.set_num_threads(cfg.trainer.threads)
        seed_all(cfg.seed)
        if f.is_global_zero:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(dump_config(cfg))
        f.barrier()
        need_images = any(s.data == "images" for s in cfg.stages)
        self.data = build_data(cfg.data, self.run_dir if f.is_global_zero else None, need_images)
        n_cls = self.data.train.num_classes
        if cfg.model.num_classes and cfg.model.num_classes != n_cls:
            raise ConfigError(f"model.num_classes = {cfg.model.num_classes} but dataset "
                              f"'{cfg.data.name}' has {n_cls} classes")
        teacher, t_info = build_teacher(cfg.teacher, n_cls) if cfg.teacher else (None, None)
        self.teacher_sha256 = t_info["sha256"] if t_info else None  # of the bytes it came from
        seed_all(cfg.seed)  # the student's initial weights depend on the seed alone
        if cfg.model.from_teacher:  # Plug and Play: the student starts as a copy of the teacher
            if teacher is None:
                raise ConfigError("model.from_teacher needs a `teacher:` section")
            self.spec = t_info["spec"]
            student = build_from_spec(self.spec, t_info["replacements"])
            student.load_state_dict(teacher.state_dict())
            self.replacements = list(t_info["replacements"])
        else:
            self.spec = model_spec(cfg.model, n_cls)
            student = build_from_spec(self.spec, pretrained=cfg.model.pretrained)
        init_note = (initialise_student(student, cfg.model.init_from, cfg.model.init_match, teacher)
                     if cfg.model.init_from else None)
        ckpt = None
        if self.resume:  # rebuild the architecture the checkpoint's plan produced, then load
            ckpt = load_checkpoint(self.run_dir / "last.pt", must_verify=True)
            same_teacher(ckpt, self.teacher_sha256, cfg.teacher)
            student = self._load_resume(ckpt)
        if self.fabric.world_size > 1 and cfg.trainer.sync_bn and self.fabric.device.type == "cuda":
            student = torch.nn.SyncBatchNorm.convert_sync_batchnorm(student)
        self.meta = {"classes": self.data.classes, "num_classes": n_cls, "mean": list(self.data.mean),
                     "std": list(self.data.std), "ignore_index": self.data.ignore_index}
        self.distiller = build_distiller(cfg, student, teacher, self.data.ignore_index,
                                         self.runtime)
        fmt = torch.channels_last if cfg.trainer.channels_last else torch.preserve_format
        self.distiller.to(f.device, memory_format=fmt)
        if teacher is not None:
            teacher.to(f.device, memory_format=fmt)
        if cfg.trainer.compile:
            allow_recompiles(3 * len(cfg.stages) + 2)  # + the train/eval-mode check's mixed mode
            student.compile()
        self.logger = RunLogger(self.run_dir, f.is_global_zero, cfg.trainer.progress,
                                resume_step=self.counters.step if self.resume else None)
        self.teacher_cache = build_teacher_cache(cfg, f, self.distiller, self.logger.info, self.logger,
                                                 teacher_sha256=self.teacher_sha256,
                                                 runtime=self.runtime)
        self.logger.info(f"precision: {self.runtime.precision} ({self.runtime.reason})")
        if init_note:
            self.logger.info(init_note)
        # loader processes per training process, for every loader of the run
        self.workers = resolve_workers(cfg.data.num_workers, f.device.type,
                                       f.world_size // max(1, cfg.trainer.num_nodes))
        self.logger.info(f"data: {self.workers} loader worker(s) per process"
                         f"{' (auto)' if cfg.data.num_workers == 'auto' else ''}, "
                         f"cache {'on' if cfg.data.cache else 'off'}")
        return ckpt

    def _load_resume(self, ckpt: dict) -> torch.nn.Module:
        self.spec = ckpt["model"]
        self.replacements = list(ckpt.get("replacements", []))
        student = build_from_spec(self.spec, self.replacements)
        load_strict(student, ckpt["state_dict"], str(self.run_dir / "last.pt"))
        self.counters = Progress.from_dict(ckpt["progress"])
        self.history = list(ckpt.get("history", []))
        self.health = RunHealth.resumed(ckpt, self.cfg.stages[self.counters.stage].name,
                                        (self.run_dir / "best.pt").is_file())
        return student

    def _probe(self) -> torch.Tensor:
        h, w = self.cfg.data.crop or self.cfg.data.size or (64, 64)
        return torch.zeros(2, 3, min(h, 128), min(w, 128), device=self.fabric.device)

    def _setup_stage(self, si: int, stage: StageCfg):
        d = self.distiller
        if stage.replace and si >= self.counters.replaced_upto:
            for r in stage.replace:
                recs = apply_replacements(d.student, [r.model_dump()])
                self.replacements.append({"paths": [x["path"] for x in recs], "block": r.block,
                                          "options": r.options, "stage": si})
                self.replaced_records += recs
            # new blocks in the run's memory format, as a resumed run builds them (exact resume)
            fmt = torch.channels_last if self.cfg.trainer.channels_last else torch.preserve_format
            d.student.to(self.fabric.device, memory_format=fmt)
            self.counters.replaced_upto = si + 1
        chain = optimizer_chain(self.cfg.stages, si)
        if chain and self._opt is None:  # resumed inside a plan: rebuild its optimizer's groups
            for j in chain:
                stage_trainable(d.student, self.cfg.stages[j], j, self.replacements, hide_later=True)
                d.configure(stage_terms(self.cfg.stages[j]), self._probe())
                self._stage_optimizer(j, self.cfg.stages[j].optimizer, j > chain[0])
        stage_trainable(d.student, stage, si, self.replacements)
        d.configure(stage_terms(stage), self._probe())
        d.refresh_frozen(stage.frozen_mode == "eval")
        opt = self._stage_optimizer(si, stage.optimizer, bool(chain))
        module, opt = self.fabric.setup(d, opt, move_to_device=True)
        return module, opt

    def _stage_optimizer(self, si: int, cfg, extend: bool) -> torch.optim.Optimizer:
        """A fresh optimizer, or the previous stage's one extended by the newly trainable
        parameters (``optimizer.continue_previous``)."""
        if extend:
            n = extend_optimizer(self._opt, self.distiller, cfg)
            self.logger.info(f"stage {si + 1}: optimizer continued, {n} new parameter group(s), "
                             f"{len(self._opt.param_groups)} in all")
        else:
            self._opt = build_optimizer(self.distiller, cfg)
        return self._opt

    def _stage_steps(self, j: int) -> int:
        """Optimizer steps of stage ``j`` (for a schedule spanning several stages)."""
        stage = self.cfg.stages[j]
        iters = stage.iters_per_epoch or len(self._loaders(stage)[0])
        return stage.epochs * -(-iters // self.cfg.trainer.grad_accum)

    # ================================================================== run
    def run(self) -> dict:
        ckpt = self._setup()
        if ckpt is not None:
            self._earlier_connectors(self.counters.stage)
        t0 = time.time()
        try:
            for si, stage in enumerate(self.cfg.stages):
                if si < self.counters.stage:
                    continue
                self._run_stage(si, stage, ckpt if si == self.counters.stage else None)
                ckpt = None
            summary = self._finish(time.time() - t0)
        finally:
            self.logger.close()
        return summary

    def _earlier_connectors(self, upto: int) -> None:
        """Resuming at stage ``upto``: install the terms of the stages before it once, so that
        their connectors exist as in the uninterrupted run (frozen, saved in every checkpoint)
        and the checkpoint's connectors load strictly, each key into its own module."""
        for stage in self.cfg.stages[:upto]:
            self.distiller.configure(stage_terms(stage), self._probe())

    def _loaders(self, stage: StageCfg):
        cfg, f = self.cfg, self.fabric
        ds = self.data.images if stage.data == "images" and self.data.images is not None else self.data.train
        pin = f.device.type == "cuda"
        train = make_loader(ds, cfg.data.batch_size, True, self.workers, cfg.seed,
                            f.world_size, f.global_rank, pin)
        val, select = (None if d is None else
                       make_loader(d, cfg.data.eval_batch_size or cfg.data.batch_size, False,
                                   self.workers, cfg.seed, f.world_size, f.global_rank, pin)
                       for d in (self.data.val, self.data.select))
        return train, val, select

    def _run_stage(self, si: int, stage: StageCfg, ckpt: Optional[dict]) -> None:
        run = self._stage_run(si, stage)
        start = 0
        if ckpt is not None and ckpt["progress"]["stage"] == si:
            run.opt.load_state_dict(ckpt["optimizer"])
            if run.sched is not None and ckpt.get("scheduler"):
                run.sched.load_state_dict(ckpt["scheduler"])
            # strict: a missing or renamed connector must not leave random weights behind
            load_strict(self.distiller.connectors, ckpt.get("connectors", {}),
                        f"{self.run_dir / 'last.pt'} (connectors)")
            set_rng_state(ckpt["rng"])
            start = ckpt["progress"]["epoch"]
        else:
            c = self.counters
            c.stage, c.epoch, c.best, c.best_epoch = si, 0, None, None
        for epoch in range(start, stage.epochs):
            self._epoch(si, stage, epoch, run)
        if stage.select.restore_best and (self.run_dir / "best.pt").is_file():
            best = load_checkpoint(self.run_dir / "best.pt")
            load_strict(self.distiller.student, best["state_dict"], "best.pt")
        self.counters.stage, self.counters.epoch = si + 1, 0

    def _stage_run(self, si: int, stage: StageCfg) -> StageRun:
        """The stage's module, optimiser, schedule (spanning a plan's stages), loaders and
        teacher cache."""
        module, opt = self._setup_stage(si, stage)
        train_loader, val_loader, select_loader = self._loaders(stage)
        cache = None if self.teacher_cache is None else self.teacher_cache.for_stage(
            train_loader.dataset.ds, self.distiller.teacher_positions())
        iters = stage.iters_per_epoch or len(train_loader)
        if iters == 0:
            raise ConfigError(f"stage '{stage.name}': the training set has fewer images than one batch")
        steps = stage.epochs * -(-iters // self.cfg.trainer.grad_accum)
        offset, total = schedule_span(self.cfg.stages, si,
                                      lambda j: steps if j == si else self._stage_steps(j))
        sched, when = build_scheduler(opt, stage.schedule, total, stage.optimizer.lr, offset)
        self.distiller.train()  # the training mode: which BatchNorm layers update their statistics
        self._warn(few_steps_warning(training_batchnorms(self.distiller.student), stage.name, si,
                                     stage.epochs, iters, self.cfg.trainer.grad_accum,
                                     None if stage.iters_per_epoch else len(train_loader),
                                     self.cfg.data.batch_size), stage, 0)
        return StageRun(module=module, opt=opt, loader=train_loader, iters=iters, sched=sched,
                        when=when, val_loader=val_loader, teacher_cache=cache,
                        select_loader=select_loader)

    # ================================================================== one epoch
    def _epoch(self, si: int, stage: StageCfg, epoch: int, run: StageRun) -> None:
        f, tr, c = self.fabric, self.cfg.trainer, self.counters
        seed_all(self.cfg.seed * 1_000_003 + si * 10_007 + epoch)
        run.loader.sampler.set_epoch(si * 100_000 + epoch)
        title = f"{stage.name} {epoch + 1}/{stage.epochs}"
        spec = EpochSpec(labeled=stage.data == "labeled", title=title,
                         where=f"stage '{stage.name}' epoch {epoch + 1}", step0=c.step,
                         accum=tr.grad_accum, grad_clip=tr.grad_clip,
                         channels_last=tr.channels_last, log_every=tr.log_every,
                         last_good=self.health.last_good())
        t = time.time()
        stats = train_epoch(f, run, spec, self.logger)
        dt = time.time() - t
        c.step += stats["steps"]
        c.images += stats["images"] * f.world_size
        c.train_time += dt
        bad = nonfinite_state(self.distiller.student, self.distiller.connectors)
        if bad:  # e.g. BatchNorm running_var overflowed while batch statistics kept the loss finite
            raise NonFiniteLoss(nonfinite_message(bad, spec.where, self.health.last_good()))
        if run.sched is not None and run.when == "plateau":
            run.sched.step(stats["loss"])
        elif run.sched is not None and run.when == "epoch":
            run.sched.step()
        row = {f"train/{k}": v for k, v in stats.items() if k.startswith("loss")}
        row.update({"lr": run.opt.param_groups[0]["lr"],
                    "train/images_per_s": stats["images"] * f.world_size / dt,
                    "train/data_wait": stats["data_wait"]})
        self._say_if_data_bound(stats["data_wait"], epoch)
        last = epoch + 1 == stage.epochs
        loaders = {k: v for k, v in (("val", run.val_loader), ("select", run.select_loader))
                   if v is not None}
        if loaders and ((epoch + 1) % stage.val_every == 0 or last):
            self._seen = {}
            for split, loader in loaders.items():
                row.update(self._validate(stage, loader, split))
            self._select(si, stage, epoch, row)
            self._check_validation(stage, epoch, run)
        c.epoch = epoch + 1
        self.history.append({"stage": si, "epoch": epoch + 1, **{k: v for k, v in row.items()
                                                                   if not isinstance(v, list)}})
        self.logger.log({k: v for k, v in row.items() if not isinstance(v, list)},
                        c.step, stage=stage.name, epoch=epoch + 1)
        self.logger.info(epoch_line(title, row))
        self._save_last(run)

    def _say_if_data_bound(self, share: float, epoch: int) -> None:
        """Once per run: warn when the loader held training back (health.data_bound_message)."""
        msg = None if self._slow_data_said else data_bound_message(share, epoch, self.cfg.data.num_workers)
        if msg:
            self._slow_data_said = True
            self.logger.info(f"[yellow]{msg}[/yellow]")

    def _validate(self, stage: StageCfg, loader, split: str = "val") -> dict:
        d, f = self.distiller, self.fabric
        with_losses = stage.select.metric.startswith(f"{split}/loss")
        d.eval()
        def fwd(images, mask):
            if "images" not in self._seen:  # the first batch, for the train/eval-mode check
                self._seen.update(images=images, masks=mask)
            with f.autocast():
                return d(images, mask, with_losses=with_losses)
        m = evaluate(fwd, loader, self.meta["num_classes"], self.meta["ignore_index"], f.device,
                     self.cfg.trainer.channels_last, per_image=False, counts=True,
                     reduce=(lambda t: f.all_reduce(t, reduce_op="sum")) if f.world_size > 1 else None)
        self._seen[split] = (m.pop("label_pixels"), m.pop("pred_pixels"))
        d.train()
        out = {f"{split}/mIoU": m["mIoU"], f"{split}/pixel_acc": m["pixel_acc"],
               f"{split}/per_class_iou": m["per_class_iou"]}
        out.update({f"{split}/{k}": v for k, v in m.items() if k.startswith("loss")})
        return out

    def _select(self, si: int, stage: StageCfg, epoch: int, row: dict) -> None:
        key = stage.select.metric
        value, better = selection(stage, epoch, row, self.counters.best)
        if better:
            self.counters.best, self.counters.best_epoch = value, epoch + 1
            if self.fabric.is_global_zero:
                save_checkpoint(self._model_ckpt({"selected": {"stage": stage.name, "metric": key,
                                                               "value": value, "epoch": epoch + 1}}),
                                self.run_dir / "best.pt")
            self.health.saved["best.pt"] = f"stage '{stage.name}' epoch {epoch + 1}"
        self.fabric.barrier()

    # ================================================================== warnings
    def _warn(self, msg: Optional[str], stage: StageCfg, epoch: int, key: Optional[tuple] = None) -> None:
        """Say ``msg`` (if any) once: stderr, metrics.jsonl, last.pt and summary.json."""
        if msg and self.health.add(msg, key):
            self.logger.warn(msg, self.counters.step, stage=stage.name, epoch=epoch)

    def _check_validation(self, stage: StageCfg, epoch: int, run: StageRun) -> None:
        """After an epoch's validation, warn (once per stage each) when a split's predictions
        collapsed to one class, and when train-mode and eval-mode predictions of the first
        validation batch disagree grossly (on the main process only). Not before the stage's
        running statistics could have settled (early epochs of a long stage), except at its end."""
        where, classes = f"stage '{stage.name}' epoch {epoch + 1}", self.meta["classes"]
        steps = (epoch + 1) * -(-run.iters // self.cfg.trainer.grad_accum)
        if epoch + 1 < stage.epochs and steps < bn_steps_needed(training_batchnorms(self.distiller.student)):
            self._seen = {}
            return
        for split in ("val", "select"):
            if split in self._seen:
                self._warn(collapse_warning(*self._seen[split], classes, split, where), stage,
                           epoch + 1, ("collapse", stage.name, split))
        if self._seen.get("images") is not None and self.fabric.is_global_zero:
            with self.fabric.autocast():
                msg = mode_check(self.distiller, self._seen["images"], classes, where,
                                 self._seen.get("masks"), self.meta["ignore_index"])
            self._warn(msg, stage, epoch + 1, ("modes", stage.name))
        self._seen = {}

    # ================================================================== checkpoints
    def _model_ckpt(self, extra: dict | None = None) -> dict:
        return model_checkpoint(self.distiller.student, self.spec, self.replacements, self.meta,
                                self.cfg.model_dump(mode="json"), extra)

    def _save_last(self, run: StageRun) -> None:
        if self.fabric.is_global_zero:
            ck = self._model_ckpt()
            ck.update(kind="run", optimizer=run.opt.state_dict(),
                      scheduler=run.sched.state_dict() if run.sched is not None else None,
                      connectors={k: v.cpu() for k, v in self.distiller.connectors.state_dict().items()},
                      rng=rng_state(), progress=self.counters.to_dict(), history=self.history,
                      warnings=list(self.health.warnings), teacher_sha256=self.teacher_sha256)
            save_checkpoint(ck, self.run_dir / "last.pt")
        c = self.counters
        self.health.saved["last.pt"] = f"stage '{self.cfg.stages[c.stage].name}' epoch {c.epoch}"
        self.fabric.barrier()

    # ================================================================== final evaluation
    def _finish(self, wall: float) -> dict:
        from segkd.engine.final import FinishedRun, final_summary

        d = self.distiller
        return final_summary(FinishedRun(
            cfg=self.cfg, run_dir=self.run_dir, fabric=self.fabric, student=d.student,
            student_call=d.student_call, data=self.data, workers=self.workers, meta=self.meta,
            spec=self.spec, replacements=self.replacements, precision=self.precision,
            progress=self.counters, teacher_sha256=self.teacher_sha256,
            warnings=list(self.health.warnings)), wall)
