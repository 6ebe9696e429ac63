"""Strict parsing of role responses: one tagged value per response, or the reason there is none.

Looks at the model's response text only, never at the prompt (the paper counted prompt and response tags
together). Leaves out rewards: a parse carries its format score, and rewards/scores.py combines it.

The rules, the same for the question, answer and score tags:
- a response over MAX_RESPONSE_CHARS is TOO_LONG and is not scanned;
- no opening and no closing tag: MISSING_TAG; more than one opening or closing tag: REPEATED_TAG (so a tag
  nested in itself counts as repeated); an opening tag without its closing tag, or the reverse order: UNCLOSED_TAG;
- content holding any protocol tag (question, answer, score) is NESTED_TAG, and a question or answer response
  holding another role's tag anywhere (a `<score>` beside the answer) is FOREIGN_TAG: a response cannot carry a
  verdict to the judge. What the judge reads passes through `neutralise_tags` as well, which also defuses
  variants the parser would not count (`<SCORE>`, `< score >`, full-width brackets) but a judge model might obey;
- a role's text never enters another role's prompt carrying a string the serving tokenizer reads as a special token
  or the chat template writes as a turn marker (`neutralise_markers`): the chat template would tokenise a written
  `<|im_end|>` into the real token, and a solver could end the judge's turn and write the next one itself;
- content is stripped of whitespace; nothing visible left (only whitespace or zero-width characters): EMPTY;
  content over the tag's cap: TOO_LONG.
Tags are exact lowercase ASCII (`<score>`, not `<Score>` nor `<score >`). Nothing is Unicode-normalised: a score
is ASCII digits only, so full-width digits ("７") and digits carrying zero-width characters are NOT_AN_INTEGER,
though Python's int() would accept the former.

Format score (the paper's rule): 1.0 for exactly one well-formed tag with valid content, 0.5 for several tags,
0.0 otherwise.
"""

import re
import unicodedata
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from typing import Any

from rewards.scores import SCORE_MAX, SCORE_MIN

QUESTION_TAG = "question"
ANSWER_TAG = "answer"
SCORE_TAG = "score"
PROTOCOL_TAGS = (QUESTION_TAG, ANSWER_TAG, SCORE_TAG)

MAX_RESPONSE_CHARS = 32_000
MAX_QUESTION_CHARS = 4_000
MAX_ANSWER_CHARS = 1_000
# Long enough for "7 out of 10" to be NOT_AN_INTEGER, short enough that int() never sees a huge digit string.
MAX_SCORE_CHARS = 64

_ASCII_INTEGER = re.compile(r"[+-]?[0-9]+")
_TAG_LIKE = re.compile(r"[<\uff1c\u2039]\s*(/?)\s*(question|answer|score)\s*[>\uff1e\u203a]", re.IGNORECASE)
# `<|name|>` (ASCII or full-width bars) is escaped whatever the tokenizer: the special tokens of ChatML, Llama 3, Phi
# and DeepSeek all have that form, so even a prompt built without the serving tokenizer's list carries none of them.
# A lone `<|` or `|>` stays (`|x|>3` is mathematics).
_PIPE_TOKEN = re.compile(r"<[|\uff5c]([^<>|\uff5c\s]{1,64})[|\uff5c]>")
# Turn markers a chat template writes as plain text, not as special tokens: `[INST]`, `<<SYS>>`, `<start_of_turn>`.
_TEMPLATE_MARKER = re.compile(r"<<?[|/]?[A-Za-z_][\w.|-]*>>?|\[/?[A-Z_]+\]")


class FormatFailure(Enum):
    """Why a response gave no value; the value names the metric it is counted under."""

    MISSING_TAG = "missing_tag"
    REPEATED_TAG = "repeated_tag"
    UNCLOSED_TAG = "unclosed_tag"
    NESTED_TAG = "nested_tag"
    FOREIGN_TAG = "foreign_tag"
    EMPTY = "empty"
    TOO_LONG = "too_long"
    NOT_AN_INTEGER = "not_an_integer"
    OUT_OF_RANGE = "out_of_range"
    UNCHECKABLE = "uncheckable"  # a grounded proposal whose checkable form does not compute or fit its question
    RUBRIC_ERROR = "rubric_error"  # the rubric failed to render this judge prompt, so no verdict was sampled


@dataclass(frozen=True)
class Proposal:
    """A proposed question and, for a grounded task family, its checkable form and the answer that computes;
    `reference_by_form` when the question is its checkable form, so the reference answers it by construction."""

    text: str
    reference: str | None = None
    reference_by_form: bool = False
    checkable: str | None = None

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Parsed:
    """One parse: exactly one of `value` (a Proposal for the proposer, str for an answer, int 1-10 for a score)
    and `failure`."""

    value: Proposal | str | int | None
    failure: FormatFailure | None

    def __post_init__(self) -> None:
        if (self.value is None) == (self.failure is None):
            raise ValueError(f"a Parsed holds exactly one of value and failure, got {self.value!r}, {self.failure}")

    @property
    def format_score(self) -> float:
        """1.0 when parsed, 0.5 for several tags, 0.0 for any other failure."""
        if self.failure is None:
            return 1.0
        return 0.5 if self.failure is FormatFailure.REPEATED_TAG else 0.0


def parse_question(response: str) -> Parsed:
    """The question inside the response's one `<question>` tag; an answer or score tag anywhere fails it."""
    return tagged_content(response, QUESTION_TAG, MAX_QUESTION_CHARS, foreign=(ANSWER_TAG, SCORE_TAG))


