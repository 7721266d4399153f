"""A smaller copy of a UNet-ResNet teacher that starts from the teacher's own tensors.

Two cuts, alone or together (``segkd compress`` plans them; ``model.init_match`` given as a
mapping loads them, see :mod:`segkd.engine.init`):

- **depth**: fewer residual blocks per encoder stage. The student's block ``j`` of stage ``k`` is the
  teacher's block ``blocks["encoder.model.layer<k>"][j]``; the first block of a stage (it holds
  the stride and the downsample projection) is always kept.
- **width**: fewer channels per layer. The kept channels are the teacher's most important ones,
  by BatchNorm scale |gamma| (``channels: bn``) or by the L1 norm of the filters producing them
  (``channels: norm``). Channels tied by residual adds (the stem and every block output of a
  stage, the downsample projection, the decoder's skip inputs) form one group, chosen once for
  the whole chain from the summed importance of every layer writing into it; a block's inner
  channels (one group in a BasicBlock, two in a Bottleneck) and each decoder convolution are
  groups of their own.

At width 1.0 and no depth cut every index is the identity and the copy computes exactly the
teacher's function. Supported family: smp ``unet`` over a plain-stem ResNet encoder, BasicBlock
(segkd's ``kd_resnet*``, timm's ``resnet18`` / ``resnet34``) or Bottleneck (``resnet26`` /
``50`` / ``101`` / ``152``); the encoder takes ``layers`` and ``channels`` (timm's ResNet
arguments), the decoder ``decoder_channels``. timm's plain stem is always 64 wide: it keeps its
width, and so does stage 1 of a BasicBlock ResNet (its residual chain starts at the stem);
a Bottleneck stage 1 has its own chain (its first block projects 64 -> 4x its width) and narrows.
"""
from __future__ import annotations

import re
from typing import Any, Optional

import torch

from segkd.core.errors import ConfigError

ENC = "encoder.model."
UNET_DECODER = (256, 128, 64, 32, 16)  # smp Unet's default decoder_channels
_BASIC = re.compile(r"^(tu-)?(kd_resnet\d+|resnet(18|34))$")
_BOTTLENECK = re.compile(r"^(tu-)?resnet(26|50|101|152)$")
BOTTLENECK_LAYERS = {"resnet26": [2, 2, 2, 2], "resnet50": [3, 4, 6, 3], "resnet101": [3, 4, 23, 3],
                     "resnet152": [3, 8, 36, 3]}
SUPPORTED = ("smp unet with a plain-stem ResNet encoder (kd_resnet10..34, resnet18, resnet34; "
             "Bottleneck resnet26, resnet50, resnet101, resnet152)")


def bottleneck(encoder: str) -> bool:
    """Whether ``encoder`` (a spec's encoder name) is one of the Bottleneck ResNets."""
    return bool(_BOTTLENECK.match(str(encoder)))


def narrowable(spec: dict) -> Optional[str]:
    """None when ``spec`` (``{"arch", "kwargs"}``) can be cut and narrowed, else the reason."""
    kw = spec.get("kwargs", {})
    enc = str(kw.get("encoder", ""))
    if spec.get("arch") != "unet" or not (_BASIC.match(enc) or _BOTTLENECK.match(enc)):
        return f"{spec.get('arch')}/{kw.get('encoder')} is not {SUPPORTED}"
    if kw.get("decoder_attention_type") or kw.get("encoder_depth", 5) != 5:
        return "a UNet with decoder attention or another encoder depth"
    return None


def stage_layers(state: dict) -> list[int]:
    """Blocks per encoder stage, read from a UNet-ResNet state dict."""
    blocks: dict[int, set[int]] = {}
    for key in state:
        m = re.match(re.escape(ENC) + r"layer(\d)\.(\d+)\.", key)
        if m:
            blocks.setdefault(int(m[1]), set()).add(int(m[2]))
    return [len(blocks[k]) for k in sorted(blocks)]


def keep_blocks(teacher_layers: list[int], student_layers: list[int],
                how: str = "first") -> dict[str, list[int]]:
    """Which teacher block each student block starts from, per stage path: ``first`` (the
    first n blocks: the CamVid evidence, docs/compress.md) or ``even`` (evenly spaced, first
    and last kept). The first block of each stage is kept either way."""
    out = {}
    for k, (n, m) in enumerate(zip(teacher_layers, student_layers), 1):
        if not 1 <= m <= n:
            raise ConfigError(f"stage {k}: cannot keep {m} of the teacher's {n} blocks")
        if how == "first" or m == 1:
            idx = list(range(m))
        elif how == "even":
            idx = [int(round(i * (n - 1) / (m - 1))) for i in range(m)]
        else:
            raise ConfigError(f"unknown block choice '{how}' (first | even)")
        out[f"{ENC}layer{k}"] = idx
    return out


