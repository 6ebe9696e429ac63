"""Verifiable grading with math_verify, and GSM8K reference answers."""

import threading

import pytest

from rewards.grading import MAX_GRADED_CHARS, extract_reference_answer, grade

GSM8K_SOLUTION = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GSM8K_SOLUTION, "72"),
        ("He pays 1,000 + 200.\n#### 1,200", "1200"),
        ("#### 1,234,567", "1234567"),
        ("#### -5", "-5"),
        ("3.5", "3.5"),
        ("  Paris \n", "Paris"),
        ("#### 10,5", "10,5"),  # not a thousands separator
    ],
)
def test_extract_reference_answer(text: str, expected: str) -> None:
    assert extract_reference_answer(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "worked solution\n####  "])
def test_extract_reference_answer_refuses_no_answer(text: str) -> None:
    with pytest.raises(ValueError, match="no final answer"):
        extract_reference_answer(text)


@pytest.mark.parametrize(
    ("predicted", "reference"),
    [
        ("72", extract_reference_answer(GSM8K_SOLUTION)),
        ("\\boxed{72}", "72"),
        ("$72$", "72"),
        ("72 clips", "72"),
        ("1,000", "1000"),
        ("1000", extract_reference_answer("#### 1,000")),
        ("72.0", "72"),
        ("\\frac{1}{2}", "0.5"),
        ("Paris", "paris."),
    ],
)
def test_same_answers_grade_correct(predicted: str, reference: str) -> None:
    assert grade(predicted, reference)


@pytest.mark.parametrize(
    ("predicted", "reference"),
    [("73", "72"), ("5", "-5"), ("seven", "7"), ("７２", "72"), ("", "72"), ("London", "Paris"), ("72", "")],
)
def test_different_or_unreadable_answers_grade_incorrect(predicted: str, reference: str) -> None:
    assert not grade(predicted, reference)


def test_power_towers_are_incorrect_without_being_compared() -> None:
    # Without math_verify's timeouts, comparing 9^(9^(9^9)) with a number runs for ever.
    assert not grade("9^9^9^9", "72")
    assert not grade("\\boxed{9^{9^{9^9}}}", "72")


def test_overlong_answers_are_incorrect() -> None:
    assert not grade("7" * (MAX_GRADED_CHARS + 1), "7")


def test_grading_works_outside_the_main_thread() -> None:
    # Ray actors call in worker threads, where math_verify's signal-based timeouts raise.
    results: list[bool] = []
    worker = threading.Thread(target=lambda: results.extend([grade("\\boxed{72}", "72"), grade("73", "72")]))
    worker.start()
    worker.join(timeout=60)
    assert results == [True, False]
