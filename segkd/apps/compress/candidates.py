"""The students ``segkd compress`` considers, each a spec plus how it starts.

(a) ``cut``: the teacher with fewer blocks per encoder stage, every tensor from the teacher
    (block mapping in the config's ``init_match.blocks``);
(b) ``encoder``: a smaller encoder under the teacher's decoder, random initialisation;
(c) ``cheap``: the teacher with cheap convolutions (the Plug and Play plan at the target);
(d) ``narrow`` / ``cut+narrow``: fewer channels per layer, the teacher's most important ones
    (chosen once per residual chain), alone or on a cut.
Kinds a teacher cannot take (a cut of a torchvision DeepLab) are left out, with the reason.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Optional

import torch.nn as nn

from segkd.apps.compress.teacher import Teacher
from segkd.models import narrow

SMALL_ENCODERS = ("kd_resnet18", "kd_resnet10", "mobilenetv2_100")
WIDTHS = (0.75, 0.5, 0.25)
CHEAP_OPTIONS = {"kernel_size": 5, "dilation": 2}  # configs/camvid/pnp.yaml
TEACHER_INIT = ("cut", "narrow", "cut+narrow")  # kinds that start from the teacher's tensors


@dataclass
class Candidate:
    name: str
    kind: str  # cut | narrow | cut+narrow | encoder | cheap
    spec: dict  # {"arch", "kwargs"} of the student
    model_cfg: dict  # the config's `model:` section
    init: str  # how it starts, in words
    replace: list = field(default_factory=list)  # cheap-conv replacements (Plug and Play)
    params: int = 0
    flops: int = 0
    latency_ms: Optional[float] = None
    meets: bool = False
    miss: str = ""  # what of the target it misses

    @property
    def teacher_init(self) -> bool:
        return self.kind in TEACHER_INIT or self.kind == "cheap"

    def build(self) -> nn.Module:
        from segkd.models.spec import build_from_spec

        return build_from_spec(self.spec, self.replace or None)


def _model_cfg(spec: dict, init: Optional[dict] = None) -> dict:
    kw = dict(spec["kwargs"])
    kw.pop("num_classes", None)
    cfg: dict[str, Any] = {"arch": spec["arch"], "encoder": kw.pop("encoder", None)}
    if kw:
        cfg["kwargs"] = kw
    if init is not None:
        cfg.update(init_from="teacher", init_match=init)
    return cfg


def _derived(teacher: Teacher, layers: Optional[list[int]], width: float, keep: str) -> Candidate:
    t_layers = narrow.stage_layers(teacher.model.state_dict())
    spec = narrow.student_spec(teacher.spec, layers, width, t_layers)
    blocks = narrow.keep_blocks(t_layers, layers or t_layers, keep) if layers else {}
    kind = "cut+narrow" if layers and width < 1 else ("cut" if layers else "narrow")
    name = "teacher" + (f" cut {'-'.join(map(str, layers))}" if layers else "") + \
        (f" x{width:g} width" if width < 1 else "")
    init = (f"teacher's blocks {narrow.describe_blocks(blocks)}" if blocks else "teacher's blocks")
    if width < 1:
        init += ", channels by BatchNorm |gamma|"
    return Candidate(name, kind, spec, _model_cfg(spec, {"blocks": blocks, "channels": "bn"}), init)


def depth_options(t_layers: list[int]) -> list[list[int]]:
    """Cuts worth trying: about half the blocks, two per stage, one per stage."""
    opts = [[max(1, (n + 1) // 2) for n in t_layers], [min(n, 2) for n in t_layers],
            [1] * len(t_layers)]
    return [o for i, o in enumerate(opts) if o != t_layers and o not in opts[:i]]


def teacher_candidates(teacher: Teacher, keep: str = "first",
                       params_target: Optional[int] = None) -> tuple[list[Candidate], list[str]]:
    """(a) and (d): the cut / narrowed teachers; plus, with a params target below every cut,
    the deepest cut narrowed just enough to meet it. Returns (candidates, notes)."""
    reason = narrow.narrowable(teacher.spec)
    if reason:
        return [], [f"cut / narrowed teacher: left out ({reason})"]
    t_layers = narrow.stage_layers(teacher.model.state_dict())
    cuts = depth_options(t_layers)
    out = [_derived(teacher, c, 1.0, keep) for c in cuts]
    out += [_derived(teacher, None, w, keep) for w in WIDTHS[:2]]
    out += [_derived(teacher, cuts[-1] if cuts else None, w, keep) for w in WIDTHS[1:]]
    if params_target:
        fit = fit_width(teacher, cuts[-1] if cuts else None, params_target, keep)
        if fit and all(fit.spec != c.spec for c in out):
            fit.name += " (fit to target)"
            out.append(fit)
    return out, []


def fit_width(teacher: Teacher, layers, params_target: int, keep: str) -> Optional[Candidate]:
    """The widest narrowing of the cut ``layers`` with at most ``params_target`` parameters."""
    from segkd.models.cost import count_params

    best = None
    for w in [x / 20 for x in range(19, 1, -1)]:
        c = _derived(teacher, layers, w, keep)
        if count_params(c.build()) <= params_target:
            best = c
            break
    return best


def encoder_candidates(teacher: Teacher, extra: tuple[str, ...] = ()) -> tuple[list[Candidate], list[str]]:
    """(b): smaller encoders under the teacher's decoder (smp architectures only)."""
    from segkd.models.factory import smp_archs

    if teacher.spec["arch"] not in smp_archs() or "encoder" not in teacher.spec["kwargs"]:
        return [], [f"smaller encoders: left out ({teacher.describe()} is not an smp decoder + encoder)"]
    out = []
    own = str(teacher.spec["kwargs"]["encoder"]).removeprefix("tu-")
    for enc in dict.fromkeys((*extra, *SMALL_ENCODERS)):
        if enc.removeprefix("tu-") == own:
            continue
        kw = {k: v for k, v in teacher.spec["kwargs"].items() if k not in ("layers", "channels", "stem_width")}
        spec = {"arch": teacher.spec["arch"], "kwargs": {**kw, "encoder": enc}}
        out.append(Candidate(f"{teacher.spec['arch']}/{enc}", "encoder", spec, _model_cfg(spec),
                             "random initialisation"))
    return out, []


