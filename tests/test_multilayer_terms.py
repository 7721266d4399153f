"""Terms that read several layers: one ``Term`` type from the YAML to the loss, lists of module
paths handed to the loss as lists of tensors (a connector per pair where channels differ), the
contract's rules in one place, the teacher cache holding every position; and the FSP loss
(Yim et al., CVPR 2017) against a loop-by-loop transcription of the paper's formula."""
from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch
from torch import Tensor

from segkd.config.schema import Config, Term, config_from_dict
from segkd.core.errors import ConfigError
from segkd.core.registry import LOSSES
from segkd.distill.distiller import Distiller
from segkd.distill.losses import Loss, LossInputError, contract_of
from segkd.distill.losses.fsp import fsp_loss, fsp_matrix

L1, L2, L3 = (f"encoder.model.layer{k}" for k in (1, 2, 3))  # 64 / 128 / 256 ch at stride 4 / 8 / 16


# ----------------------------------------------------------------------------- the paper's formula
def _adaptive_avg_pool(f: list, h: int, w: int) -> list:
    """Adaptive average pooling of one map ``f[c][y][x]`` to ``h x w``: output cell (y, x)
    averages input rows floor(y*H/h) .. ceil((y+1)*H/h) - 1, and the same for columns."""
    H, W = len(f[0]), len(f[0][0])
    out = []
    for ch in f:
        rows = []
        for y in range(h):
            y0, y1 = math.floor(y * H / h), math.ceil((y + 1) * H / h)
            row = []
            for x in range(w):
                x0, x1 = math.floor(x * W / w), math.ceil((x + 1) * W / w)
                cells = [ch[a][b] for a in range(y0, y1) for b in range(x0, x1)]
                row.append(sum(cells) / len(cells))
            rows.append(row)
        out.append(rows)
    return out


def _paper_fsp(f1: list, f2: list) -> list:
    """G[i][j] = (1 / (h*w)) sum_{s=1..h} sum_{t=1..w} F1[s,t,i] * F2[s,t,j] (F1 pooled to F2's size)."""
    h, w = len(f2[0]), len(f2[0][0])
    if (len(f1[0]), len(f1[0][0])) != (h, w):
        f1 = _adaptive_avg_pool(f1, h, w)
    return [[sum(f1[i][s][t] * f2[j][s][t] for s in range(h) for t in range(w)) / (h * w)
             for j in range(len(f2))] for i in range(len(f1))]


def _paper_loss(student: list[Tensor], teacher: list[Tensor], weights=None, reduction="sum") -> float:
    """L = sum_i lambda_i * (1/N) sum_x ||G_i^T(x) - G_i^S(x)||_2^2 (equal lambda_i = 1/K)."""
    s = [x.double().tolist() for x in student]
    t = [x.double().tolist() for x in teacher]
    sections = len(s) - 1
    lam = weights or [1.0 / sections] * sections
    total = 0.0
    for i in range(sections):
        n_images = len(s[i])
        acc = 0.0
        for x in range(n_images):
            g_s, g_t = _paper_fsp(s[i][x], s[i + 1][x]), _paper_fsp(t[i][x], t[i + 1][x])
            sq = [(a - b) ** 2 for ra, rb in zip(g_s, g_t) for a, b in zip(ra, rb)]
            acc += sum(sq) if reduction == "sum" else sum(sq) / len(sq)
        total += lam[i] * acc / n_images
    return total


def _maps(shapes, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g) for s in shapes]


# student and teacher share channels per position, not spatial sizes; 7x5 -> 3x3 pools unevenly
STUDENT = [(2, 3, 7, 5), (2, 4, 3, 3), (2, 2, 3, 3)]
TEACHER = [(2, 3, 8, 8), (2, 4, 4, 4), (2, 2, 2, 2)]


@pytest.mark.parametrize("options", [{}, {"reduction": "mean"}, {"weights": [0.25, 2.0]}])
def test_fsp_matches_the_papers_formula_computed_loop_by_loop(options) -> None:
    s, t = _maps(STUDENT, 0), _maps(TEACHER, 1)
    expected = _paper_loss(s, t, options.get("weights"), options.get("reduction", "sum"))
    got = LOSSES.build("fsp", **options)(s, t)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(expected, rel=1e-5)
    assert fsp_loss(s, t, **options).item() == pytest.approx(expected, rel=1e-5)


