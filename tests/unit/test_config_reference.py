"""The generated configuration reference: current, complete, and readable."""

from pathlib import Path
from typing import Literal

from pydantic import Field

from learner.config import Section
from selfplay.config import Config
from selfplay.config_reference import bounds, config_reference, default_text, type_name

ROOT = Path(__file__).resolve().parents[2]


def _keys(section: type[Section], prefix: str = "") -> list[tuple[str, object]]:
    keys = []
    for name, field in section.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, Section):
            keys += _keys(field.annotation, f"{prefix}{name}.")
        else:
            keys.append((f"{prefix}{name}", field))
    return keys


def test_the_reference_in_docs_is_the_one_the_schema_writes():
    assert (ROOT / "docs/config-reference.md").read_text() == config_reference(), (
        "docs/config-reference.md is stale: run `python launch/config_reference.py`")


def test_every_key_has_a_description_and_a_row():
    reference = config_reference()
    for key, field in _keys(Config):
        assert field.description, f"{key} has no description"
        assert f"| `{key}` |" in reference


def test_types_bounds_and_defaults_are_spelled_for_users():
    class Example(Section):
        mode: Literal["off", "on"] = Field("off", description="d")
        roles: tuple[str, ...] = Field(("a", "b"), min_length=1, description="d")
        share: float | None = Field(None, gt=0, le=1, description="d")

    fields = Example.model_fields
    assert type_name(fields["mode"].annotation) == "`off` \\| `on`"
    assert type_name(fields["roles"].annotation) == "list of str"
    assert type_name(fields["share"].annotation) == "float or null"
    assert bounds(fields["share"]) == "> 0, <= 1"
    assert bounds(fields["roles"]) == "at least 1"
    assert [default_text(fields[name]) for name in ("mode", "roles", "share")] == ["off", "[a, b]", "null"]