def parse_answer(response: str) -> Parsed:
    """The final answer inside the response's one `<answer>` tag; a question or score tag anywhere fails it."""
    return tagged_content(response, ANSWER_TAG, MAX_ANSWER_CHARS, foreign=(QUESTION_TAG, SCORE_TAG))


def neutralise_tags(text: str) -> str:
    """`text` as the judge may read it: everything that looks like a protocol tag, in any case, spacing or bracket
    style, becomes a bracketed word (`<score>` -> `[score]`, `</ Answer >` -> `[/answer]`)."""
    return _TAG_LIKE.sub(lambda match: f"[{match.group(1)}{match.group(2).lower()}]", text)


def special_markers(tokenizer: Any) -> frozenset[str]:
    """What no role's text may carry into a prompt `tokenizer` renders: every string it reads as one of its special
    or added tokens, and the turn markers its chat template writes as text. Duck-typed over a transformers or vLLM
    tokenizer, so this module needs neither."""
    markers = set(getattr(tokenizer, "all_special_tokens", None) or ())
    markers |= {str(getattr(token, "content", token))
                for token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values()}
    template = getattr(tokenizer, "chat_template", None) or ""
    for source in (template.values() if isinstance(template, dict) else [template]):
        markers |= set(_TEMPLATE_MARKER.findall(source))
    return frozenset(markers)


def neutralise_markers(text: str, markers: Collection[str] = ()) -> str:
    """`text` holding no `<|name|>` and none of `markers` (`special_markers`): `<|im_end|>` becomes `[im_end]`,
    any other marker its letters alone (`<filename>` -> `filename`, `[INST]` -> `INST`). Repeated until nothing
    changes, since taking one marker out can join its neighbours into another (`<<repo_name>>` -> `<repo_name>`);
    every change shortens the text, so this ends. A marker of letters alone is text, and left as it is."""
    pattern = _marker_pattern(frozenset(markers))
    while True:
        changed = _PIPE_TOKEN.sub(r"[\1]", text)
        if pattern is not None:
            changed = pattern.sub(lambda match: re.sub(r"\W", "", match.group()), changed)
        if changed == text:
            return text
        text = changed


@lru_cache(maxsize=8)
def _marker_pattern(markers: frozenset[str]) -> re.Pattern[str] | None:
    defusable = sorted((marker for marker in markers if re.search(r"\W", marker)), key=len, reverse=True)
    return re.compile("|".join(map(re.escape, defusable))) if defusable else None


def parse_score(response: str) -> Parsed:
    """The integer 1-10 inside the response's one `<score>` tag; "7.5", "seven", "７" fail, "0" and "11" too."""
    parsed = tagged_content(response, SCORE_TAG, MAX_SCORE_CHARS)
    if parsed.failure is not None:
        return parsed
    text = str(parsed.value)
    if not _ASCII_INTEGER.fullmatch(text):
        return Parsed(None, FormatFailure.NOT_AN_INTEGER)
    score = int(text)
    if not SCORE_MIN <= score <= SCORE_MAX:
        return Parsed(None, FormatFailure.OUT_OF_RANGE)
    return Parsed(score, None)


def failure_counts(parses: Iterable[Parsed]) -> dict[FormatFailure, int]:
    """How many parses failed for each reason; every reason is present, so logged keys stay stable."""
    counts = {failure: 0 for failure in FormatFailure}
    for parsed in parses:
        if parsed.failure is not None:
            counts[parsed.failure] += 1
    return counts


def tagged_content(response: str, tag: str, max_chars: int, foreign: tuple[str, ...] = ()) -> Parsed:
    """The stripped text inside the response's one `<tag>`, or why there is none (the rules at the top)."""
    if len(response) > MAX_RESPONSE_CHARS:
        return Parsed(None, FormatFailure.TOO_LONG)
    opening, closing = f"<{tag}>", f"</{tag}>"
    opening_count, closing_count = response.count(opening), response.count(closing)
    if opening_count == 0 and closing_count == 0:
        return Parsed(None, FormatFailure.MISSING_TAG)
    if opening_count > 1 or closing_count > 1:
        return Parsed(None, FormatFailure.REPEATED_TAG)
    start, end = response.find(opening), response.find(closing)
    if opening_count != closing_count or end < start:
        return Parsed(None, FormatFailure.UNCLOSED_TAG)
    content = response[start + len(opening) : end]
    if _holds_protocol_tag(content):
        return Parsed(None, FormatFailure.NESTED_TAG)
    if any(f"<{other}>" in response or f"</{other}>" in response for other in foreign):
        return Parsed(None, FormatFailure.FOREIGN_TAG)
    content = content.strip()
    if not _has_visible_character(content):
        return Parsed(None, FormatFailure.EMPTY)
    if len(content) > max_chars:
        return Parsed(None, FormatFailure.TOO_LONG)
    return Parsed(content, None)


def _holds_protocol_tag(content: str) -> bool:
    return any(f"<{tag}>" in content or f"</{tag}>" in content for tag in PROTOCOL_TAGS)


def _has_visible_character(text: str) -> bool:
    # Zero-width spaces, joiners and byte-order marks are Unicode category Cf ("format"), not whitespace.
    return any(not character.isspace() and unicodedata.category(character) != "Cf" for character in text)
