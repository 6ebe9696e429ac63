"""The `calculation` family, grounded by construction: the proposer writes a calculation whose question is its own
checkable form ("What is 24 - 3 * 6?"), and the safe evaluator (rewards.arithmetic) computes its answer, which is
then the answer to the question as written. Model text is never executed.

The `arithmetic` family's word problems carry an expression that can compute something other than what the words
ask, and only the solvers' majority decides whether it fits; with the 135M embedded model that majority shares the
proposer's misreadings (in 60 iterations of configs/arithmetic-cpu.yaml, 1 of the 4 word problems it let into the
pool had a right reference, docs/results.md). Here no such judgement is needed.

A proposal is UNCHECKABLE (format 0, counted) when its question is not a bare calculation (`bare_calculation`), or
its expression is refused (too large, division by zero) or does not compute a whole number of zero or more.
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.parsing import FormatFailure, Parsed, Proposal, parse_question
from agents.tasks.arithmetic import bare_calculation, whole_answer, worked_answer


@dataclass(frozen=True)
class CalculationFamily:
    name: str = "calculation"
    proposer_system: str = (
        "You write one new arithmetic calculation for a student, with one whole-number answer: \"What is\", "
        "\"Calculate\", \"Compute\" or \"Find the value of\", then an expression of whole numbers, + - * / and "
        "parentheses. Write it inside <question></question> tags. Do not write the answer.")
    # Shown one per request, in turn: with the one calculation it had, the proposer mostly copied or varied it, so
    # most of its proposals were near-duplicates of each other (3 of 29 parsed proposals entered the pool).
    proposer_demonstrations: tuple[tuple[str, str], ...] = tuple(
        ("Write a new question that takes a few steps of reasoning to solve.", f"<question>{question}</question>")
        for question in ("What is 24 - 3 * 6?", "Calculate (17 + 28) / 5.", "Compute 13 * 4 - 25.",
                         "Find the value of 96 / (4 + 4) + 15.", "What is 7 * (12 - 5) + 8?",
                         "Calculate 150 - 6 * 9 + 41.", "Compute (63 - 18) * 3 / 5.",
                         "What is the value of 8 * 8 - 7 * 5?"))

    def proposal_text(self, question: str, checkable: str | None) -> str | None:
        """Only seeds that are bare calculations show the proposer its format; word-problem seeds still train the
        solver."""
        if bare_calculation(question) is None:
            return None
        text = f"<question>{question}</question>"
        if self.parse_proposal(text).failure is not None:
            raise ValueError(f"calculation {question!r} does not compute a whole number of zero or more")
        return text

    def worked_answer(self, answer: str, checkable: str | None) -> str:
        return worked_answer(answer, checkable)

    def parse_proposal(self, response: str) -> Parsed:
        question = parse_question(response)
        if question.failure is not None:
            return question
        expression = bare_calculation(str(question.value))
        answer = None if expression is None else whole_answer(expression)
        if answer is None:
            return Parsed(None, FormatFailure.UNCHECKABLE)
        return Parsed(Proposal(str(question.value), answer, True, expression), None)


FAMILY = CalculationFamily()
