"""Bounded grading: worker processes, a hard per-grade limit, a killed grade counted as timed out and wrong."""

import time

from rewards.grading import grade
from rewards.grading_pool import Grade, GradingPool

HANGS = "(9^9999)^(9999)"  # passes the cheap checks; sympy evaluates a 95-million-digit power while parsing


def test_cheap_limits_refuse_huge_powers_before_parsing() -> None:
    started = time.monotonic()
    assert not grade("9^9999999", "72") and not grade("9^{99999999}", "72") and not grade("9**(123456)", "72")
    assert time.monotonic() - started < 1.0
    assert grade("$2^{10}$", "1024")  # a small power still grades


def test_pool_grades_in_order_and_survives_a_grade_that_hangs() -> None:
    with GradingPool(workers=2, timeout_s=1) as pool:
        started = time.monotonic()
        grades = pool.submit([(HANGS, "72"), ("72", "72"), ("5", "6"), ("\\frac{1}{2}", "0.5")]).result(timeout=60)
        elapsed = time.monotonic() - started
        assert grades == [Grade(False, timed_out=True), Grade(True), Grade(False), Grade(True)]
        assert elapsed < 30  # killed at its limit (1 s + grace), not left to run for minutes
        assert pool.grade([("3", "3"), (HANGS, "72")]) == [Grade(True), Grade(False, timed_out=True)]
        assert pool.grade([]) == []


def ignores_its_timeout(predicted: str, reference: str, timeout_s: int) -> bool:
    """Stands for a grade stuck inside one C call, where math-verify's alarm cannot interrupt it."""
    if predicted == "stuck":
        time.sleep(3600)
    return predicted == reference


def test_a_grade_that_ignores_its_timeout_is_killed_and_its_worker_replaced() -> None:
    with GradingPool(workers=1, timeout_s=1, grade_function=ignores_its_timeout) as pool:
        started = time.monotonic()
        grades = pool.grade([("stuck", "1"), ("2", "2"), ("stuck", "3"), ("4", "5")])
        assert grades == [Grade(False, timed_out=True), Grade(True), Grade(False, timed_out=True), Grade(False)]
        assert time.monotonic() - started < 60
