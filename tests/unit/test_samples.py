"""The sample table: each row one exchange with its question, verdict, grade and reward (hand-built iteration)."""

from agents.parsing import FormatFailure, Parsed, Proposal
from agents.players import Turn
from agents.roles import Role
from rewards.scores import ProposerReward
from rollout.records import Sample
from selfplay.anchors import Anchor
from selfplay.samples import COLUMNS, PROPOSAL_COLUMNS, TEXT_LIMIT, exchanges, proposal_rows, table_rows
from selfplay.scoring import IterationScores, IterationTurns, ScoredTurn, SolveItem


def _turn(role: Role, text: str, parsed: Parsed) -> Turn:
    return Turn(role, (1, 2), Sample(text, (3,), (-0.5,), "stop"), parsed, 1.0, 0)


def _iteration():
    proposal = _turn(Role.PROPOSER, "<question>What is 2+3?</question>", Parsed(Proposal("What is 2+3?", "5"), None))
    broken_proposal = _turn(Role.PROPOSER, "no tags", Parsed(None, FormatFailure.MISSING_TAG))
    quality = _turn(Role.JUDGE, "Clear. <score>8</score>", Parsed(8, None))
    right = _turn(Role.SOLVER, "<answer>5</answer>", Parsed("5", None))
    unparsed = _turn(Role.SOLVER, "five", Parsed(None, FormatFailure.MISSING_TAG))
    verdict = _turn(Role.JUDGE, "Correct. <score>10</score>", Parsed(10, None))
    anchor_verdict = _turn(Role.JUDGE, "Cut short. <score>2</score>", Parsed(2, None))
    turns = IterationTurns(
        proposals=(proposal, broken_proposal), quality_verdicts=(quality, None),
        solve_items=(SolveItem("What is 2+3?", "seed-1", "5", None),),
        attempts=((right, unparsed),), answer_verdicts=((verdict, None),), grades=((True, False),),
        anchors=(Anchor("What is", False),), anchor_verdicts=(anchor_verdict,))
    scores = IterationScores(
        turns=(ScoredTurn(right, 0.9, "solver:0"), ScoredTurn(unparsed, 0.0, "solver:0"),
               ScoredTurn(verdict, 1.0, "judge"), ScoredTurn(proposal, 0.6, "proposer"),
               ScoredTurn(broken_proposal, 0.0, "proposer"), ScoredTurn(quality, None, "judge"),
               ScoredTurn(anchor_verdict, 1.0, "judge")),
        proposer_results=(ProposerReward(0.6, True, 7 / 9, 0.0, solve_rate=1.0, verified=True),
                          ProposerReward(0.0, False, None, None)),
        answer_scores=((1.0, 0.0),), metrics={})
    return turns, scores


def test_each_row_is_one_exchange_with_question_reference_verdict_grade_and_reward():
    rows = exchanges(3, *_iteration())
    simple = [(r.role, r.kind, r.question, r.reference, r.parsed, r.failure, r.verdict, r.score, r.grade, r.reward)
              for r in rows]
    assert simple == [
        ("proposer", "proposal", "What is 2+3?", "5", "What is 2+3?", "", "Clear. <score>8</score>", 8, None, 0.6),
        ("judge", "question_verdict", "What is 2+3?", "5", "8", "", "", 8, None, None),  # masked reward
        ("proposer", "proposal", "", "", "", "missing_tag", "", None, None, 0.0),
        ("solver", "answer", "What is 2+3?", "5", "5", "", "Correct. <score>10</score>", 10, True, 0.9),
        ("judge", "answer_verdict", "What is 2+3?", "5", "10", "", "", 10, True, 1.0),  # sees the answer's grade
        ("solver", "answer", "What is 2+3?", "5", "", "missing_tag", "", None, False, 0.0),
        ("judge", "anchor_verdict", "What is", "known bad", "2", "", "", 2, None, 1.0),
    ]
    assert all(row.iteration == 3 for row in rows)
    assert rows[3].response == "<answer>5</answer>" and rows[4].response == "Correct. <score>10</score>"
    assert rows[4].answer == "<answer>5</answer>"  # the answer the judge judged
    assert [row.answer for row in rows if row.kind != "answer_verdict"] == [""] * 6


def test_table_draws_a_seeded_sample_of_each_kind_in_column_order():
    rows = exchanges(1, *_iteration())
    table = table_rows(rows, per_kind=1, seed=0)
    kinds = [(row[COLUMNS.index("role")], row[COLUMNS.index("kind")]) for row in table]
    assert sorted(kinds) == sorted({("proposer", "proposal"), ("judge", "question_verdict"), ("solver", "answer"),
                                    ("judge", "answer_verdict"), ("judge", "anchor_verdict")})
    assert all(len(row) == len(COLUMNS) for row in table)
    assert table_rows(rows, per_kind=1, seed=0) == table  # the same seed draws the same rows
    draws = {tuple(row[COLUMNS.index("failure")] for row in table_rows(rows, 1, seed) if row[1] == "solver")
             for seed in range(20)}
    assert draws == {("",), ("missing_tag",)}  # either answer can be drawn, not always the first
    assert table_rows(rows, per_kind=0, seed=0) == []


def test_long_texts_are_clipped():
    long_answer = _turn(Role.SOLVER, "x" * 10_000, Parsed(None, FormatFailure.MISSING_TAG))
    turns = IterationTurns((), (), (SolveItem("q" * 5000, "id", None, None),), ((long_answer,),), ((None,),),
                           ((None,),))
    row = exchanges(1, turns, IterationScores((), (), ((0.0,),), {}))[0]
    assert len(row.response) == TEXT_LIMIT + len(" [...]") and len(row.question) == TEXT_LIMIT + len(" [...]")


def test_the_proposals_table_lists_every_parsed_proposal_with_what_the_gate_saw():
    rows = proposal_rows(2, *_iteration())  # the broken proposal did not parse: no row
    assert [dict(zip(PROPOSAL_COLUMNS, row)) for row in rows] == [
        {"iteration": 2, "question": "What is 2+3?", "checkable": None, "reference": "5", "reference_by_form": False,
         "verified": True, "quality": 7 / 9, "solve_rate": 1.0, "accepted": True, "refused": None}]