def cheap_candidate(teacher: Teacher, fraction: float, size: tuple[int, int]) -> tuple[list[Candidate], list[str]]:
    """(c): the Plug and Play plan keeping ``fraction`` of the teacher's parameters."""
    from segkd.models.cheap import auto_plan

    cands = [p for p in ("encoder.model.layer3.*", "encoder.model.layer4.*")
             if any(n.startswith(p[:-2] + ".") for n, _ in teacher.model.named_modules())]
    try:
        plan = auto_plan(copy.deepcopy(teacher.model), target_params=min(max(fraction, 0.05), 0.95),
                         input_size=size, block="dwsep", candidates=cands or None, **CHEAP_OPTIONS)
    except Exception as err:  # a model without replaceable convs
        return [], [f"cheap convolutions: left out ({err})"]
    if not plan["paths"]:
        return [], ["cheap convolutions: left out (no convolution to replace)"]
    rep = [{"paths": plan["paths"], "block": "dwsep", "options": dict(CHEAP_OPTIONS)}]
    return [Candidate(f"teacher + cheap convs ({len(plan['paths'])})", "cheap", teacher.spec,
                      {"from_teacher": True}, "teacher's tensors; replaced convs fresh", rep)], []


def all_candidates(teacher: Teacher, size: tuple[int, int], params_fraction: Optional[float],
                   params_target: Optional[int], keep: str = "first",
                   encoders: tuple[str, ...] = ()) -> tuple[list[Candidate], list[str]]:
    """Every candidate kind for ``teacher`` (unmeasured) and notes on the kinds left out."""
    out, notes = [], []
    for made, why in (teacher_candidates(teacher, keep, params_target),
                      encoder_candidates(teacher, encoders),
                      cheap_candidate(teacher, params_fraction or 0.6, size)):
        out += [c for c in made if all(c.spec != o.spec or c.replace for o in out)]  # R18 = a cut
        notes += why
    return out, notes