def test_fsp_matrix_values_and_size_matching() -> None:
    f1, f2 = _maps([(1, 2, 4, 4), (1, 3, 2, 2)], 2)
    g = fsp_matrix(f1, f2)
    assert g.shape == (1, 2, 3)
    expected = torch.tensor(_paper_fsp(f1[0].double().tolist(), f2[0].double().tolist()), dtype=torch.float64)
    assert torch.allclose(g[0].double(), expected, rtol=1e-5, atol=1e-7)
    same = _maps([(1, 2, 2, 2), (1, 3, 2, 2)], 3)  # equal sizes: no pooling, either option
    assert torch.equal(fsp_matrix(*same, match_size="none"), fsp_matrix(*same))
    with pytest.raises(LossInputError, match="differ in size"):
        fsp_matrix(f1, f2, match_size="none")
    with pytest.raises(LossInputError, match="match_size"):
        LOSSES.build("fsp", match_size="bilinear")


def test_fsp_zero_at_student_equals_teacher_and_gradients_to_the_student_only() -> None:
    t = [x.requires_grad_(True) for x in _maps(TEACHER, 4)]
    assert LOSSES.build("fsp")([x.detach().clone() for x in t], t).item() == pytest.approx(0.0, abs=1e-6)
    s = [x.requires_grad_(True) for x in _maps(TEACHER, 5)]
    LOSSES.build("fsp")(s, t).backward()
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in s)
    assert all(x.grad is None for x in t)
    with pytest.raises(LossInputError, match="connectors"):  # channels differ at a position
        LOSSES.build("fsp")(_maps([(2, 3, 4, 4), (2, 5, 4, 4)], 6), _maps([(2, 3, 4, 4), (2, 4, 4, 4)], 7))


# ----------------------------------------------------------------------------- one Term type
OLD_TERM = {"loss": "ofd", "weight": 2.0, "name": "ofd1", "student": "encoder.model.layer1.0.act2",
            "teacher": "encoder.model.layer1.2.act2", "student_hook": "input", "teacher_hook": "input",
            "connector": "conv1x1_bn", "options": {}}  # a term as checkpoints store their config


def test_term_yaml_strings_stay_strings_and_lists_stay_lists() -> None:
    assert Term.model_validate(OLD_TERM).model_dump() == OLD_TERM  # old configs validate as they were
    t = Term.model_validate({"loss": "fsp", "student": [L1, L2], "teacher": [L1, L2], "teacher_hook": "input"})
    assert t.student == [L1, L2] and t.positions("teacher") == [(L1, "input"), (L2, "input")]
    assert Term(loss="kd", teacher_hook="input").positions("teacher") == [("logits", "output")]
    for bad in ({"student": []}, {"teacher": [L1, ""]}):
        with pytest.raises(ConfigError, match="stages.0.terms.0"):
            config_from_dict({"stages": [{"terms": [{"loss": "fsp", **bad}]}]})


def test_the_contract_resolves_terms_in_one_place() -> None:
    """Named, the unread teacher dropped, lists for a loss that takes them, each rule refusing."""
    ce = contract_of("ce").resolve(Term(loss="ce", teacher=[L1, L2]))
    assert (ce.name, ce.teacher) == ("ce", None)
    fsp = contract_of("fsp")
    assert (fsp.takes_lists, fsp.min_paths, fsp.inputs) == (True, 2, "features")
    cases = [(Term(loss="fsp", student=L1, teacher=L1), "at least 2 positions"),
             (Term(loss="fsp", student=[L1, L2], teacher=[L1, L2, L3]), "student:` lists 2, `teacher:` 3"),
             (Term(loss="fsp", student=[L1, L2]), "student:` lists 2, `teacher:` 1"),
             (Term(loss="fsp", student=[L1, "logits"], teacher=[L1, L2]), "reads features"),
             (Term(loss="mse", student=[L1, L2], teacher=[L1, L2]), "one tensor per side")]
    for term, message in cases:
        with pytest.raises(ConfigError, match=f"term '{term.loss}'.*{message}"):
            contract_of(term.loss).resolve(term)


def _distiller() -> Distiller:
    from segkd.models import create_model

    torch.manual_seed(0)
    return Distiller(create_model("unet", encoder="kd_resnet10", num_classes=4),
                     create_model("unet", encoder="kd_resnet14", num_classes=4))


class ShapesSeen(Loss):
    """Records the shapes of the lists it is handed; the student's mean."""

    inputs = "features"
    takes_lists = True
    seen: list = []

    def forward(self, student: Any, teacher: Any = None, **extra: Any) -> Tensor:
        ShapesSeen.seen.append(([tuple(x.shape) for x in student], [tuple(x.shape) for x in teacher]))
        return sum(x.float().mean() for x in student)


