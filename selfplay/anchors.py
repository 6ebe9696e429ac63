"""Anchor questions: known-good and known-bad questions the judge scores beside each iteration's proposals, so its
question-quality verdicts are checked against something, trained on it, and watched for drift. Pure code.

A known-good anchor is a seed question with a reference answer (written and checked by people). A known-bad one is
such a seed cut to the first half of its words: a question that no longer asks anything a student could answer.
The judge's quality verdicts on proposals have no truth to compare with; on anchors they do, so their reward is
agreement with the label (rewards.scores.judge_reward, the label as the grade), and the gap between its scores on
proposals and on known-good questions shows when the judge starts to praise whatever it is shown.

Leaves out judging (the judge role) and the alert's line (selfplay.iteration).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from selfplay.question_pool import PoolQuestion, QuestionSource


@dataclass(frozen=True)
class Anchor:
    text: str
    good: bool  # a well-posed seed question (True) or one cut short (False)


def spoiled(text: str) -> str:
    """The first half of `text`'s words (at least one word dropped), its question gone."""
    words = text.split()
    return " ".join(words[: max(1, min(len(words) - 1, len(words) // 2))]).rstrip("?.,;:!")


def draw_anchors(questions: list[PoolQuestion], count: int, rng: random.Random) -> list[Anchor]:
    """`count` anchors, good and spoiled alternately, from distinct seeds with reference answers (fewer when the
    pool holds fewer such seeds)."""
    seeds = [question for question in questions if question.source is QuestionSource.SEED
             and question.answer is not None and len(question.text.split()) >= 2]
    chosen = rng.sample(seeds, min(count, len(seeds)))
    return [Anchor(question.text, True) if index % 2 == 0 else Anchor(spoiled(question.text), False)
            for index, question in enumerate(chosen)]
