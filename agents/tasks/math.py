"""The `math` family (Multi-Agent Evolve as published): free-form questions, scored by the judge; graded by
math-verify only where a pool question brings a reference answer (the seed file)."""

from __future__ import annotations

from dataclasses import dataclass

from agents.parsing import Parsed, Proposal, parse_question


@dataclass(frozen=True)
class MathFamily:
    name: str = "math"
    proposer_system: str = (
        "You write one new question for a student. The question must be clear, self-contained (give every fact "
        "needed), solvable, and have one short final answer. Write only the question, inside <question></question> "
        "tags. Do not answer it.")
    # Small models copy a demonstrated format far more often than a described one (agents/prompts.py).
    proposer_demonstrations: tuple[tuple[str, str], ...] = ((
        "Write a new question that takes a few steps of reasoning to solve.",
        "<question>A baker makes 24 muffins and sells 3 boxes of 6 muffins. How many muffins are left?</question>"),)

    def proposal_text(self, question: str, checkable: str | None) -> str | None:
        return f"<question>{question}</question>"

    def worked_answer(self, answer: str, checkable: str | None) -> str:
        return f"<answer>{answer}</answer>"

    def parse_proposal(self, response: str) -> Parsed:
        parsed = parse_question(response)
        return parsed if parsed.failure is not None else Parsed(Proposal(str(parsed.value)), None)


FAMILY = MathFamily()
