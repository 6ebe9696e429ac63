"""Judge rubrics: YAML files in configs/rubrics/, validated at load, re-read on change, rendered in a sandbox.

A rubric file holds values only:
    name: strict                       # required, a non-empty string
    description: one line              # optional
    scale: {min: 1, max: 10}           # required, exactly 1..10 (the score parser accepts nothing else)
    question_template: "... {{ question }} ..."
    answer_template: "... {{ question }} ... {{ answer }} ...{% if reference_answer %}...{% endif %}"
Templates are Jinja2, rendered by an ImmutableSandboxedEnvironment with StrictUndefined: template text cannot
reach private attributes or mutate values, and an unknown name fails instead of rendering empty. Questions and
answers are passed as values, never parsed as template text. `reference_answer` is None when no reference exists,
so templates test it with `{% if reference_answer %}`.

A template holds text, `{{ name }}`, `{% if %}`/`{% elif %}`/`{% else %}`, comparisons, tests (`is none`), `~`,
`a if b else c` and the filters of ALLOWED_FILTERS, nothing else (no loops, calls, attributes or arithmetic): so what
it renders is at most as long as its text plus its values, and takes as long to render; a render over
MAX_RENDERED_CHARS stops there. Load renders each template twice, with short values and with the longest the
parser lets through, so a template too long for real values fails at load (or, on a re-read, keeps the rubric in use).

Leaves out the judge's output format (analysis, then one score tag): agents/prompts.py fixes it, so no rubric
edit can break the parser.
"""

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml
from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from rewards.scores import SCORE_MAX, SCORE_MIN

DEFAULT_RUBRIC_DIR = Path(__file__).resolve().parents[1] / "configs" / "rubrics"
SCALE = {"min": SCORE_MIN, "max": SCORE_MAX}
REQUIRED_FIELDS = ("name", "scale", "question_template", "answer_template")
OPTIONAL_FIELDS = ("description",)
# Per template: (placeholders it must use, names it may use).
TEMPLATE_VARIABLES = {
    "question_template": ({"question"}, {"question"}),
    "answer_template": ({"question", "answer"}, {"question", "answer", "reference_answer"}),
}
# Values for the trial renders at load, so a template that only fails when rendered fails before the run starts:
# short ones, and the longest the judge is shown (agents.parsing: MAX_QUESTION_CHARS, MAX_RESPONSE_CHARS for the
# whole answer it reads, MAX_ANSWER_CHARS; a test keeps them equal).
_TRIAL_VALUES = {"question": "What is 2 + 3?", "answer": "5", "reference_answer": "5"}
_LONGEST_VALUES = {"question": "q" * 4_000, "answer": "a" * 32_000, "reference_answer": "r" * 1_000}
# Five times the longest values together: room for a rubric's own text, far below what could hurt a process.
MAX_RENDERED_CHARS = 200_000
_ALLOWED_NODES = (nodes.Output, nodes.TemplateData, nodes.Name, nodes.Const, nodes.If, nodes.Not, nodes.And,
                  nodes.Or, nodes.Compare, nodes.Operand, nodes.Test, nodes.CondExpr, nodes.Concat, nodes.Filter,
                  nodes.Keyword)
# Filters whose result is no longer than their input and arguments.
ALLOWED_FILTERS = ("capitalize", "d", "default", "first", "last", "length", "lower", "string", "striptags", "title",
                   "trim", "truncate", "upper", "wordcount")
_CONSTRUCTS = {"For": "a for loop", "Call": "a call", "Getattr": "an attribute", "Getitem": "an index",
               "Mul": "*", "Pow": "**", "Add": "+", "Sub": "-", "Div": "/", "FloorDiv": "//", "Mod": "%",
               "Macro": "a macro", "Assign": "set", "AssignBlock": "set", "List": "a list", "Tuple": "a tuple",
               "Dict": "a dict", "FilterBlock": "a filter block", "Include": "include", "Extends": "extends"}

_ENVIRONMENT = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
# Template code can also fail like any expression ({{ reference_answer|length }} with no reference).
_RENDER_ERRORS = (TemplateError, ArithmeticError, LookupError, TypeError, ValueError)


class RubricError(ValueError):
    """A rubric that cannot be used; the message is one line naming the file and the problem."""


@dataclass(frozen=True)
class Rubric:
    """A validated rubric. `text` is the whole file, logged with each new `version` (its SHA-256, 12 hex digits)."""

    name: str
    path: Path
    text: str
    version: str
    question_template: str
    answer_template: str


def load_rubric(name_or_path: str | Path, rubric_dir: Path = DEFAULT_RUBRIC_DIR) -> Rubric:
    """Load a rubric by name (a file `rubric_dir/NAME.yaml`) or by a path (anything with a `/` or a YAML suffix)."""
    text = str(name_or_path)
    if "/" in text or text.endswith((".yaml", ".yml")):
        path = Path(text)
    else:
        path = Path(rubric_dir) / f"{text}.yaml"
        if not path.is_file():
            known = ", ".join(sorted(file.stem for file in Path(rubric_dir).glob("*.yaml"))) or "none"
            raise RubricError(f"rubric {text!r}: no file {path} (rubrics in {rubric_dir}: {known})")
    return _rubric_from_text(path, _read(path))


def reload_if_changed(current: Rubric) -> Rubric:
    """Re-read the rubric's file: `current` when unchanged, a new version when changed.

    Raises RubricError when the changed file is broken or gone; the caller decides whether to stop or keep `current`.
    """
    text = _read(current.path)
    if _version(text) == current.version:
        return current
    return _rubric_from_text(current.path, text)


