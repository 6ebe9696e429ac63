"""Task families: the registry and config, and the arithmetic and calculation families' checked proposals."""

from __future__ import annotations

import pytest

from agents.parsing import FormatFailure, Proposal
from agents.tasks import FAMILIES, demonstration, task_family
from selfplay.config import ConfigError, load_config

ARITHMETIC = task_family("arithmetic")
CALCULATION = task_family("calculation")


def test_the_registry_names_each_family_by_its_config_value():
    assert sorted(FAMILIES) == ["arithmetic", "calculation", "math"]
    assert load_config(None, ["task.family=arithmetic"]).task.family == "arithmetic"
    with pytest.raises(ConfigError, match=r"^command line 'task.family=algebra': task.family: unknown task family 'algebra' \(known: "
                                          r"arithmetic, calculation, math\) \(got 'algebra'\)$"):
        load_config(None, ["task.family=algebra"])


def test_math_proposals_carry_no_reference():
    parsed = task_family("math").parse_proposal("<question>Why is the sky blue?</question>")
    assert parsed.value == Proposal("Why is the sky blue?") and parsed.value.reference is None


@pytest.mark.parametrize("response, proposal", [
    ("<question>A baker has 24 muffins and sells 3 boxes of 6. How many are left?</question>\n"
     "<expression>24 - 3 * 6</expression>",
     Proposal("A baker has 24 muffins and sells 3 boxes of 6. How many are left?", "6", checkable="24 - 3 * 6")),
    ("<question>Split 8 pizzas among 2 friends. How many each?</question><expression>8 / 2</expression>",
     Proposal("Split 8 pizzas among 2 friends. How many each?", "4", checkable="8 / 2")),
    ("<question>A ticket costs 2.50 and Ann buys 4.</question><expression>2.5 * 4</expression>",
     Proposal("A ticket costs 2.50 and Ann buys 4.", "10", checkable="2.5 * 4")),
])
def test_an_arithmetic_proposal_carries_the_value_of_its_expression(response, proposal):
    assert ARITHMETIC.parse_proposal(response).value == proposal


@pytest.mark.parametrize("question, expression, by_form", [
    ("What is 24 - 3 * 6?", "24 - 3 * 6", True),
    ("Calculate 28 / 4 + 2.", "28/4+2", True),  # spacing aside
    ("compute: (2.5 + 1.5) * 3", "(2.5 + 1.5) * 3", True),
    ("What is 3 + 5 squared?", "3 + 5", False),  # asks for something else
    ("What is 3 + 5?", "5 + 3", False),  # the same value, but not the question's own form
    ("Tom has 3 apples and buys 5 more. How many apples?", "3 + 5", False),  # a word problem: its answers verify it
    ("What is 7 // 2?", "7 // 2", False),  # Python's floor division, not a reader's 3.5
    ("What is 2 ** 3?", "2 ** 3", False),
    ("Find the value of 42 + 9.", "42 + 9", True),
    ("What is the value of (7 - 2) * 3?", "(7 - 2) * 3", True),
])
def test_a_bare_calculation_of_its_own_expression_is_answered_by_construction(question, expression, by_form):
    parsed = ARITHMETIC.parse_proposal(f"<question>{question}</question><expression>{expression}</expression>")
    assert parsed.failure is None and parsed.value.reference_by_form is by_form