@pytest.fixture
def shapes_seen():
    LOSSES.register("test_shapes_seen", obj=ShapesSeen)
    ShapesSeen.seen.clear()
    yield ShapesSeen.seen
    LOSSES.unregister("test_shapes_seen")


def test_lists_reach_the_loss_in_order_through_a_connector_per_pair(shapes_seen) -> None:
    d = _distiller()
    terms = [Term(name="ce", loss="ce"),
             Term(name="rel", loss="test_shapes_seen", student=[L1, L2, L2], teacher=[L2, L3, L2]),
             Term(name="same", loss="test_shapes_seen", student=[L1, L2], teacher=[L1, L3]),
             Term(name="hint", loss="hint", student=L1, teacher=L2)]
    d.configure(terms, torch.zeros(2, 3, 32, 32))
    keys = sorted({k.rsplit(".", 1)[0] for k in d.state_dict() if k.startswith("connectors.")})
    # one connector per pair whose channels differ (Identity elsewhere: no state); a term with
    # one position per side keeps its connector at connectors.<name> (the keys old runs saved)
    assert keys == ["connectors.hint.0", "connectors.hint.1", "connectors.rel.0.0", "connectors.rel.0.1",
                    "connectors.rel.1.0", "connectors.rel.1.1", "connectors.same.1.0", "connectors.same.1.1"]
    assert isinstance(d.connectors["same"][0], torch.nn.Identity)
    assert d.teacher_positions() == [(L2, "output"), (L3, "output"), (L1, "output")]
    d.train()
    out = d(torch.randn(2, 3, 32, 32), torch.randint(0, 4, (2, 32, 32)))
    rel, same = shapes_seen
    assert rel == ([(2, 128, 8, 8), (2, 256, 4, 4), (2, 128, 4, 4)],  # student maps, teacher channels
                   [(2, 128, 4, 4), (2, 256, 2, 2), (2, 128, 4, 4)])
    assert same == ([(2, 64, 8, 8), (2, 256, 4, 4)], [(2, 64, 8, 8), (2, 256, 2, 2)])
    out["loss"].backward()
    assert d.connectors["rel"][0][0].weight.grad is not None  # the connectors train
    assert all(p.grad is None for p in d.teacher.parameters())


def test_fsp_weights_are_checked_against_the_sections_when_the_stage_starts() -> None:
    with pytest.raises(ConfigError, match="term 'fsp'.*3 values for 2 sections"):
        _distiller().configure([Term(name="fsp", loss="fsp", student=[L1, L2, L3], teacher=[L1, L2, L3],
                                     options={"weights": [1, 1, 1]})], torch.zeros(2, 3, 32, 32))


# ----------------------------------------------------------------------------- engine + teacher cache
FSP = {"loss": "fsp", "weight": 1e-3, "student": [L1, L2, L3], "teacher": [L1, L2, L3],
       "options": {"reduction": "mean"}}


def _train(raw: dict, run) -> tuple[dict, list, list]:
    from segkd.core.checkpoint import load_checkpoint
    from segkd.engine import Engine

    eng = Engine(config_from_dict(raw), run)
    eng.run()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [{k: v for k, v in r.items() if k.startswith("train/loss")} for r in rows if "train/loss" in r]
    return load_checkpoint(run / "last.pt")["state_dict"], losses, eng.distiller.teacher_positions()


def test_a_multilayer_term_trains_with_the_teacher_cache_exactly_as_live(tmp_path, tiny, teacher_ckpt, capsys):
    """Every teacher position of a list term is cached: losses and weights equal the live run's."""
    def raw(cache):
        teacher = {"checkpoint": str(teacher_ckpt), **({"cache": cache} if cache else {})}
        return tiny(teacher=teacher, data={"val_split": None}, eval={"splits": []},
                    stages=[{"name": "s", "epochs": 2, "terms": [{"loss": "ce"}, FSP],
                             "optimizer": {"name": "adam", "lr": 1e-2}}])

    live = _train(raw(None), tmp_path / "live")
    cached = _train(raw({"storage": "memory"}), tmp_path / "cached")
    assert "teacher cache (exact)" in " ".join(capsys.readouterr().err.split())
    assert live[2] == cached[2] == [(L1, "output"), (L2, "output"), (L3, "output")]
    assert live[1] == cached[1] and all(r["train/loss/fsp"] > 0 for r in live[1])
    for k in live[0]:
        assert torch.equal(live[0][k], cached[0][k]), k
    cfg = Config.model_validate(json.loads(json.dumps(config_from_dict(raw(None)).model_dump(mode="json"))))
    assert cfg.stages[0].terms[1].student == [L1, L2, L3]  # the saved config reloads with its lists
