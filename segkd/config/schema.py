"""Typed configuration: YAML -> validated ``Config``; ``--set`` overrides; clear errors.

A config file may name a base file (``_base_: ../base.yaml``, relative to itself); the file's
keys are deep-merged over the base. Every section forbids unknown keys, so a typo is reported
with its full key path instead of being silently ignored.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import Field, SerializeAsAny, ValidationError, field_validator, model_validator

from segkd.config.loading import apply_overrides, deep_merge, read_yaml  # noqa: F401  (the loading API)
from segkd.config.optimizers import OptimCfg, ParamGroupCfg  # noqa: F401  (sections of a stage)
from segkd.config.schedules import NoSchedule, ScheduleCfg, schedule_from_dict
from segkd.config.strict import StrictModel, format_validation_error
from segkd.core.errors import ConfigError


class DataCfg(StrictModel):
    name: str = "synthetic"
    root: Optional[str] = None
    train_split: str = "train"
    val_split: Optional[str] = "val"
    test_split: Optional[str] = None  # "auto": the split "test" when the dataset has one
    fraction: float = Field(1.0, gt=0.0, le=1.0)
    fraction_seed: int = 1
    # a seeded share of the training split held out for choosing the best epoch ("select/..."
    # metrics): it never trains, so the epoch is not chosen on the split results are reported
    # on. Carved before `fraction` (every fraction arm selects on the same images)
    select_fraction: Optional[float] = Field(None, gt=0.0, lt=1.0)
    select_seed: int = 0
    size: Optional[tuple[int, int]] = None  # (H, W) resize for training and evaluation input
    scale: Optional[tuple[float, float]] = None  # random scale range (training)
    crop: Optional[tuple[int, int]] = None  # (H, W) random crop (training)
    hflip: bool = True
    color_jitter: float = 0.0
    blur: float = 0.0
    eval_at_label_size: bool = True  # upsample logits to the original label size for metrics
    batch_size: int = Field(8, ge=1)
    eval_batch_size: Optional[int] = None
    # loader processes per training process; "auto": enough to feed an accelerator (up to 8,
    # never more than this process's share of the CPUs), 1 on a CPU-only run
    num_workers: int | Literal["auto"] = "auto"
    cache: bool = False
    mean: Optional[tuple[float, float, float]] = None
    std: Optional[tuple[float, float, float]] = None
    options: dict[str, Any] = {}  # dataset-specific keyword arguments
    # pre-flight check of check_files sampled pairs per split before the first step (mask
    # values vs classes / value_map / ignore, labeled share, image bit depth): "error" stops on
    # certainly wrong data, "warn" only says so, "off" skips it (segkd.data.check)
    check: Literal["error", "warn", "off"] = "error"
    check_files: int = Field(16, ge=1)
    unlabeled: Optional[dict[str, Any]] = None  # {name, root, split, options} for label-free stages

    @field_validator("num_workers")
    @classmethod
    def _workers(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 0:
            raise ValueError("num_workers must be >= 0 or 'auto'")
        return v

    @field_validator("size", "crop")
    @classmethod
    def _positive_hw(cls, v: Optional[tuple[int, int]]) -> Optional[tuple[int, int]]:
        if v is not None and min(v) < 1:
            raise ValueError(f"(H, W) must be positive integers, got {list(v)}")
        return v


class InitMapCfg(StrictModel):
    """``model.init_match`` as a mapping: the student is the source model cut to fewer blocks
    per stage and/or narrowed to fewer channels (segkd.models.narrow; ``segkd compress`` writes
    it). ``blocks``: per stage path, the source block each student block starts from;
    ``channels``: how the kept channels are chosen (bn: BatchNorm |gamma|, norm: filter L1)."""

    blocks: dict[str, list[int]] = {}
    channels: Literal["bn", "norm"] = "bn"


class ModelCfg(StrictModel):
    arch: str = "unet"
    encoder: Optional[str] = None
    pretrained: bool = False
    output_stride: Optional[Literal[8, 16, 32]] = None
    num_classes: Optional[int] = None  # default: the dataset's class count
    kwargs: dict[str, Any] = {}
    init_from: Optional[str] = None  # a segkd checkpoint whose weights initialise this one, or "teacher"
    # strict: the same architecture; shared: every tensor with the same name and shape (e.g. a
    # ResNet18 UNet from a ResNet34 one: stem, decoder, head, first blocks of each stage)
    # or a mapping {blocks, channels}: a depth-cut / narrowed copy of it (InitMapCfg)
    init_match: Literal["strict", "shared"] | InitMapCfg = "strict"
    from_teacher: bool = False  # student = a copy of the teacher (Plug and Play), then `replace`

    @field_validator("init_from")
    @classmethod
    def _not_export(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and Path(v).suffix.lower() in (".onnx", ".safetensors"):
            raise ValueError(f"'{v}' is an export, not a checkpoint: init_from takes a segkd "
                             "checkpoint (.pt, e.g. the best.pt it was exported from), a run "
                             "directory or 'teacher'")
        return v


class TeacherCacheCfg(StrictModel):
    """The frozen teacher's outputs computed once per (image, view) and reused.

    exact: only a random horizontal flip may be random (both views cached); same losses and
    gradients as the live teacher. approximate (opt-in): random scale/crop too, the cached
    output at the prepared size is transformed like the image. off: the live teacher.
    ``true``/``false`` in YAML mean exact/off."""

    mode: Literal["exact", "approximate", "off"] = "exact"
    storage: Literal["disk", "memory"] = "disk"  # disk: memory-mapped files shared by runs
    # root folder; a subfolder per teacher/data/transform key. Default: $SEGKD_CACHE_DIR, else
    # $XDG_CACHE_HOME/segkd/teacher, else ~/.cache/segkd/teacher
    dir: Optional[str] = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: the teacher's own
    budget_mb: Optional[float] = Field(None, gt=0)  # also bounded by free disk / available RAM
    over_budget: Literal["live", "refuse"] = "live"  # live: fall back to the live teacher
    batch_size: Optional[int] = Field(None, ge=2)  # teacher batch while building (data.batch_size)

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        """YAML reads a bare ``off`` as False."""
        return "off" if v is False else v


class TeacherCfg(StrictModel):
    checkpoint: Optional[str] = None  # segkd checkpoint (a run's best.pt or import-teacher output)
    model: Optional[ModelCfg] = None  # ...or an architecture plus a weights file
    weights: Optional[str] = None
    train_bn: bool = False  # OFD-original option: teacher BatchNorm on batch statistics
    # auto: the run's precision (under mixed precision the frozen teacher's conv/linear weights
    # are stored in bf16/fp16, the type autocast computes them in); 32: the teacher in float32
    precision: Literal["auto", "32", "bf16", "16"] = "auto"

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_number(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v  # 32 -> "32"

    @field_validator("checkpoint", "weights")
    @classmethod
    def _not_onnx(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and str(v).lower().endswith(".onnx"):
            raise ValueError(f"'{v}' is an ONNX export: a teacher is a segkd checkpoint (.pt, e.g. "
                             "the best.pt the .onnx was exported from) or PyTorch weights")
        return v
    cache: Optional[TeacherCacheCfg] = None  # None: the live teacher

    @field_validator("cache", mode="before")
    @classmethod
    def _cache_bool(cls, v: Any) -> Any:
        """``cache: true`` = the defaults (exact, disk); ``false`` = off."""
        if isinstance(v, bool):
            return {} if v else None
        return v


LOGITS = "logits"  # a term position that is the model's output, not a module path


class Term(StrictModel):
    """One weighted loss term: which tensors feed which loss. The one type from the config to
    the loss: a stage's ``terms`` entry, what the Distiller installs (after the loss's contract
    resolves it, ``losses/contract.py``) and what a loss's ``bind`` is handed.

    ``student`` / ``teacher``: ``logits`` (the model's output), a module path, or a list of them
    for a loss whose contract takes lists (it gets the tensors as a list, in this order; the
    student's i-th pairs with the teacher's i-th). The hook kind applies to every module path
    of its side. ``connector``: ``auto`` (a 1x1 conv + BN where the student's channels differ
    from the teacher's; one per pair for lists) | ``none`` | a CONNECTORS name. ``name``: unique
    in its stage (default: the loss name, then ``<loss>_<index>``). ``options``: the loss's
    constructor arguments and its declared wiring options."""

    loss: str
    weight: float = 1.0
    name: Optional[str] = None
    student: str | list[str] = LOGITS
    teacher: Optional[str | list[str]] = LOGITS
    student_hook: Literal["output", "input"] = "output"
    teacher_hook: Literal["output", "input"] = "output"
    connector: Optional[str] = "auto"  # auto (when channels differ) | none | a CONNECTORS name
    options: dict[str, Any] = {}

    @field_validator("student", "teacher")
    @classmethod
    def _paths(cls, v: Any) -> Any:
        if isinstance(v, list) and not v:
            raise ValueError("an empty list of paths: give one path (or logits) or a list of them")
        if any(p == "" for p in (v if isinstance(v, list) else [v])):
            raise ValueError("an empty path: give a module path (`segkd info` lists them) or logits")
        return v

    def positions(self, side: Literal["student", "teacher"]) -> list[tuple[str, str]]:
        """The ``(path, hook kind)`` positions ``side`` reads, in order (``(logits, output)``
        for the model's output; none for a teacher of None)."""
        paths = self.student if side == "student" else self.teacher
        hook = self.student_hook if side == "student" else self.teacher_hook
        if paths is None:
            return []
        return [(p, "output" if p == LOGITS else hook) for p in (paths if isinstance(paths, list) else [paths])]


TermCfg = Term  # the name it had as a config section


# a stage's learning-rate schedule: one config type per schedule (segkd/config/schedules.py), chosen by
# its `name`; a key that does not apply to that schedule is an error
def SchedCfg(**keys: Any) -> ScheduleCfg:  # noqa: N802  (reads as the config type it builds)
    """A schedule config from keyword arguments: ``SchedCfg(name="poly", power=0.9)``."""
    try:
        return schedule_from_dict(keys)
    except ValueError as err:
        raise ConfigError(f"schedule: {err}") from None


class SelectCfg(StrictModel):
    # a metric measured each validation ("val/mIoU", "val/loss/<term>", "select/mIoU" with
    # data.select_fraction), or "last": the last validated epoch, chosen on nothing
    metric: str = "val/mIoU"
    mode: Literal["max", "min"] = "max"
    restore_best: bool = False  # load the best epoch's weights when the stage ends


class ReplaceCfg(StrictModel):
    """Convolutions replaced by cheap blocks at the start of a stage: by ``paths`` (exact or
    globs) or chosen automatically to reach ``target_params`` / ``target_flops`` (fractions of
    the current model's) among ``candidates`` (globs; default: every conv k>=3, >=16 channels)."""

    paths: list[str] = []
    block: str = "dwsep"
    options: dict[str, Any] = {}
    target_params: Optional[float] = Field(None, gt=0, lt=1)
    target_flops: Optional[float] = Field(None, gt=0, lt=1)
    candidates: Optional[list[str]] = None
    input_size: tuple[int, int] = (512, 512)  # for FLOPs in the automatic plan


class StageCfg(StrictModel):
    name: str = "train"
    epochs: int = Field(1, ge=1)
    iters_per_epoch: Optional[int] = None  # None: one pass over the training data
    data: Literal["labeled", "images"] = "labeled"  # images: labels never reach the loss
    trainable: list[str] = ["*"]  # globs over student module paths
    frozen: list[str] = []  # globs removed from trainable
    # the cheap blocks this run installed (this stage's and earlier stages') train besides
    # `trainable` (Plug and Play trains only the replaced convs: `trainable: []`)
    train_replaced: bool = True
    # eval: student modules none of whose parameters train (and parameterless ones inside
    # them: Dropout, BN without affine) run in eval mode, like the eval-mode teacher they were
    # copied from; train: every module trains (BatchNorm on batch statistics, running
    # statistics updated), e.g. OFD's connector epoch, where the original student is in
    # train mode while only the connectors learn
    frozen_mode: Literal["eval", "train"] = "eval"
    terms: list[Term] = [Term(loss="ce", teacher=None)]
    optimizer: OptimCfg = OptimCfg()
    schedule: SerializeAsAny[ScheduleCfg] = NoSchedule()
    replace: list[ReplaceCfg] = []
    select: SelectCfg = SelectCfg()
    val_every: int = Field(1, ge=1)

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule(cls, v: Any) -> Any:
        return schedule_from_dict(v)

    @model_validator(mode="before")
    @classmethod
    def _removed_keys(cls, v: Any) -> Any:
        """``connector_warmup_epochs`` was never read (an OFD connector epoch is a stage of its
        own); configs and checkpoints saved before its removal hold it at 0, which still loads."""
        if isinstance(v, dict) and "connector_warmup_epochs" in v:
            v = dict(v)
            if v.pop("connector_warmup_epochs"):
                raise ValueError("connector_warmup_epochs was removed (nothing read it): "
                                 "train the connectors alone in a stage of their own")
        return v


class TrainerCfg(StrictModel):
    # auto: bf16-mixed where the device computes bf16 natively, else fp32 (fp16 on a GPU
    # without bf16); the choice and its reason go to the log and summary.json
    precision: Literal["auto", "32", "bf16-mixed", "16-mixed", "32-true", "bf16-true"] = "auto"
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    channels_last: bool = True
    compile: bool = False
    grad_accum: int = Field(1, ge=1)
    grad_clip: Optional[float] = None
    sync_bn: bool = True  # SyncBatchNorm when running on several processes
    log_every: int = Field(20, ge=1)
    progress: bool = True
    # deterministic kernels (torch.use_deterministic_algorithms, warn-only; cuDNN flags): see
    # engine.fabric.apply_determinism
    deterministic: bool = False
    threads: Optional[int] = None  # torch.set_num_threads; None: torch's default (one per core)
    # CUDA only: allow TensorFloat-32 (10-bit mantissa) in fp32 convolutions and matmuls (faster
    # on Ampere and newer); off, precision 32 is fp32 arithmetic (engine.runtime.apply_tf32)
    tf32: bool = False

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_number(cls, v: Any) -> Any:
        """``precision: 32`` (a YAML int, as Lightning accepts it) means "32"."""
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("threads")
    @classmethod
    def _threads(cls, v: Optional[int]) -> Optional[int]:
        if v is not None and v < 1:
            raise ValueError("threads must be >= 1 (CPU threads of this process); remove it "
                             "(or null) for torch's default (one per core)")
        return v


class SlidingCfg(StrictModel):
    crop: tuple[int, int]
    overlap: float = 1 / 3


class EvalCfg(StrictModel):
    sliding: Optional[SlidingCfg] = None
    flip: bool = False
    scales: list[float] = [1.0]
    per_image_iou: bool = True  # also report the kdsemseg per-image IoU (named as such)
    splits: list[str] = ["val", "test"]  # final evaluation of the best model ("train" too)


class Config(StrictModel):
    name: str = "run"
    task: Literal["segmentation", "classification"] = "segmentation"
    seed: int = 0
    out_dir: str = "runs"
    data: DataCfg = DataCfg()
    model: ModelCfg = ModelCfg(encoder="kd_resnet10")
    teacher: Optional[TeacherCfg] = None
    stages: list[StageCfg] = [StageCfg()]
    trainer: TrainerCfg = TrainerCfg()
    eval: EvalCfg = EvalCfg()

    @field_validator("stages")
    @classmethod
    def _non_empty(cls, v: list[StageCfg]) -> list[StageCfg]:
        if not v:
            raise ValueError("at least one stage is required")
        return v


# ----------------------------------------------------------------------------------- loading
def config_from_dict(raw: dict, source: str = "<dict>") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(Config, err, source)) from None


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Load a YAML file (or the defaults when ``path`` is None), apply overrides, validate."""
    raw = read_yaml(path) if path else {}
    if overrides:  # overrides may address defaults (e.g. stages.0.epochs) not in the file
        try:
            defaults = Config().model_dump(mode="json")
            if isinstance(raw.get("model"), dict):  # a model section of the file's own: the
                # default model's encoder (kd_resnet10) must not reach an arch that has none
                defaults["model"] = ModelCfg().model_dump(mode="json")
            raw = deep_merge(defaults, raw)
        except ValidationError as err:
            raise ConfigError(format_validation_error(Config, err, str(path))) from None
        raw = apply_overrides(raw, overrides)
    return config_from_dict(raw, str(path or "defaults"))


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