def render_question(rubric: Rubric, question: str) -> str:
    """The judge's instructions for scoring a question's quality."""
    return _render(rubric.path, "question_template", rubric.question_template, {"question": question})


def render_answer(rubric: Rubric, question: str, answer: str, reference_answer: str | None) -> str:
    """The judge's instructions for scoring an answer; `reference_answer` is None when there is none."""
    values = {"question": question, "answer": answer, "reference_answer": reference_answer}
    return _render(rubric.path, "answer_template", rubric.answer_template, values)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise RubricError(f"rubric file {path}: cannot be read ({_one_line(error)})") from error


def _version(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _rubric_from_text(path: Path, text: str) -> Rubric:
    try:
        fields = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise RubricError(f"rubric file {path}: invalid YAML ({_one_line(error)})") from error
    if not isinstance(fields, dict):
        raise RubricError(f"rubric file {path}: expected a mapping of fields, got {type(fields).__name__}")
    _check_fields(path, fields)
    for field in TEMPLATE_VARIABLES:
        _check_template(path, field, fields[field])
    return Rubric(
        name=fields["name"],
        path=path,
        text=text,
        version=_version(text),
        question_template=fields["question_template"],
        answer_template=fields["answer_template"],
    )


def _check_fields(path: Path, fields: dict) -> None:
    unknown = sorted(str(key) for key in fields if key not in REQUIRED_FIELDS + OPTIONAL_FIELDS)
    if unknown:
        allowed = ", ".join(REQUIRED_FIELDS + OPTIONAL_FIELDS)
        raise RubricError(f"rubric file {path}: unknown field(s) {', '.join(unknown)} (allowed: {allowed})")
    missing = [field for field in REQUIRED_FIELDS if field not in fields]
    if missing:
        raise RubricError(f"rubric file {path}: missing field(s) {', '.join(missing)}")
    if not isinstance(fields["name"], str) or not fields["name"].strip():
        raise RubricError(f"rubric file {path}: name must be a non-empty string")
    if "description" in fields and not isinstance(fields["description"], str):
        raise RubricError(f"rubric file {path}: description must be a string")
    scale = fields["scale"]
    exact = isinstance(scale, dict) and scale.keys() == SCALE.keys()
    if not exact or any(type(scale[bound]) is not int or scale[bound] != SCALE[bound] for bound in SCALE):
        raise RubricError(
            f"rubric file {path}: scale must be {{min: 1, max: 10}} (the score tag holds 1-10), got {scale!r}"
        )


def _check_template(path: Path, field: str, source: object) -> None:
    if not isinstance(source, str) or not source.strip():
        raise RubricError(f"rubric file {path}: {field} must be a non-empty string")
    try:
        used = meta.find_undeclared_variables(_ENVIRONMENT.parse(source))
    except TemplateSyntaxError as error:
        raise RubricError(
            f"rubric file {path}: {field} has a template syntax error at line {error.lineno} ({_one_line(error)})"
        ) from error
    refused = _refused_construct(source)
    if refused:
        raise RubricError(f"rubric file {path}: {field} {refused}")
    required, allowed = TEMPLATE_VARIABLES[field]
    missing = sorted(required - used)
    if missing:
        placeholders = ", ".join(f"{{{{ {name} }}}}" for name in missing)
        raise RubricError(f"rubric file {path}: {field} lacks the required placeholder(s) {placeholders}")
    unknown = sorted(used - allowed)
    if unknown:
        names, allowed_names = ", ".join(unknown), ", ".join(sorted(allowed))
        raise RubricError(f"rubric file {path}: {field} uses unknown name(s) {names} (allowed: {allowed_names})")
    for trial in (_TRIAL_VALUES, _LONGEST_VALUES):
        trial_values = {name: value for name, value in trial.items() if name in allowed}
        _render(path, field, source, trial_values)
        if "reference_answer" in allowed:
            _render(path, field, source, trial_values | {"reference_answer": None})


def _refused_construct(source: str) -> str | None:
    """Why the template is not one a rubric may hold (the module's docstring), or None."""
    for node in _ENVIRONMENT.parse(source).find_all(nodes.Node):
        kind = type(node).__name__
        if not isinstance(node, _ALLOWED_NODES):
            return (f"uses {_CONSTRUCTS.get(kind, kind)} (line {node.lineno}); a rubric template holds text, "
                    "{{ name }}, {% if %}, comparisons, tests, ~ and the filters " + ", ".join(ALLOWED_FILTERS))
        if isinstance(node, nodes.Filter) and node.name not in ALLOWED_FILTERS:
            return (f"uses the filter {node.name} (line {node.lineno}); the filters allowed: "
                    + ", ".join(ALLOWED_FILTERS))
    return None


@lru_cache(maxsize=64)
def _compile(source: str) -> Template:
    refused = _refused_construct(source)  # a Rubric built without load_rubric is held to the same bounds
    if refused:
        raise TemplateError(refused)
    return _ENVIRONMENT.from_string(source)


def _render(path: Path, field: str, source: str, values: dict[str, str | None]) -> str:
    try:
        pieces, length = [], 0
        for piece in _compile(source).generate(values):
            length += len(piece)
            if length > MAX_RENDERED_CHARS:
                sizes = ", ".join(f"{name} of {len(value)}" for name, value in values.items() if value)
                raise RubricError(f"rubric file {path}: {field} renders over {MAX_RENDERED_CHARS} characters "
                                  f"(values: {sizes} characters)")
            pieces.append(piece)
        return "".join(pieces)
    except RubricError:
        raise
    except _RENDER_ERRORS as error:
        raise RubricError(f"rubric file {path}: {field} failed to render ({_one_line(error)})") from error


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
