"""Grades of one iteration: which answers are graded, and how the grades land back in [question][N] shape."""

from agents.parsing import FormatFailure, Parsed
from agents.players import Turn
from agents.roles import Role
from rewards.grading_pool import Grade
from rollout.records import Sample
from selfplay.iteration import _grading_pairs, _place_grades
from selfplay.scoring import SolveItem


def _answer(value: str | None) -> Turn:
    parsed = Parsed(value, None) if value is not None else Parsed(None, FormatFailure.MISSING_TAG)
    return Turn(Role.SOLVER, (1,), Sample(f"<answer>{value}</answer>", (2,), (-0.1,), "stop"), parsed, 1.0, 0)


ITEMS = [SolveItem("What is 2 + 2?", "seed-1", "4", None), SolveItem("A proposed question", "it1-q0", None, 0),
         SolveItem("What is 3 + 3?", "seed-2", "6", None)]
ATTEMPTS = [[_answer("4"), _answer(None), _answer("5")], [_answer("7"), _answer("8")], [_answer(None), _answer("6")]]


def test_only_parsed_answers_to_questions_with_a_reference_are_graded():
    assert _grading_pairs(ITEMS, ATTEMPTS) == [("4", "4"), ("5", "4"), ("6", "6")]


def test_grades_land_on_their_answers_and_a_timeout_counts_wrong():
    grades = [Grade(True), Grade(False), Grade(False, timed_out=True)]
    assert _place_grades(ITEMS, ATTEMPTS, grades) == [(True, False, False), (None, None), (False, False)]
