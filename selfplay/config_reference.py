"""The configuration reference (docs/config-reference.md), written from the schema in selfplay/config.py: every key
with its type, bounds, default and description, one table per section. `launch/config_reference.py` writes it;
a unit test fails when the file in docs/ is stale."""

from __future__ import annotations

import types
from typing import Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt, MinLen
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from learner.config import Section
from selfplay.config import Config

HEADER = """# Configuration reference

Every key of a run config, section by section: its type and bounds, its default and what it does. A YAML file
sets any of them (`configs/*.yaml`); `key=value` arguments to `launch/evolve.py` override them
(`learner.lr=2e-5`, `run.train_roles=solver,judge`). How files and overrides combine:
[configuration.md](configuration.md).

This page is generated from the schema (`selfplay/config.py`, `learner/config.py`, `rollout/config.py`) by
`python launch/config_reference.py`; a test fails when it is stale.
"""

BOUNDS = ((Ge, "ge", ">="), (Gt, "gt", ">"), (Le, "le", "<="), (Lt, "lt", "<"))


def type_name(annotation: Any) -> str:
    origin, arguments = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{value}`" for value in arguments)
    if origin in (Union, types.UnionType):
        return " or ".join("null" if argument is type(None) else type_name(argument) for argument in arguments)
    if origin in (tuple, list):
        return f"list of {type_name(arguments[0])}"
    if origin is dict:
        return f"mapping of name to {type_name(arguments[1])}"
    if isinstance(annotation, type) and issubclass(annotation, Section):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def bounds(field: FieldInfo) -> str:
    parts = []
    for constraint in field.metadata:
        for kind, attribute, symbol in BOUNDS:
            if isinstance(constraint, kind):
                parts.append(f"{symbol} {getattr(constraint, attribute)}")
        if isinstance(constraint, MinLen):
            parts.append(f"at least {constraint.min_length}")
    return ", ".join(parts)


def default_text(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple | list):
        return "[" + ", ".join(map(str, value)) + "]"
    if isinstance(value, dict):
        return "{}"
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def section_tables(section: type[Section], prefix: str) -> list[str]:
    """The table of `section`'s own keys, then one per subsection (and per mapping of named subsections)."""
    rows, nested = [], []
    for name, field in section.model_fields.items():
        key, annotation = f"{prefix}{name}", field.annotation
        if isinstance(annotation, type) and issubclass(annotation, Section):
            nested.append((annotation, f"{key}."))
            continue
        rows.append(f"| `{key}` | {type_name(annotation)} | {bounds(field)} | `{_cell(default_text(field))}` | "
                    f"{_cell(field.description or '')} |")
        value_type = get_args(annotation)[1] if get_origin(annotation) is dict else None
        if isinstance(value_type, type) and issubclass(value_type, Section):
            nested.append((value_type, f"{key}.NAME."))
    lines = [f"## `{prefix.rstrip('.')}`", "", "| key | type | bounds | default | description |",
             "| --- | --- | --- | --- | --- |", *rows, ""] if rows else []
    for subsection, subprefix in nested:
        lines += section_tables(subsection, subprefix)
    return lines


def config_reference() -> str:
    lines = [HEADER]
    for name, field in Config.model_fields.items():
        lines += section_tables(field.annotation, f"{name}.")
    return "\n".join(lines).rstrip() + "\n"
