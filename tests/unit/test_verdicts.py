"""Which answers the judge scores (selfplay.verdicts): the budget of verdicts on graded answers, by hand."""

from __future__ import annotations

import random

import pytest

from selfplay.verdicts import VerdictBudget, graded_verdict_budget


@pytest.mark.parametrize("verifiable, judge_trains, train_samples, reserved, budget", [
    ("mix", True, 32, 14, None),  # graded verdicts enter the solver's reward: all of them
    ("off", False, 32, 14, None),
    ("replace", False, 32, 14, 0),  # they enter no reward and nothing trains on them
    ("replace", True, None, 14, None),  # the judge trains on all its turns
    ("replace", True, 32, 14, 18),  # what the cap leaves after 10 quality and 4 anchor verdicts
    ("replace", True, 10, 14, 0),
])
def test_the_budget_is_what_trains_or_enters_a_reward(verifiable, judge_trains, train_samples, reserved, budget):
    assert graded_verdict_budget(verifiable, judge_trains, train_samples, reserved) == budget


REFERENCES = [None, "4", "5"]
PARSED = [[True, False], [True, True, True], [False, True]]


def test_an_unlimited_budget_judges_every_parsed_answer():
    budget = VerdictBudget(None)
    assert budget.choose(REFERENCES, PARSED, random.Random(0)) == [(True, False), (True, True, True), (False, True)]
    assert budget.remaining is None


def test_a_budget_judges_every_ungraded_answer_and_that_many_graded_ones_then_is_spent():
    budget = VerdictBudget(2)
    chosen = budget.choose(REFERENCES, PARSED, random.Random(0))
    assert chosen[0] == (True, False)  # no reference: the verdict is the solver's reward
    assert sum(sum(row) for row in chosen[1:]) == 2 and not chosen[2][0]  # 2 of the 4 parsed graded answers
    assert budget.remaining == 0
    assert budget.choose(REFERENCES, PARSED, random.Random(0)) == [(True, False), (False,) * 3, (False, False)]
    assert VerdictBudget(2).choose(REFERENCES, PARSED, random.Random(0)) == chosen  # seeded


def test_a_budget_larger_than_the_graded_answers_judges_them_all_and_keeps_the_rest():
    budget = VerdictBudget(10)
    assert budget.choose(REFERENCES, PARSED, random.Random(0)) == [(True, False), (True, True, True), (False, True)]
    assert budget.remaining == 6
