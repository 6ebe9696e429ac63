"""Question difficulty metrics (hand-computed)."""

import pytest

from selfplay.curriculum import curriculum_metrics, operations_and_largest


@pytest.mark.parametrize("expression, shape", [
    ("24 - 3 * 6", (2, 24.0)),
    ("(2.5 + 1.5) * 300", (2, 300.0)),
    ("-7 + 2", (1, 7.0)),  # a unary minus is no operation; the number's size counts
    ("42", (0, 42.0)),
    ("3 +", None),
    ("1" * 1000, None),  # longer than the evaluator takes
])
def test_operations_and_the_largest_number_of_an_expression(expression, shape):
    assert operations_and_largest(expression) == shape


def test_curriculum_metrics_over_the_pool_and_the_accepted_proposals():
    metrics = curriculum_metrics(["24 - 3 * 6", "8 / 2", None], ["100 + 20 + 3"], [0.25, None])
    # pool: operations (2 + 1) / 2, largest (24 + 8) / 2; accepted: 2 operations, largest 100; solve rate 0.25
    assert metrics == {"curriculum/pool_operations_mean": 1.5, "curriculum/pool_largest_number_mean": 16.0,
                       "curriculum/accepted_operations_mean": 2.0, "curriculum/accepted_largest_number_mean": 100.0,
                       "curriculum/accepted_solve_rate_mean": 0.25}
    assert curriculum_metrics([None], [], []) == {}  # no checkable form: nothing to measure
