"""Diversity metrics on hand-computed cases."""

from __future__ import annotations

import math

import pytest

from selfplay.diversity import distinct_n, diversity_metrics

TEXTS = ["a b c d", "a b c e", "x y z w"]


def test_distinct_bigrams():
    # bigrams: ab bc cd | ab bc ce | xy yz zw: 9 in all, 7 distinct
    assert distinct_n(TEXTS) == pytest.approx(7 / 9)
    assert distinct_n(["same words here", "Same words, here!"]) == pytest.approx(2 / 4)
    assert math.isnan(distinct_n(["one"]))


def test_pairwise_similarity_and_near_duplicates():
    # shingles of 3 words: {abc, bcd}, {abc, bce}, {xyz, yzw}; Jaccard 1/3, 0, 0
    metrics = diversity_metrics("proposer", TEXTS, duplicate_threshold=0.3)
    assert metrics == {"proposer/distinct_2": pytest.approx(7 / 9),
                       "proposer/pairwise_similarity": pytest.approx(1 / 9),
                       "proposer/near_duplicate_share": pytest.approx(2 / 3)}
    assert diversity_metrics("proposer", TEXTS, duplicate_threshold=0.5)["proposer/near_duplicate_share"] == 0.0
    assert diversity_metrics("proposer", TEXTS[:1], duplicate_threshold=0.5) == {}
