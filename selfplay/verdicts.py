"""Which answers the judge scores. A verdict on an answer to a question without a reference answer is the solver's
reward, so every parsed one is judged. A verdict on an answer that is graded against a reference enters no reward
under `solver.verifiable=replace` and serves only the judge's training (its reward is agreement with the grade):
generating more of them than the judge trains on is generation for nothing. The budget says how many are worth
generating; `choose` spends it, a uniform random subset of the graded answers, across the calls of one iteration.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass


def graded_verdict_budget(verifiable: str, judge_trains: bool, train_samples: int | None,
                          reserved: int) -> int | None:
    """How many verdicts on graded answers one iteration should generate; None = all. None where they enter the
    solver's reward (`verifiable` other than replace); 0 where the judge does not train; with the judge's sample cap
    `train_samples`, what the cap leaves after the `reserved` verdicts that train in any case (on the new questions'
    quality and on the anchors), so that every one generated is trained."""
    if verifiable != "replace":
        return None
    if not judge_trains:
        return 0
    return None if train_samples is None else max(train_samples - reserved, 0)


@dataclass
class VerdictBudget:
    remaining: int | None  # verdicts on graded answers still to generate this iteration; None = no limit

    def choose(self, references: Sequence[str | None], parsed: Sequence[Sequence[bool]],
               rng: random.Random) -> list[tuple[bool, ...]]:
        """Per question (its reference answer or None) and per answer (whether it parsed): whether the judge scores
        it. Every parsed answer to a question without a reference; of the parsed answers to questions with one,
        all while the budget is unlimited, else a uniform random `remaining` of them, which the budget then lacks."""
        graded = [(question, answer) for question, (reference, row) in enumerate(zip(references, parsed))
                  if reference is not None for answer, ok in enumerate(row) if ok]
        if self.remaining is not None and len(graded) > self.remaining:
            graded = rng.sample(graded, self.remaining)
        if self.remaining is not None:
            self.remaining -= len(graded)
        chosen = set(graded)
        return [tuple(ok and (reference is None or (question, answer) in chosen) for answer, ok in enumerate(row))
                for question, (reference, row) in enumerate(zip(references, parsed))]
