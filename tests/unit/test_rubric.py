"""Judge rubrics: the shipped files, each way a file can be broken, sandboxed rendering, reloading."""

import shutil
from pathlib import Path

import pytest

from agents.prompts import judge_answer_messages
from rewards.rubric import (
    ALLOWED_FILTERS,
    DEFAULT_RUBRIC_DIR,
    MAX_RENDERED_CHARS,
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
        ({"question_template": "'{{ question.__class__ }}'"}, "question_template uses an attribute (line 1)"),
        ({"answer_template": "\"{{ answer }}{{ ''.__class__.__mro__ }}{{ question }}\""}, "uses an attribute"),
        ({"answer_template": "'{{ question }} {{ answer }} {{ reference_answer.upper() }}'"}, "uses a call"),
        ({"answer_template": "'{{ question }} {{ answer }} {{ reference_answer|length }}'"},
         "answer_template failed to render (object of type 'NoneType' has no len())"),
        ({"question_template": "'{{ question }}{{ 1 / 0 }}'"}, "question_template uses / (line 1)"),
        ({"question_template": "'{{ question * 5000000 }}'"}, "question_template uses * (line 1)"),
        ({"question_template": "'{{ question ** 2 }}'"}, "uses **"),
        ({"question_template": "'{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}"
                               "{{ question }}'"}, "question_template uses a for loop (line 1)"),
        ({"question_template": "'{% macro f() %}{% endmacro %}{{ question }}'"}, "uses a macro"),
        ({"question_template": "'{% set q = question %}{{ q }}{{ question }}'"}, "uses set"),
        ({"question_template": "'{{ question|center(100000000) }}'"}, "uses the filter center (line 1); the filters "
                                                                       "allowed: capitalize, d, default"),
        # seven times the longest answer the judge reads: fine for the short trial values, not for real ones
        ({"answer_template": "'{{ question }}{{ answer" + " ~ answer" * 6 + " }}'"},
         "answer_template renders over 200000 characters (values: question of 4000, answer of 32000, "
         "reference_answer of 1000 characters)"),
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
    with pytest.raises(RubricError, match="uses an attribute") as error:
        render_question(rubric, "q")
    assert "<class" not in str(error.value)


def test_rendering_an_unvalidated_rubric_is_bounded(tmp_path: Path) -> None:
    """Before: 5 MB rendered here, and 20 GB (a MemoryError) for a 4000-character question."""
    huge = Rubric(name="huge", path=tmp_path / "huge.yaml", text="", version="0",
                  question_template="{{ question * 5000000 }}", answer_template="{{ question }} {{ answer }}")
    with pytest.raises(RubricError, match=r"question_template failed to render \(uses \* \(line 1\)"):
        render_question(huge, "q")
    with pytest.raises(RubricError) as error:
        render_answer(load_rubric("strict"), "q", "a" * (MAX_RENDERED_CHARS + 1), None)
    assert str(error.value).endswith(f"answer_template renders over {MAX_RENDERED_CHARS} characters "
                                     f"(values: question of 1, answer of {MAX_RENDERED_CHARS + 1} characters)")


def test_the_longest_trial_values_are_the_longest_the_judge_reads() -> None:
    from agents.parsing import MAX_ANSWER_CHARS, MAX_QUESTION_CHARS, MAX_RESPONSE_CHARS
    from rewards.rubric import _LONGEST_VALUES

    assert {name: len(value) for name, value in _LONGEST_VALUES.items()} == {
        "question": MAX_QUESTION_CHARS, "answer": MAX_RESPONSE_CHARS, "reference_answer": MAX_ANSWER_CHARS}


def test_a_bad_edit_during_a_run_is_ignored_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Before: the edit below rendered 70 MB at its trial and became the rubric in use."""
    from selfplay.driver import refresh_rubric
    from selfplay.iteration import RunState

    class Tracker:
        def __init__(self) -> None:
            self.texts = []

        def log_text(self, key: str, text: str, step: int) -> None:
            self.texts.append(key)

    path = tmp_path / "live.yaml"
    shutil.copy(DEFAULT_RUBRIC_DIR / "strict.yaml", path)
    current = load_rubric(str(path))
    state, tracker = RunState(iteration=3, weight_version=2, questions=None, rubric=current), Tracker()
    path.write_text(current.text.replace("{{ question }}", "{{ question * 5000000 }}"), encoding="utf-8")
    capsys.readouterr()
    assert refresh_rubric(state, tracker) is False
    assert state.rubric is current and tracker.texts == []
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].endswith(f"rubric edit ignored, keeping version {current.version}: rubric file {path}: "
                             "question_template uses * (line 4); a rubric template holds text, {{ name }}, "
                             "{% if %}, comparisons, tests, ~ and the filters " + ", ".join(ALLOWED_FILTERS))


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


def test_a_prompt_the_rubric_cannot_render_is_a_counted_judge_failure(capsys: pytest.CaptureFixture) -> None:
    """Before: a judge call raised (a traceback from the role's actor) for one answer too long to render."""
    from agents.parsing import FormatFailure, failure_counts
    from agents.players import AnswerToJudge, Judge
    from rollout.records import Completion, Sample, SamplingSpec

    class Generator:
        def __init__(self) -> None:
            self.requests = []

        def generate(self, requests):
            self.requests.extend(requests)
            return [Completion((1, 2), (Sample("<score>7</score>", (3,), (-0.5,), "stop"),), 4) for _ in requests]

    generator, rubric = Generator(), load_rubric("strict")
    items = [AnswerToJudge("q", "a", None), AnswerToJudge("q", "a" * MAX_RENDERED_CHARS, None),
             AnswerToJudge("q", "b", None)]
    verdicts = Judge(generator).judge_answers(rubric, items, SamplingSpec())
    assert len(generator.requests) == 2 and "\nb\n" in generator.requests[1].messages[-1]["content"]
    assert [verdict.parsed.value for verdict in verdicts] == [7, None, 7]
    failed = verdicts[1]
    assert failed.parsed.failure is FormatFailure.RUBRIC_ERROR and failed.parsed.format_score == 0.0
    assert (failed.prompt_token_ids, failed.sample.token_ids, failed.weight_version) == ((), (), -1)
    assert failure_counts(verdict.parsed for verdict in verdicts)[FormatFailure.RUBRIC_ERROR] == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"judge: rubric strict {rubric.version} failed on 1 of 3 prompts, judged as format failures: "
                     f"rubric file {rubric.path}: answer_template renders over {MAX_RENDERED_CHARS} characters "
                     f"(values: question of 1, answer of {MAX_RENDERED_CHARS} characters)"]
