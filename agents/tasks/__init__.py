"""Task families: what the proposer writes and how a proposal is checked. One module per family; the run picks one
by name (`task.family`), and the loop only sees the `TaskFamily` seam, so a new family is a new module plus one line
in `FAMILIES`.

A family gives the proposer its output format (a system message and worked examples) and parses a response
into a `Proposal`: the question and, for a grounded family, the reference answer an outside check computed. Solver
answers to a question with a reference answer are graded against it (rewards.grading), the judge is rewarded for
agreeing with that grade, and the proposer's difficulty reward comes from how often the solver got it right.
"""

from __future__ import annotations

from typing import Protocol

from agents.parsing import Parsed
from agents.tasks import arithmetic, calculation, math


class TaskFamily(Protocol):
    name: str
    proposer_system: str
    # (request, response) pairs; each proposal request is shown one of them, in turn (`demonstration`)
    proposer_demonstrations: tuple[tuple[str, str], ...]

    def parse_proposal(self, response: str) -> Parsed:
        """A Proposal as the value, or the format failure (UNCHECKABLE where the outside check refuses it)."""
        ...

    def proposal_text(self, question: str, checkable: str | None) -> str | None:
        """A seed question (with its machine-checkable form, where the seed file gives one) written as this
        family's proposer writes it, for the SFT cold start; None where the seed lacks what the format needs.
        Raises ValueError for a checkable form the family's own check refuses."""
        ...

    def worked_answer(self, answer: str, checkable: str | None) -> str:
        """The solver's response to a seed question with reference `answer`, for the SFT cold start."""
        ...


FAMILIES: dict[str, TaskFamily] = {family.name: family for family in (math.FAMILY, arithmetic.FAMILY,
                                                                        calculation.FAMILY)}


def demonstration(family: TaskFamily, index: int) -> tuple[str, str]:
    """The worked example shown before proposal request `index` (counted from any offset: a seed, a step)."""
    return family.proposer_demonstrations[index % len(family.proposer_demonstrations)]


def task_family(name: str) -> TaskFamily:
    if name not in FAMILIES:
        raise ValueError(f"unknown task family {name!r} (known: {', '.join(sorted(FAMILIES))})")
    return FAMILIES[name]