def _scale(c: int, width: float) -> int:
    """``c`` channels times ``width``: a multiple of 8 from 32 channels up, at least 4."""
    if width >= 1:
        return c
    v = c * width
    return max(8, int(round(v / 8)) * 8) if c >= 32 else max(4, int(round(v)))


def student_spec(teacher_spec: dict, layers: Optional[list[int]] = None, width: float = 1.0,
                 teacher_layers: Optional[list[int]] = None) -> dict:
    """The spec of the teacher cut to ``layers`` blocks per stage and narrowed to ``width``
(the decoder and the encoder's stages: 2-4 of a BasicBlock ResNet, all four of a Bottleneck one;
the stem stays 64 channels wide)."""
    reason = narrowable(teacher_spec)
    if reason:
        raise ConfigError(f"cannot cut or narrow the teacher: {reason}")
    kw = dict(teacher_spec["kwargs"])
    from segkd.models.encoders import KD_RESNET_LAYERS

    enc = kw["encoder"].removeprefix("tu-")
    base = (teacher_layers or KD_RESNET_LAYERS.get(enc) or BOTTLENECK_LAYERS.get(enc)
            or {"resnet18": [2] * 4, "resnet34": [3, 4, 6, 3]}[enc])
    layers = list(layers or kw.get("layers") or base)
    if layers != list(base):
        same = [n for n, v in KD_RESNET_LAYERS.items() if v == layers]
        if same and enc.startswith("kd_resnet") and "layers" not in kw:
            kw["encoder"] = same[0]  # a named variant: kd_resnet34 cut to [2,2,2,2] is kd_resnet18
            kw.pop("layers", None)
        else:
            kw["layers"] = layers
    if width < 1:
        # timm's plain ResNet stem is 64 wide whatever stem_width says; a BasicBlock layer1
        # shares its residual chain (stage 1 keeps its 64 channels), a Bottleneck one does not
        first = 0 if bottleneck(enc) else 1
        chans = [c if i < first else _scale(c, width)
                 for i, c in enumerate(kw.get("channels", (64, 128, 256, 512)))]
        kw.update(channels=chans,
                  decoder_channels=[_scale(c, width) for c in kw.get("decoder_channels", UNET_DECODER)])
    return {"arch": teacher_spec["arch"], "kwargs": kw}


def _groups(layers: list[int], n_decoder: int, bottle: bool = False) -> dict[str, tuple[str, list[str]]]:
    """module path -> (group of its output channels, groups of its input channels in order);
    ``bottle``: the encoder's blocks are Bottlenecks (conv1 1x1 -> conv2 3x3 -> conv3 1x1)."""
    stem = "s0" if bottle else "s1"  # a BasicBlock layer1 continues the stem's residual chain
    g: dict[str, tuple[str, list[str]]] = {f"{ENC}conv1": (stem, ["rgb"]), f"{ENC}bn1": (stem, [])}
    prev = stem
    for k, n in enumerate(layers, 1):
        s = f"s{k}"
        for j in range(n):
            p, inp = f"{ENC}layer{k}.{j}.", prev if j == 0 else s
            m1, m2 = f"{p}mid", f"{p}mid2"
            if bottle:
                g.update({p + "conv1": (m1, [inp]), p + "bn1": (m1, []), p + "conv2": (m2, [m1]),
                          p + "bn2": (m2, []), p + "conv3": (s, [m2]), p + "bn3": (s, [])})
            else:
                g.update({p + "conv1": (m1, [inp]), p + "bn1": (m1, []), p + "conv2": (s, [m1]),
                          p + "bn2": (s, [])})
            g.update({p + "downsample.0": (s, [inp]), p + "downsample.1": (s, [])})
        prev = s
    skips = ["s3", "s2", "s1", stem]  # the last skip is the stride-2 stem output
    x = "s4"
    for i in range(n_decoder):
        p = f"decoder.blocks.{i}."
        ins = [x] + ([skips[i]] if i < len(skips) else [])
        g.update({p + "conv1.0": (f"d{i}a", ins), p + "conv1.1": (f"d{i}a", []),
                  p + "conv2.0": (f"d{i}b", [f"d{i}a"]), p + "conv2.1": (f"d{i}b", [])})
        x = f"d{i}b"
    g["segmentation_head.0"] = ("classes", [x])
    return g


