"""The run's sample table: one row per exchange, readable by a person. Pure code.

A row is one role's turn with what it was about and what it got: its kind (a proposal, an answer, a verdict on a
question, on an answer or on an anchor question), the question (the one the proposer wrote, the one the solver
answered, or the one the judge scored), the reference answer where the question has one, the answer a judge row
judged, the response, the verdict the judge gave it (its text and parsed score), the verifiable grade and the
reward (None = masked). Judge rows carry their own verdict in `response`/`score` and the grade of the answer they
judged, so a reader can see the judge agree or disagree with the truth. `table_rows` keeps a seeded random draw of
each kind, so every kind shows whatever the batch sizes.
"""

from __future__ import annotations

import random
from dataclasses import astuple, dataclass, fields

from agents.players import Turn
from selfplay.scoring import IterationScores, IterationTurns

TEXT_LIMIT = 1500  # characters of any text cell: tables stay small whatever the model writes
PROPOSAL, ANSWER = "proposal", "answer"
QUESTION_VERDICT, ANSWER_VERDICT, ANCHOR_VERDICT = "question_verdict", "answer_verdict", "anchor_verdict"


@dataclass(frozen=True)
class Exchange:
    iteration: int
    role: str
    kind: str  # PROPOSAL, ANSWER, QUESTION_VERDICT, ANSWER_VERDICT or ANCHOR_VERDICT
    question: str
    reference: str  # the question's reference answer; for an anchor, whether it is a known-good question
    answer: str  # the answer an answer verdict judged ("" on other rows)
    response: str
    parsed: str  # the parsed question, answer or score; "" where the response did not parse
    failure: str  # the format failure, "" where it parsed
    verdict: str  # the judge's verdict text on this turn ("" for judge rows and for turns nobody judged)
    score: int | None  # the judge's parsed score (on this turn; for judge rows, the score it gave)
    grade: bool | None  # the verifiable grade of the answer (solver and judge rows with a reference answer)
    reward: float | None


COLUMNS = [field.name for field in fields(Exchange)]


def _clip(text: str) -> str:
    return text if len(text) <= TEXT_LIMIT else text[:TEXT_LIMIT] + " [...]"


def _parsed(turn: Turn) -> str:
    return "" if turn.parsed.value is None else _clip(str(turn.parsed.value))


def _score(verdict: Turn | None) -> int | None:
    return verdict.parsed.value if verdict is not None and verdict.parsed.failure is None else None


def _row(iteration: int, kind: str, turn: Turn, question: str, verdict: Turn | None, grade: bool | None,
         reward: float | None, reference: str | None = None, answer: str = "") -> Exchange:
    is_judge = turn.role.value == "judge"
    return Exchange(iteration=iteration, role=turn.role.value, kind=kind, question=_clip(question),
                    reference=reference or "", answer=_clip(answer), response=_clip(turn.sample.text),
                    parsed=_parsed(turn), failure=turn.parsed.failure.value if turn.parsed.failure else "",
                    verdict="" if is_judge or verdict is None else _clip(verdict.sample.text),
                    score=_score(turn if is_judge else verdict), grade=grade, reward=reward)


def exchanges(iteration: int, turns: IterationTurns, scores: IterationScores) -> list[Exchange]:
    """Every turn of the iteration as an exchange row: proposals first, then each question's answers, then the
    anchor verdicts."""
    reward_of = {id(scored.turn): scored.reward for scored in scores.turns}
    rows: list[Exchange] = []
    for proposal, verdict in zip(turns.proposals, turns.quality_verdicts):
        question = _parsed(proposal)
        reference = getattr(proposal.parsed.value, "reference", None)
        rows.append(_row(iteration, PROPOSAL, proposal, question, verdict, None, reward_of.get(id(proposal)),
                         reference))
        if verdict is not None:
            rows.append(_row(iteration, QUESTION_VERDICT, verdict, question, None, None, reward_of.get(id(verdict)),
                             reference))
    for item, attempts, verdicts, grades in zip(turns.solve_items, turns.attempts, turns.answer_verdicts,
                                                turns.grades):
        for attempt, verdict, grade in zip(attempts, verdicts, grades):
            rows.append(_row(iteration, ANSWER, attempt, item.question, verdict, grade, reward_of.get(id(attempt)),
                             item.reference_answer))
            if verdict is not None:
                rows.append(_row(iteration, ANSWER_VERDICT, verdict, item.question, None, grade,
                                 reward_of.get(id(verdict)), item.reference_answer, attempt.sample.text))
    for anchor, verdict in zip(turns.anchors, turns.anchor_verdicts):
        rows.append(_row(iteration, ANCHOR_VERDICT, verdict, anchor.text, None, None, reward_of.get(id(verdict)),
                         "known good" if anchor.good else "known bad"))
    return rows


def table_rows(rows: list[Exchange], per_kind: int, seed: int) -> list[list]:
    """Up to `per_kind` rows of each (role, kind), drawn at random with `seed` and kept in their order, as lists
    in `COLUMNS` order (what the trackers take)."""
    groups: dict[tuple[str, str], list[int]] = {}
    for index, row in enumerate(rows):
        groups.setdefault((row.role, row.kind), []).append(index)
    draw = random.Random(seed)
    kept = sorted(index for indices in groups.values()
                  for index in draw.sample(indices, min(per_kind, len(indices))))
    return [list(astuple(rows[index])) for index in kept]


PROPOSAL_COLUMNS = ["iteration", "question", "checkable", "reference", "reference_by_form", "verified", "quality",
                    "solve_rate", "accepted", "refused"]


def proposal_rows(iteration: int, turns: IterationTurns, scores: IterationScores) -> list[list]:
    """Every parsed proposal of the iteration with what the gate saw (`PROPOSAL_COLUMNS`): its checkable form and
    reference where it has them, whether the reference was verified (and whether by its own form), the judge's
    normalised quality, the solve rate, and whether it entered the pool or why not. The record to audit what the
    pool takes."""
    rows = []
    for proposal, result in zip(turns.proposals, scores.proposer_results):
        if proposal.parsed.failure is not None:
            continue
        value = proposal.parsed.value
        rows.append([iteration, _clip(str(value)), getattr(value, "checkable", None), getattr(value, "reference", None),
                     getattr(value, "reference_by_form", False), result.verified, result.quality, result.solve_rate,
                     result.accepted, result.refused])
    return rows
