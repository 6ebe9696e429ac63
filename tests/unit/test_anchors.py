"""Anchor questions for the judge: drawing, spoiling, their rewards and the drift metrics, by hand."""

import random

import pytest

from agents.roles import Role
from selfplay.anchors import Anchor, draw_anchors, spoiled
from selfplay.question_pool import PoolQuestion, QuestionSource
from selfplay.scoring import IterationTurns, score_iteration
from tests.unit.test_scoring import SETTINGS, _turn


def _seed(index: int, text: str, answer: str | None = "1") -> PoolQuestion:
    return PoolQuestion(id=f"s{index}", text=text, answer=answer, source=QuestionSource.SEED, added_iteration=0)


def test_spoiled_keeps_the_first_half_of_the_words_and_drops_the_question():
    assert spoiled("A baker makes 24 muffins and sells 3 boxes of 6. How many are left?") == \
        "A baker makes 24 muffins and sells"  # 7 of 14 words
    assert spoiled("What is 12 + 30?") == "What is"
    assert spoiled("Two words?") == "Two"  # at least one word dropped, at least one kept


def test_anchors_alternate_good_and_spoiled_from_seeds_with_references_only():
    questions = [_seed(0, "What is 2 + 2?"), _seed(1, "What is 3 + 5?"), _seed(2, "No reference here?", None),
                 PoolQuestion(id="p0", text="A proposed one?", answer="4", source=QuestionSource.PROPOSED,
                              added_iteration=1)]
    anchors = draw_anchors(questions, 4, random.Random(0))
    assert [anchor.good for anchor in anchors] == [True, False]  # only two seeds qualify
    texts = {"What is 2 + 2?", "What is 3 + 5?"}
    assert anchors[0].text in texts and anchors[1].text in {spoiled(text) for text in texts}
    assert draw_anchors(questions, 4, random.Random(0)) == anchors  # seeded
    assert draw_anchors(questions, 0, random.Random(0)) == []


def test_anchor_verdicts_earn_agreement_with_their_label_and_show_drift():
    # The proposal is scored 10; the good anchor 8 and the bad one 7 (threshold 6: the bad one is on the wrong
    # side). Rewards (truth weight 0.5, format 1): good 0.5 + 0.5 * (1 - |7/9 - 1|) = 1 - 1/9;
    # bad 0.5 + 0.5 * (1 - 6/9) = 0.5 + 1/6.
    turns = IterationTurns(proposals=(_turn(Role.PROPOSER, "Q?"),), quality_verdicts=(_turn(Role.JUDGE, 10),),
                           solve_items=(), attempts=(), answer_verdicts=(), grades=(),
                           anchors=(Anchor("What is 2 + 2?", True), Anchor("What is", False)),
                           anchor_verdicts=(_turn(Role.JUDGE, 8), _turn(Role.JUDGE, 7)))
    scores = score_iteration(turns, SETTINGS)
    judge = [scored.reward for scored in scores.turns if scored.turn.role is Role.JUDGE]
    assert judge == pytest.approx([1.0, 1 - 1 / 9, 0.5 + 1 / 6])  # the quality verdict: its format score
    assert scores.metrics["judge/anchor_accuracy"] == 0.5
    assert scores.metrics["judge/anchor_good_score_mean"] == 8 and scores.metrics["judge/anchor_bad_score_mean"] == 7
    assert scores.metrics["judge/question_score_drift"] == 2.0  # 10 on proposals against 8 on good seeds