@pytest.mark.parametrize("response, failure", [
    ("<question>How many legs do 3 cats have?</question>", FormatFailure.MISSING_TAG),  # no expression
    ("<question>3 cats</question><expression>3 * 4</expression>", FormatFailure.UNCHECKABLE),  # 4 is not in it
    ("<question>3 cats and 0 dogs</question><expression>3 / 0</expression>", FormatFailure.UNCHECKABLE),
    ("<question>9 and 99</question><expression>9 ** 99</expression>", FormatFailure.UNCHECKABLE),
    ("<question>2 apples</question><expression>__import__('os').system('x')</expression>",
     FormatFailure.UNCHECKABLE),
    ("<question>2 and 2</question><expression>2 + 2</expression><answer>4</answer>", FormatFailure.FOREIGN_TAG),
    ("No tags, 2 + 2.", FormatFailure.MISSING_TAG),
    # the proposer is asked for whole-number answers: 7/3, 3.5 and negative references are refused
    ("<question>Share 7 cakes among 3.</question><expression>7 / 3</expression>", FormatFailure.UNCHECKABLE),
    ("<question>Split 7 pizzas among 2.</question><expression>7 / 2</expression>", FormatFailure.UNCHECKABLE),
    ("<question>A car goes 600 miles in 3 hours and 30 minutes. How many minutes?</question>"
     "<expression>600 - 3 * 30 * 600</expression>", FormatFailure.UNCHECKABLE),
])
def test_an_unchecked_or_unfitting_expression_fails_the_proposal(response, failure):
    parsed = ARITHMETIC.parse_proposal(response)
    assert parsed.failure is failure and parsed.format_score == 0.0


def test_every_demonstration_obeys_its_own_format():
    for family in FAMILIES.values():
        for _, response in family.proposer_demonstrations:
            assert family.parse_proposal(response).failure is None


def test_demonstrations_are_shown_in_turn():
    family = task_family("calculation")
    shown = [demonstration(family, index)[1] for index in range(10)]
    assert shown[:8] == [response for _, response in family.proposer_demonstrations]
    assert shown[8:] == shown[:2]  # 8 demonstrations: request 8 is shown the first again
    assert len(set(shown[:8])) == 8


@pytest.mark.parametrize("question, proposal", [
    ("What is 24 - 3 * 6?", Proposal("What is 24 - 3 * 6?", "6", True, "24 - 3 * 6")),
    ("Find the value of 42 + 9.", Proposal("Find the value of 42 + 9.", "51", True, "42 + 9")),
    ("calculate (8 + 4) / 3", Proposal("calculate (8 + 4) / 3", "4", True, "(8 + 4) / 3")),
])
def test_a_calculation_is_its_own_checkable_form_and_answered_by_construction(question, proposal):
    assert CALCULATION.parse_proposal(f"<question>{question}</question>").value == proposal


@pytest.mark.parametrize("response, failure", [
    ("<question>Tom has 3 apples and buys 5 more. How many apples?</question>", FormatFailure.UNCHECKABLE),
    ("<question>What is 3 + 5 squared?</question>", FormatFailure.UNCHECKABLE),  # words beside the expression
    ("<question>What is 7 / 2?</question>", FormatFailure.UNCHECKABLE),  # 3.5: whole numbers only
    ("<question>What is 3 - 5?</question>", FormatFailure.UNCHECKABLE),  # negative
    ("<question>What is 7 // 2?</question>", FormatFailure.UNCHECKABLE),
    ("<question>What is 9 ** 99?</question>", FormatFailure.UNCHECKABLE),
    ("<question>What is 3 / 0?</question>", FormatFailure.UNCHECKABLE),
    ("<question>What is 2 + 2?</question><answer>4</answer>", FormatFailure.FOREIGN_TAG),
    ("What is 2 + 2?", FormatFailure.MISSING_TAG),
])
def test_a_calculation_that_is_not_bare_or_not_whole_fails(response, failure):
    parsed = CALCULATION.parse_proposal(response)
    assert parsed.failure is failure and parsed.format_score == 0.0


def test_only_bare_calculation_seeds_show_the_calculation_proposer_its_format():
    seed = "Find the value of 42 + 9."
    assert CALCULATION.proposal_text(seed, "42 + 9") == f"<question>{seed}</question>"
    assert CALCULATION.proposal_text("Lena had 38 marbles and gave 6 away. How many are left?", "38 - 6") is None
    assert CALCULATION.worked_answer("51", "42 + 9") == "42 + 9 = 51.\n<answer>51</answer>"
    with pytest.raises(ValueError, match="does not compute a whole number"):
        CALCULATION.proposal_text("What is 7 / 2?", "7 / 2")
