"""The safe arithmetic evaluator: exact values worked out by hand, and adversarial text refused quickly."""

from __future__ import annotations

import time
from fractions import Fraction

import pytest

from rewards.arithmetic import ArithmeticRefused, as_answer, evaluate


@pytest.mark.parametrize("text, value", [
    ("12 + 30", 42), ("7 * (8 - 3)", 35), ("2 ** 10", 1024), ("-3 + +5", 2), ("17 // 5", 3), ("17 % 5", 2),
    ("7 / 2", Fraction(7, 2)), ("0.1 + 0.2", Fraction(3, 10)), ("(1 + 2) * (3 + 4) / 7", 3),
    ("1+2+3+4+5+6+7+8+9+10+11+12+13+14+15", 120), ("((((2))))", 2), ("10 - 4 - 3", 3), ("2 ** 3 ** 2", 512),
])
def test_values_are_exact(text, value):
    assert evaluate(text) == value


@pytest.mark.parametrize("value, answer", [
    (Fraction(42), "42"), (Fraction(-7, 2), "-3.5"), (Fraction(3, 10), "0.3"), (Fraction(1, 3), "1/3"),
    (Fraction(1, 8), "0.125"), (Fraction(-5), "-5"),
])
def test_answers_are_integers_short_decimals_or_fractions(value, answer):
    assert as_answer(value) == answer


@pytest.mark.parametrize("text, reason", [
    ("9 ** 99999999", "exponents must be whole numbers from 0 to 12"),
    ("9 ** 9 ** 9", "exponents must be whole numbers"),
    ("10 ** 12 * 10", "a value beyond"),
    ("999999 ** 3", "a value beyond"),
    ("2 ** -1", "exponents must be whole numbers"),
    ("2 ** 0.5", "exponents must be whole numbers"),
    ("1 / 0", "division by zero"), ("5 % (3 - 3)", "division by zero"),
    ("(" * 40 + "1" + ")" * 40, "parentheses nested deeper than 12"),
    ("-" * 60 + "1", "more than 64 syntax nodes"),
    ("1" + "+1" * 80, "more than 64 syntax nodes"),
    ("1" * 201, "longer than 200 characters"),
    ("__import__('os')", "character '_' is not arithmetic"),
    ("x + 1", "character 'x' is not arithmetic"),
    ("(1).real", "character 'r' is not arithmetic"),
    ("1 < 2", "character '<' is not arithmetic"),
    ("1e308 * 10", "character 'e' is not arithmetic"),
    ("1 +", "not a well-formed expression"), ("", "empty expression"), ("()", "Tuple is not allowed"),
    ("1 / 3 / 7 / 11 / 13 / 17 / 19 / 23", "denominator beyond"),
])
def test_adversarial_text_is_refused_with_one_line(text, reason):
    started = time.perf_counter()
    with pytest.raises(ArithmeticRefused, match=reason.replace("(", r"\(").replace("*", r"\*")) as error:
        evaluate(text)
    assert time.perf_counter() - started < 0.1
    assert "\n" not in str(error.value)


def test_the_time_bound_counts_this_threads_cpu_time_not_the_wall_clock(monkeypatch):
    """A machine so busy that the evaluating thread waits 0.2 s (4x the bound) for a core still gets its answer; an
    evaluation that has used up its CPU time is refused."""
    import rewards.arithmetic as arithmetic

    real_sleep, waits = time.sleep, []

    def descheduled(node, depth, deadline):  # the thread waits, as when other processes hold every core
        if not waits:
            waits.append(real_sleep(0.2))
        return value(node, depth, deadline)

    value = arithmetic._value
    monkeypatch.setattr(arithmetic, "_value", descheduled)
    assert evaluate("3 * 4 + 5") == 17
    monkeypatch.setattr(arithmetic, "_value", value)
    monkeypatch.setattr(arithmetic, "DEADLINE_S", -1.0)
    with pytest.raises(ArithmeticRefused, match="evaluation took too long"):
        evaluate("3 * 4 + 5")
