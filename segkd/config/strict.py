"""The base of every config section: unknown keys are errors, reported with their key path, the
nearest valid key and the keys valid there (``format_validation_error``)."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from segkd.core.registry import suggest


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


def format_validation_error(root: type[BaseModel], err: ValidationError, source: str) -> str:
    """One line per error, with its key path; an unknown key gets the nearest valid key and the
    keys valid there."""
    lines = [f"invalid config ({source}):"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            parent = _model_at(root, e["loc"][:-1])
            known = list(parent.model_fields) if parent else []
            msg = f"unknown key.{suggest(str(e['loc'][-1]), known)}"
            if known:
                msg += f" Valid keys here: {', '.join(known)}"
        elif not isinstance(e.get("input"), (dict, list)) and e["type"] != "missing":
            msg += f" (got {e['input']!r})"  # name the offending value, not only the key
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def _model_at(root: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class at a location path (for suggestions)."""
    model: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if model else None
        if field is None:
            return None
        ann = field.annotation
        model = next((a for a in _flatten(ann) if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return model


def _flatten(ann: Any) -> list:
    args = getattr(ann, "__args__", None)
    return [x for a in args for x in _flatten(a)] if args else [ann]
