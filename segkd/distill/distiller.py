"""The Distiller: student + frozen teacher + recorders + connectors + weighted loss terms.

``Distiller(student, teacher)(images, target)`` returns
``{"loss": total, "logits": student logits, "loss/<term>": unweighted value (detached)}``.
Supervised training is the same object with only a cross-entropy term and no teacher.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Optional

import torch
import torch.nn as nn

from segkd.config.schema import LOGITS, Term
from segkd.core.errors import ConfigError
from segkd.core.registry import CONNECTORS, LOSSES
from segkd.distill import connectors as _connectors  # noqa: F401  (registers connectors)
from segkd.distill import losses as _losses  # noqa: F401  (registers losses)
from segkd.distill.freeze import frozen_modules, keep_in_eval
from segkd.distill.losses.contract import contract_of
from segkd.distill.recorder import Recorder

__all__ = ["LOGITS", "Distiller", "Term"]

# modules whose weight and bias autocast casts whole to its compute type before use
_AUTOCAST_WEIGHT_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class Distiller(nn.Module):
    """Holds the student (trainable), connectors and losses; the teacher is frozen, kept in eval
    mode and is NOT a registered submodule (never in state_dict, never wrapped by DDP)."""

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None,
                 ignore_index: int = 255, teacher_train_bn: bool = False,
                 teacher_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.student = student
        self.connectors = nn.ModuleDict()
        self.losses = nn.ModuleDict()
        self.terms: list[Term] = []
        self.ignore_index = ignore_index
        self.teacher_train_bn = teacher_train_bn
        self.teacher_dtype = teacher_dtype
        self.teacher_compute_dtype: torch.dtype | None = None  # see store_teacher_weights_in
        object.__setattr__(self, "teacher", teacher)
        if teacher is not None:
            teacher.requires_grad_(False)
            teacher.eval()
        self.s_rec = Recorder(student, "student")
        self.t_rec = Recorder(teacher, "teacher") if teacher is not None else None
        self._frozen: list[nn.Module] = []  # student parts kept in eval mode (see freeze.py)

    # ------------------------------------------------------------------ configuration
    def configure(self, terms: list[Term], probe: torch.Tensor) -> None:
        """Install ``terms``: hooks, automatic connectors (channels from a probe forward), losses,
        and each loss's teacher-side setup (its ``bind``).

        Each term is first resolved by its loss's declared contract (``Contract.resolve`` in
        ``losses/contract.py``: a loss that reads no teacher gets no teacher position, one that
        takes lists gets lists, wrong wiring is refused naming the term).
        ``probe``: a small input batch ``[2, 3, H, W]`` used once to learn feature shapes.
        """
        self.s_rec.remove()
        if self.t_rec is not None:
            self.t_rec.remove()
        terms = [contract_of(t.loss).resolve(t) for t in terms]
        for t in terms:
            if t.teacher is not None and self.teacher is None:
                raise ConfigError(f"term '{t.name}' ({t.loss}) needs a teacher: set `teacher:` in the config")
            for rec, side in ((self.s_rec, "student"), (self.t_rec, "teacher")):
                for path, hook in t.positions(side):
                    if path != LOGITS:
                        rec.add(path, hook)
        shapes = self._probe_shapes(probe)
        for t in terms:
            if t.name not in self.losses:
                opts, _ = contract_of(t.loss).split_options(t.options)
                self.losses[t.name] = LOSSES.build(t.loss, **opts)
            self._maybe_connector(t, shapes)
            self._bind(t)
        self.terms = list(terms)
        active = {t.name for t in terms}
        for name, conn in self.connectors.items():  # connectors of other stages stay frozen
            conn.requires_grad_(name in active)

    @torch.no_grad()
    def _probe_shapes(self, probe: torch.Tensor) -> dict[tuple[str, str, str], torch.Size]:
        with _eager():  # a compiled student must not compile a graph for the probe
            return self._probe(probe)

    def _probe(self, probe: torch.Tensor) -> dict[tuple[str, str, str], torch.Size]:
        was_training = self.student.training
        self.student.eval()
        s_out = self.student(probe)
        shapes = {("s", k[0], k[1]): v.shape for k, v in self.s_rec.data.items()}
        shapes[("s", LOGITS, "output")] = s_out.shape
        if self.teacher is not None:
            t_probe = probe.to(next(self.teacher.parameters()).device)
            with self._teacher_autocast(t_probe.device):
                t_out = self.teacher(t_probe)
            shapes.update({("t", k[0], k[1]): v.shape for k, v in self.t_rec.data.items()})
            shapes[("t", LOGITS, "output")] = t_out.shape
            if t_out.shape[1] != s_out.shape[1]:
                raise ConfigError(f"teacher predicts {t_out.shape[1]} classes, student "
                                  f"{s_out.shape[1]}: they must match")
            self.t_rec.clear()
        self.s_rec.clear()
        self.student.train(was_training)
        return shapes

    def _maybe_connector(self, t: Term, shapes: dict) -> None:
        """``connectors[t.name]``: one connector (a term with one position per side) or a
        ModuleList with one per pair of positions (lists; Identity where none is needed)."""
        if t.teacher is None or t.connector in (None, "none") or t.name in self.connectors:
            return
        pairs = [self._connector(t.connector, shapes[("s", *s)][1], shapes[("t", *p)][1])
                 for s, p in zip(t.positions("student"), t.positions("teacher"))]
        if all(c is None for c in pairs):
            return
        device = next(self.student.parameters()).device
        if isinstance(t.student, list):
            self.connectors[t.name] = nn.ModuleList([c or nn.Identity() for c in pairs]).to(device)
        else:
            self.connectors[t.name] = pairs[0].to(device)

    @staticmethod
    def _connector(kind: str, cs: int, ct: int) -> nn.Module | None:
        """A ``kind`` connector from ``cs`` to ``ct`` channels (``auto``: a 1x1 conv + BN when
        they differ, else none)."""
        if kind == "auto":
            if cs == ct:
                return None
            kind = "conv1x1_bn"
        return CONNECTORS.build(kind, in_channels=cs, out_channels=ct)

    def _bind(self, t: Term) -> None:
        """The loss's teacher-side setup (e.g. OFD's margins), for terms that read the teacher;
        run at every configure (the teacher is frozen: the same result each time)."""
        bind = getattr(self.losses[t.name], "bind", None)
        if bind is None or t.teacher is None:
            return
        bind(self.teacher, t)

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> "Distiller":
        super().train(mode)
        if self.teacher is not None:
            self.teacher.train(mode and self.teacher_train_bn)
        if mode:
            keep_in_eval(self._frozen)
        return self

    def refresh_frozen(self, frozen_eval: bool = True) -> None:
        """Recompute which student parts stay in eval mode while training (after trainable flags
        change): every module none of whose parameters train, with what it contains, when
        ``frozen_eval``; none when False (the whole student follows the training mode)."""
        self._frozen = frozen_modules(self.student) if frozen_eval else []
        self.train(self.training)

    @property
    def needs_teacher(self) -> bool:
        return any(t.teacher is not None for t in self.terms)

    def store_teacher_weights_in(self, dtype: torch.dtype | None) -> None:
        """Keep the frozen teacher's convolution and linear weights in ``dtype``, the type
        autocast computes them in (bf16 / fp16 under mixed precision), instead of casting
        them again at every step; the teacher then always runs under autocast to ``dtype``.

        Exact: autocast would round the same float32 weights to ``dtype`` before each call.
        Only modules of exactly these types are converted: a subclass may use its weight in
        other ways (e.g. weight standardisation) and keeps float32.
        """
        if self.teacher is None or dtype is None or dtype == torch.float32:
            return
        self.teacher_compute_dtype = dtype
        for m in self.teacher.modules():
            if type(m) in _AUTOCAST_WEIGHT_MODULES:
                for p in m.parameters(recurse=False):
                    p.data = p.data.to(dtype)

    def _teacher_autocast(self, device: torch.device):
        """The teacher's precision: ``teacher_dtype`` when set (float32: autocast off), else the
        type its weights are stored in, else whatever the caller runs under."""
        dtype = self.teacher_dtype or self.teacher_compute_dtype
        if dtype is None:
            return nullcontext()
        if dtype == torch.float32:
            return torch.autocast(device.type, enabled=False)
        return torch.autocast(device.type, dtype=dtype)

    # ------------------------------------------------------------------ forward
    def student_call(self, images: torch.Tensor) -> torch.Tensor:
        """The student alone, for evaluation outside :meth:`forward`: the recorders are cleared
        first, as in :meth:`forward`, so every call sees the same hook state (a compiled
        student then reuses its evaluation graph instead of compiling another)."""
        self.s_rec.clear()
        return self.student(images)

    def teacher_positions(self) -> list[tuple[str, str]]:
        """What the active terms read from the teacher: ``(LOGITS, "output")`` and/or
        ``(module path, hook kind)`` positions, in term order, without repeats."""
        return list(dict.fromkeys(p for t in self.terms for p in t.positions("teacher")))

    def teacher_outputs(self, images: torch.Tensor) -> dict[tuple[str, str], torch.Tensor]:
        """The teacher's tensors at :meth:`teacher_positions` for ``images``, computed as
        :meth:`forward` computes them (the teacher cache stores these)."""
        logits = self._teacher_forward(images)
        out = {p: (logits if p[0] == LOGITS else self.t_rec.get(p)) for p in self.teacher_positions()}
        self.t_rec.clear()
        return out

    def _teacher_forward(self, images: torch.Tensor) -> Optional[torch.Tensor]:
        if not self.needs_teacher:
            return None
        with torch.no_grad(), self._teacher_autocast(images.device):
            return self.teacher(images)

    def forward(self, images: torch.Tensor, target: torch.Tensor | None = None,
                with_losses: bool = True, keep_logits: bool = True,
                teacher_out: dict | None = None) -> dict[str, torch.Tensor]:
        """images ``[N,3,H,W]``, target ``[N,H,W]`` (or None on unlabeled data).

        ``keep_logits=False`` (the training step) leaves the logits out of the result: the
        precision wrapper around this module would otherwise copy them to float32 each step.
        ``teacher_out``: the teacher's tensors for these images from the teacher cache
        (:meth:`teacher_outputs` keys); the teacher does not run.
        """
        self.s_rec.clear()
        if teacher_out is not None and with_losses:
            self.t_rec.data.update({k: v for k, v in teacher_out.items() if k[0] != LOGITS})
            t_logits = teacher_out.get((LOGITS, "output"))
        else:
            # the teacher first: its activations are freed as it goes (no graph), so the
            # student's saved activations never coexist with them (lower peak memory)
            t_logits = self._teacher_forward(images) if with_losses else None
        logits = self.student(images)
        out: dict[str, torch.Tensor] = {"logits": logits} if keep_logits or not with_losses else {}
        if not with_losses:
            return out
        s_loss, t_loss = _loss_layout(logits), _loss_layout(t_logits)
        total = logits.new_zeros((), dtype=torch.float32)
        for t in self.terms:
            value = self._term_value(t, s_loss, t_loss, target)
            out[f"loss/{t.name}"] = value.detach()
            total = total + t.weight * value
        out["loss"] = total
        if self.t_rec is not None:
            self.t_rec.clear()
        return out

    def _term_value(self, t: Term, logits, t_logits, target) -> torch.Tensor:
        s = _read(t.student, t.student_hook, logits, self.s_rec)
        if t.name in self.connectors:
            conn = self.connectors[t.name]
            s = [c(x) for c, x in zip(conn, s)] if isinstance(s, list) else conn(s)
        tt = None if t.teacher is None else _read(t.teacher, t.teacher_hook, t_logits, self.t_rec)
        if isinstance(tt, list):
            tt = [_like(x, y) for x, y in zip(tt, s)]
        elif tt is not None:
            tt = _like(tt, s)
        return self.losses[t.name](s, tt, target=target, ignore_index=self.ignore_index)


def _read(paths: str | list[str], hook: str, logits, rec: Recorder):
    """The tensor at ``paths`` (logits or a recorded module), or a list of them for a list."""
    if isinstance(paths, list):
        return [_read(p, hook, logits, rec) for p in paths]
    return logits if paths == LOGITS else rec.get((paths, hook))


def _like(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """``teacher`` in the student's type when autocast does not cast it anyway."""
    if teacher.dtype != student.dtype and not torch.is_autocast_enabled(student.device.type):
        return teacher.to(student.dtype)
    return teacher


def _eager():
    """Run torch.compile'd modules eagerly inside this context (a one-off call such as the
    shape probe would otherwise compile a graph of its own and force later recompiles)."""
    set_stance = getattr(torch.compiler, "set_stance", None)
    return set_stance("force_eager") if set_stance is not None else nullcontext()


def _loss_layout(logits: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Logits as every loss wants them: float32 and NCHW-contiguous, made once per step.

    The losses compute in float32 and reduce over the class dimension (softmax, CE, KL); on
    channels_last (NHWC) logits each of them would copy to float32 and again to NCHW for the
    class-wise kernels. One conversion here serves them all, and its backward is one copy.
    """
    if logits is None:
        return None
    return logits.to(dtype=torch.float32, memory_format=torch.contiguous_format)

