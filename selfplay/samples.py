"""The run's sample table: one row per exchange, readable by a person. Pure code.

A row is one role's turn with what it was about and what it got: the question (the one the proposer wrote, the
one the solver answered, or the one the judge scored), the response, the verdict the judge gave it (its text and
parsed score), the verifiable grade where the question has a reference answer, and the reward (None = masked).
Judge rows carry their own verdict in `response`/`score` and the grade of the answer they judged, so a reader can
see the judge agree or disagree with the truth. Left out: deciding which rows to keep (the driver's limit).
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, fields

from agents.players import Turn
from selfplay.scoring import IterationScores, IterationTurns

TEXT_LIMIT = 1500  # characters of any text cell: tables stay small whatever the model writes


@dataclass(frozen=True)
class Exchange:
    iteration: int
    role: str
    question: str
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


def _row(iteration: int, turn: Turn, question: str, verdict: Turn | None, grade: bool | None,
         reward: float | None) -> Exchange:
    is_judge = turn.role.value == "judge"
    return Exchange(iteration=iteration, role=turn.role.value, question=_clip(question),
                    response=_clip(turn.sample.text),
                    parsed=_parsed(turn), failure=turn.parsed.failure.value if turn.parsed.failure else "",
                    verdict="" if is_judge or verdict is None else _clip(verdict.sample.text),
                    score=_score(turn if is_judge else verdict), grade=grade, reward=reward)


def exchanges(iteration: int, turns: IterationTurns, scores: IterationScores) -> list[Exchange]:
    """Every turn of the iteration as an exchange row: proposals first, then each question's answers."""
    reward_of = {id(scored.turn): scored.reward for scored in scores.turns}
    rows: list[Exchange] = []
    for proposal, verdict in zip(turns.proposals, turns.quality_verdicts):
        question = _parsed(proposal)
        rows.append(_row(iteration, proposal, question, verdict, None, reward_of.get(id(proposal))))
        if verdict is not None:
            rows.append(_row(iteration, verdict, question, None, None, reward_of.get(id(verdict))))
    for item, attempts, verdicts, grades in zip(turns.solve_items, turns.attempts, turns.answer_verdicts,
                                                turns.grades):
        for attempt, verdict, grade in zip(attempts, verdicts, grades):
            rows.append(_row(iteration, attempt, item.question, verdict, grade, reward_of.get(id(attempt))))
            if verdict is not None:
                rows.append(_row(iteration, verdict, item.question, None, grade, reward_of.get(id(verdict))))
    return rows


def table_rows(rows: list[Exchange], per_role: int) -> list[list]:
    """Up to `per_role` rows of each role, as lists in `COLUMNS` order (what the trackers take)."""
    kept: dict[str, list[list]] = {}
    for row in rows:
        role_rows = kept.setdefault(row.role, [])
        if len(role_rows) < per_role:
            role_rows.append(list(astuple(row)))
    return [row for role_rows in kept.values() for row in role_rows]
