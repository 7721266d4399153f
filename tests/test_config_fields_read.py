"""Every config field is read by some code: a key that nothing reads is a promise the config
makes and the program does not keep (``connector_warmup_epochs`` and ``trainer.deterministic``
were such keys).

The schema is walked from the pydantic models themselves (every model defined in
segkd/config/schema.py, and every model their fields reach, through Optional/list/dict/Union), so a
field added later is checked without editing this test. "Read" means the package's code outside
config/schema.py (parsed, so comments and docstrings do not count) accesses the attribute
(``<expr>.field``, but not a chain rooted at torch/numpy/os: ``torch.backends.cudnn.deterministic``
is not ``trainer.deterministic``) or uses the name as a string constant (fields consumed through
``model_dump()`` dicts or ``getattr``). A name shared by two fields counts for both: the check
catches keys nothing reads at all, not every misuse."""
from __future__ import annotations

import ast
import typing
from pathlib import Path

from pydantic import BaseModel

import segkd.config.schema as config_module
from segkd.config.schedules import SCHEDULES

PACKAGE = Path(config_module.__file__).resolve().parents[1]  # segkd/
# Attribute chains rooted at these names are library attributes, never a config section.
FOREIGN = {"torch", "np", "numpy", "os", "nn", "F", "math", "sys"}
# (model, field) read only generically, with no literal use of its name: say how, one per line.
ALLOWED: dict[tuple[str, str], str] = {}


def _leaf_types(annotation: typing.Any) -> list[typing.Any]:
    args = typing.get_args(annotation)
    return [annotation] if not args else [t for a in args for t in _leaf_types(a)]


def schema_models() -> list[type[BaseModel]]:
    """Every pydantic model defined in segkd/config/schema.py plus those their fields reach."""
    found: dict[type[BaseModel], None] = {}

    def visit(model: type[BaseModel]) -> None:
        if model in found:
            return
        found[model] = None
        for field in model.model_fields.values():
            for t in _leaf_types(field.annotation):
                if isinstance(t, type) and issubclass(t, BaseModel):
                    visit(t)

    for obj in vars(config_module).values():
        if isinstance(obj, type) and issubclass(obj, BaseModel) and obj is not BaseModel \
                and obj.__module__ == config_module.__name__ and obj.model_fields:
            visit(obj)
    for name in SCHEDULES.names():  # a stage's schedule is typed by its name at validation
        visit(SCHEDULES.get(name))
    return list(found)


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring constants of a module, its classes and functions."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def _root(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def names_read(source: str) -> set[str]:
    """Attribute names accessed (``<expr>.name``, unless ``<expr>`` starts at a library module:
    ``torch.backends.cudnn.deterministic`` is not ``trainer.deterministic``) and string
    constants used as values (dict keys, getattr names), docstrings and comments excluded."""
    tree = ast.parse(source)
    docs = _docstrings(tree)
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _root(node.value) not in FOREIGN:
            out.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docs:
            out.add(node.value)
    return out


def package_names_read() -> set[str]:
    return set().union(*(names_read(p.read_text(encoding="utf-8"))
                         for p in sorted(PACKAGE.rglob("*.py")) if p != Path(config_module.__file__).resolve()))


def unread_fields(read: set[str]) -> list[str]:
    return [f"{m.__name__}.{name}" for m in schema_models() for name in m.model_fields
            if (m.__name__, name) not in ALLOWED and name not in read]


def test_schema_walk_finds_the_nested_sections() -> None:
    names = {m.__name__ for m in schema_models()}
    assert {"Config", "DataCfg", "StageCfg", "Term", "OptimCfg", "ScheduleCfg", "TrainerCfg",
            "ParamGroupCfg", "ReplaceCfg", "SlidingCfg", "EvalCfg", "OneCycleSchedule",
            "PlateauSchedule", "PolySchedule"} <= names


def test_the_reader_check_itself() -> None:
    src = ('"""Module doc: cfg.trainer.never_used."""\n'
           "x = cfg.trainer.grad_clip  # cfg.also_never_used\n"
           "torch.backends.cudnn.deterministic = True\n"
           "y = d['paths'] + getattr(s, 'lr_mult')\n")
    read = names_read(src)
    assert {"grad_clip", "trainer", "paths", "lr_mult"} <= read
    assert "deterministic" not in read  # a torch attribute is not the config field
    assert "never_used" not in read and "also_never_used" not in read  # prose is not code


def test_every_config_field_is_read_somewhere() -> None:
    unread = unread_fields(package_names_read())
    assert not unread, (f"config fields that no code in segkd/ reads: {unread}. Implement them, "
                        "remove them, or (only if consumed generically) add them to ALLOWED "
                        "with a comment saying how")
