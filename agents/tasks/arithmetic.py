"""The `arithmetic` family, grounded: the proposer writes a word problem together with the arithmetic expression
that solves it, and a safe evaluator (rewards.arithmetic) computes the true answer. Model text is never executed.

A proposal is UNCHECKABLE (format 0, counted) when its expression is refused (not arithmetic, too large, division
by zero), does not fit its question (every number in the expression must appear in the question's text), or does
not compute a whole number of zero or more, the only answers the proposer is asked for. A computed answer is only
the answer to the expression: the solver's answers decide whether it answers the question (rewards.scores.
reference_verified), unless the question is a bare calculation of the expression itself ("What is 24 - 3 * 6?"),
whose answer the expression is by construction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agents.parsing import FormatFailure, Parsed, Proposal, parse_question, tagged_content
from rewards.arithmetic import MAX_CHARS, ArithmeticRefused, as_answer, evaluate

EXPRESSION_TAG = "expression"
NUMBER = re.compile(r"\d+(?:\.\d+)?")
BARE_CALCULATION = re.compile(r"(?:what is|what is the value of|find the value of|calculate|compute|evaluate|work out)"
                              r"\s*:?\s*(?P<expression>[\d\s+*/().-]+?)\s*(?:=\s*)?[?.]?", re.IGNORECASE)


def _compact(text: str) -> str:
    return re.sub(r"\s+", "", text)


def bare_calculation(question: str) -> str | None:
    """The expression a question asks for and nothing else ("What is 24 - 3 * 6?" -> "24 - 3 * 6"), in + - * / and
    parentheses only (`//` and `**` compute what Python means, not necessarily what a reader does); None when the
    question is anything else."""
    match = BARE_CALCULATION.fullmatch(question.strip())
    if match is None or "//" in match["expression"] or "**" in match["expression"]:
        return None
    return match["expression"].strip()


def is_bare_calculation(question: str, expression: str) -> bool:
    """The question asks for exactly `expression` (spacing aside) and nothing else (`bare_calculation`)."""
    asked = bare_calculation(question)
    return asked is not None and _compact(asked) == _compact(expression)


def whole_answer(expression: str) -> str | None:
    """The answer `expression` computes when it is a whole number of zero or more, the only answers the proposer is
    asked for; None when it is refused or computes anything else."""
    try:
        value = evaluate(expression)
    except ArithmeticRefused:
        return None
    return as_answer(value) if value.denominator == 1 and value >= 0 else None


def worked_answer(answer: str, checkable: str | None) -> str:
    """The solver demonstration's shape: the calculation, then the tagged answer."""
    if checkable is None:
        return f"<answer>{answer}</answer>"
    try:
        computed = as_answer(evaluate(checkable))
    except ArithmeticRefused as error:
        raise ValueError(f"expression {checkable!r} does not compute: {error}") from None
    if computed != answer:
        raise ValueError(f"expression {checkable!r} computes {computed}, but the answer is {answer}")
    return f"{checkable} = {answer}.\n<answer>{answer}</answer>"


def _numbers(text: str) -> set[str]:
    return {number.rstrip("0").rstrip(".") if "." in number else number for number in NUMBER.findall(text)}


@dataclass(frozen=True)
class ArithmeticFamily:
    name: str = "arithmetic"
    proposer_system: str = (
        "You write one new arithmetic word problem for a student: clear, self-contained, with one whole-number "
        "answer. Write the problem inside <question></question> tags, then the arithmetic expression that solves "
        "it, using only the problem's numbers, + - * / and parentheses, inside <expression></expression> tags. Do "
        "not write the answer.")
    proposer_demonstrations: tuple[tuple[str, str], ...] = ((
        "Write a new question that takes a few steps of reasoning to solve.",
        "<question>A baker makes 24 muffins and sells 3 boxes of 6 muffins. How many muffins are left?</question>\n"
        "<expression>24 - 3 * 6</expression>"),)

    def proposal_text(self, question: str, checkable: str | None) -> str | None:
        if checkable is None:
            return None
        text = f"<question>{question}</question>\n<{EXPRESSION_TAG}>{checkable}</{EXPRESSION_TAG}>"
        if self.parse_proposal(text).failure is not None:
            raise ValueError(f"expression {checkable!r} does not compute, or uses a number its question lacks")
        return text

    def worked_answer(self, answer: str, checkable: str | None) -> str:
        return worked_answer(answer, checkable)

    def parse_proposal(self, response: str) -> Parsed:
        question = parse_question(response)
        if question.failure is not None:
            return question
        expression = tagged_content(response, EXPRESSION_TAG, MAX_CHARS)
        if expression.failure is not None:
            return expression
        answer = whole_answer(str(expression.value))
        if answer is None or not _numbers(str(expression.value)) <= _numbers(str(question.value)):
            return Parsed(None, FormatFailure.UNCHECKABLE)
        return Parsed(Proposal(str(question.value), answer,
                               is_bare_calculation(str(question.value), str(expression.value)),
                               str(expression.value)), None)


FAMILY = ArithmeticFamily()
