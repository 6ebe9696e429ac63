"""Judge rubrics: the shipped files, each way a file can be broken, sandboxed rendering, reloading."""

import shutil
from pathlib import Path

import pytest

from agents.prompts import judge_answer_messages
from rewards.rubric import (
    DEFAULT_RUBRIC_DIR,
    Rubric,
    RubricError,
    load_rubric,
    reload_if_changed,
    render_answer,
    render_question,
)

VALID_FIELDS = {
    "name": "broken",
    "scale": "{min: 1, max: 10}",
    "question_template": "'Rate: {{ question }}'",
    "answer_template": "'Q: {{ question }} A: {{ answer }}'",
}


def write_rubric(directory: Path, **replaced: str | None) -> Path:
    """A rubric file with some fields' YAML values replaced, added, or dropped (None)."""
    fields = {field: value for field, value in (VALID_FIELDS | replaced).items() if value is not None}
    path = directory / "broken.yaml"
    path.write_text("".join(f"{field}: {value}\n" for field, value in fields.items()), encoding="utf-8")
    return path


@pytest.mark.parametrize("name", ["strict", "lenient", "reference"])
def test_shipped_rubrics_load(name: str) -> None:
    rubric = load_rubric(name)
    assert rubric.name == name
    assert rubric.text == (DEFAULT_RUBRIC_DIR / f"{name}.yaml").read_text(encoding="utf-8")
    assert len(rubric.version) == 12 and int(rubric.version, 16) >= 0
    assert "What is 5 + 7?" in render_question(rubric, "What is 5 + 7?")
    rendered = render_answer(rubric, "What is 5 + 7?", "5 + 7 = 12. <answer>12</answer>", None)
    assert "What is 5 + 7?" in rendered and "<answer>12</answer>" in rendered


def test_strict_rubric_caps_any_error_low() -> None:
    text = render_answer(load_rubric("strict"), "q", "a", None)
    assert "1-3: any factual or logical error" in text and "8-10: only a flawless" in text


def test_reference_rubric_shows_the_reference_only_when_it_exists() -> None:
    rubric = load_rubric("reference")
    assert "Reference final answer: 72" in render_answer(rubric, "q", "a", "72")
    without = render_answer(rubric, "q", "a", None)
    assert "Reference" not in without and "None" not in without


def test_model_text_is_a_value_never_template_code() -> None:
    rubric = load_rubric("strict")
    assert "{{ 7 * 7 }} {% if x %}" in render_question(rubric, "{{ 7 * 7 }} {% if x %}")


def test_load_by_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    shutil.copy(DEFAULT_RUBRIC_DIR / "lenient.yaml", path)
    assert load_rubric(str(path)).path == path


def test_unknown_name_lists_the_known_rubrics() -> None:
    with pytest.raises(RubricError, match="rubrics in .*: lenient, reference, strict"):
        load_rubric("harsh")


@pytest.mark.parametrize(
    ("replaced", "problem"),
    [
        ({"name": "[unclosed"}, "invalid YAML"),
        ({"temperature": "0.7"}, "unknown field(s) temperature"),
        ({"answer_template": None}, "missing field(s) answer_template"),
        ({"scale": None}, "missing field(s) scale"),
        ({"scale": "{min: 1, max: 5}"}, "scale must be {min: 1, max: 10}"),
        ({"scale": "{min: true, max: 10}"}, "scale must be"),
        ({"scale": "{min: 1, max: 10, step: 1}"}, "scale must be"),
        ({"name": "''"}, "name must be a non-empty string"),
        ({"question_template": "''"}, "question_template must be a non-empty string"),
        ({"question_template": "'Rate it.'"}, "question_template lacks the required placeholder(s) {{ question }}"),
        ({"answer_template": "'{{ question }}'"}, "answer_template lacks the required placeholder(s) {{ answer }}"),
        ({"question_template": "'{{ qestion }} {{ question }}'"}, "unknown name(s) qestion"),
        ({"question_template": "'{% if question %}{{ question }}'"}, "template syntax error at line 1"),
        ({"question_template": "'{{ question.__class__ }}'"}, "'__class__' of 'str' object is unsafe"),
        ({"answer_template": "\"{{ answer }}{{ ''.__class__.__mro__ }}{{ question }}\""}, "object is unsafe"),
        ({"answer_template": "'{{ question }} {{ answer }} {{ reference_answer.upper() }}'"}, "failed to render"),
        ({"question_template": "'{{ question }}{{ 1 / 0 }}'"}, "failed to render (division by zero)"),
    ],
)
def test_broken_rubric_gives_one_line_naming_file_and_problem(tmp_path: Path, replaced: dict, problem: str) -> None:
    path = write_rubric(tmp_path, **replaced)
    with pytest.raises(RubricError) as error:
        load_rubric(str(path))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"rubric file {path}: ")
    assert problem in message


def test_rubric_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- name\n- scale\n", encoding="utf-8")
    with pytest.raises(RubricError, match="expected a mapping of fields, got list"):
        load_rubric(str(path))


def test_unreadable_rubric(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(RubricError, match="cannot be read"):
        load_rubric(str(path))


def test_rendering_an_unvalidated_rubric_is_still_sandboxed(tmp_path: Path) -> None:
    rubric = Rubric(
        name="escape",
        path=tmp_path / "escape.yaml",
        text="",
        version="0",
        question_template="{{ question.__class__.__mro__ }}",
        answer_template="{{ question }} {{ answer }}",
    )
    with pytest.raises(RubricError, match="unsafe") as error:
        render_question(rubric, "q")
    assert "<class" not in str(error.value)


def test_reload_gives_a_new_version_only_when_the_file_changed(tmp_path: Path) -> None:
    path = tmp_path / "live.yaml"
    shutil.copy(DEFAULT_RUBRIC_DIR / "strict.yaml", path)
    current = load_rubric(str(path))
    assert reload_if_changed(current) is current
    edited = current.text.replace("Rate this answer strictly.", "Rate this answer very strictly.")
    path.write_text(edited, encoding="utf-8")
    changed = reload_if_changed(current)
    assert changed.version != current.version
    assert "very strictly" in changed.text
    assert "very strictly" in judge_answer_messages(changed, "q", "a", None)[-1]["content"]
    path.write_text(changed.text.replace("{{ answer }}", "{{ answr }}"), encoding="utf-8")
    with pytest.raises(RubricError, match="lacks the required placeholder"):
        reload_if_changed(changed)
    path.unlink()
    with pytest.raises(RubricError, match="cannot be read"):
        reload_if_changed(changed)
