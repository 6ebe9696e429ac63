"""Verifiable grading: a predicted final answer against a reference answer, with math_verify.

Cheap limits come first: inputs are capped in length, and answers known to cost sympy minutes (a number raised to
a power of five or more digits, such as 9^99999999, which sympy evaluates eagerly while parsing; power towers such
as 9^9^9^9) are graded incorrect without being parsed or compared. math_verify's own timeouts use signal.alarm,
which works only in a process's main thread: `timeout_s` turns them on there (the grading workers of
rewards/grading_pool.py, which also kill a grade that overruns); None leaves them off, for callers on other
threads. Leaves out how a grade is mixed into rewards (rewards/scores.py).
"""

import re

import sympy
from math_verify import parse, verify

# Parsed answers are at most 1,000 characters (agents/parsing.py); references are short.
MAX_GRADED_CHARS = 1_000

_THOUSANDS_SEPARATOR = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
# "^" or "**" followed (through braces, parentheses, spaces) by a number of five or more digits.
_HUGE_EXPONENT = re.compile(r"(\^|\*\*)[\s{(]*\d{5,}")


def extract_reference_answer(text: str) -> str:
    """The final answer of a reference solution: what follows GSM8K's last `####`, else the whole text.

    Thousands separators are removed ("1,000" -> "1000"). Raises ValueError when no answer is left.
    """
    answer = text.rsplit("####", 1)[-1].strip()
    answer = _THOUSANDS_SEPARATOR.sub("", answer)
    if not answer:
        raise ValueError(f"reference solution has no final answer: {text[-80:]!r}")
    return answer


def grade(predicted: str, reference: str, timeout_s: int | None = None) -> bool:
    """Whether `predicted` states the same final answer as `reference`.

    Equal text (ignoring case, surrounding whitespace and a final period) is correct, so non-math answers grade
    too; otherwise both are parsed as math ("\\boxed{72}", "$72$", "72 apples" all read as 72) and compared by
    value. Unparseable, over-long or too-costly answers are incorrect.
    """
    if len(predicted) > MAX_GRADED_CHARS or len(reference) > MAX_GRADED_CHARS:
        return False
    if _plain(predicted) and _plain(predicted) == _plain(reference):
        return True
    if _HUGE_EXPONENT.search(predicted) or _HUGE_EXPONENT.search(reference):
        return False
    gold = parse(reference, parsing_timeout=timeout_s)
    prediction = parse(predicted, parsing_timeout=timeout_s)
    if not gold or not prediction or not all(map(_cheap_to_compare, gold + prediction)):
        return False
    return verify(gold, prediction, timeout_seconds=timeout_s)


def _plain(text: str) -> str:
    return " ".join(text.split()).rstrip(".").casefold()


def _cheap_to_compare(expression: object) -> bool:
    if not isinstance(expression, sympy.Basic):
        return True
    return not any(power.exp.has(sympy.Pow) for power in expression.atoms(sympy.Pow))