def teacher_key(key: str, blocks: dict[str, list[int]]) -> str:
    """The teacher tensor a student tensor starts from (block indices mapped)."""
    for stage, idx in blocks.items():
        m = re.match(re.escape(stage) + r"\.(\d+)\.(.*)$", key)
        if m:
            return f"{stage}.{idx[int(m[1])]}.{m[2]}"
    return key


def _importance(teacher: dict, groups: dict, blocks: dict, how: str) -> dict[str, torch.Tensor]:
    """group -> per-channel importance (summed over every layer writing into the group)."""
    imp: dict[str, torch.Tensor] = {}
    for path, (out, _) in groups.items():
        w = teacher.get(teacher_key(path + ".weight", blocks))
        if w is None:
            continue
        if how == "bn" and w.ndim == 1 and teacher_key(path + ".running_var", blocks) in teacher:
            score = w.detach().abs().float()
        elif how == "norm" and w.ndim == 4:
            score = w.detach().abs().float().flatten(1).sum(1)
        else:
            continue
        imp[out] = imp[out] + score if out in imp else score
    return imp


def derive_state(teacher: dict, student: dict, blocks: dict[str, list[int]],
                 channels: str = "bn") -> tuple[dict, dict[str, int]]:
    """The student state dict taken from the teacher's (blocks mapped, channels selected).
    Returns (state, {group: kept channels}) for the groups that were narrowed."""
    if channels not in ("bn", "norm"):
        raise ConfigError(f"init_match.channels: '{channels}' is not bn | norm")
    n_dec = len({k.split(".")[2] for k in student if k.startswith("decoder.blocks.")})
    groups = _groups(stage_layers(student), n_dec, bottle=f"{ENC}layer1.0.conv3.weight" in student)
    width = {}  # group -> (teacher channels, student channels)
    for path, (out, _) in groups.items():
        sk = path + ".weight"
        if sk in student and teacher_key(sk, blocks) in teacher:
            width[out] = (teacher[teacher_key(sk, blocks)].shape[0], student[sk].shape[0])
    imp = _importance(teacher, groups, blocks, channels)
    index = {}
    for g, (tc, sc) in width.items():
        if sc > tc:
            raise ConfigError(f"the student's {g} has {sc} channels, the teacher's {tc}")
        index[g] = (torch.arange(tc) if sc == tc else
                    torch.sort(torch.topk(imp[g], sc).indices).values)
    state = {k: _take(k, v, teacher, groups, blocks, index, width) for k, v in student.items()}
    return state, {g: int(len(i)) for g, i in index.items() if width[g][0] != width[g][1]}


def _take(key: str, like: torch.Tensor, teacher: dict, groups: dict, blocks: dict,
          index: dict, width: dict) -> torch.Tensor:
    tk = teacher_key(key, blocks)
    if tk not in teacher:
        raise ConfigError(f"the teacher has no tensor {tk} for the student's {key}")
    t = teacher[tk].detach()
    path = key.rsplit(".", 1)[0]
    if t.shape != like.shape and path in groups and t.ndim >= 1:
        out, ins = groups[path]
        if out in index:
            t = t.index_select(0, index[out])
        if t.ndim == 4 and ins:
            offsets, parts = 0, []
            for g in ins:
                tc = width[g][0] if g in width else t.shape[1] - offsets
                parts.append(index[g] + offsets if g in index else torch.arange(tc) + offsets)
                offsets += tc
            t = t.index_select(1, torch.cat(parts))
    if t.shape != like.shape:
        raise ConfigError(f"cannot derive the student's {key} {tuple(like.shape)} from the "
                          f"teacher's {tk} {tuple(t.shape)}: {SUPPORTED} only")
    return t.clone().to(like.dtype)


def describe_blocks(blocks: dict[str, list[int]]) -> str:
    """``layer1 [0, 1], layer2 [0, 3]``: the block mapping in one line."""
    return ", ".join(f"{k.removeprefix(ENC)} {v}" for k, v in blocks.items())


def block_spec(blocks: dict[str, Any]) -> dict[str, list[int]]:
    """A block mapping from config (``{path: [indices]}``), checked."""
    out = {}
    for k, v in blocks.items():
        if not isinstance(v, (list, tuple)) or not all(isinstance(i, int) and i >= 0 for i in v):
            raise ConfigError(f"init_match.blocks.{k}: expected a list of block indices, got {v!r}")
        if v and v[0] != 0:
            raise ConfigError(f"init_match.blocks.{k}: {list(v)} must start with block 0 (the first "
                              "block of a stage holds its stride and downsample projection)")
        out[str(k)] = list(v)
    return out
