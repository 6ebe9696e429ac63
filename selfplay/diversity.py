"""How varied the questions are, so a proposer that keeps writing the same question shows up before the loop stalls:
the share of distinct word bigrams, the mean pairwise similarity (the exact Jaccard of the word shingles the pool's
MinHash de-duplication estimates) and the share of questions with a near-duplicate among the others. Pure code."""

from __future__ import annotations

import re
from itertools import combinations

from selfplay.question_pool import shingles

MAX_TEXTS = 200  # the newest texts measured: pairs grow with the square


def distinct_n(texts: list[str], n: int = 2) -> float:
    """Distinct word n-grams / all word n-grams over the texts (lowercased); nan when there is none."""
    grams = [tuple(words[start:start + n]) for words in (re.findall(r"\w+", text.lower()) for text in texts)
             for start in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def jaccard(first: set[str], second: set[str]) -> float:
    union = first | second
    return len(first & second) / len(union) if union else 1.0


def diversity_metrics(prefix: str, texts: list[str], duplicate_threshold: float) -> dict[str, float]:
    """`<prefix>/distinct_2`, `/pairwise_similarity` and `/near_duplicate_share` of the newest MAX_TEXTS texts;
    nothing for fewer than two."""
    texts = texts[-MAX_TEXTS:]
    if len(texts) < 2:
        return {}
    sets = [shingles(text) for text in texts]
    similar = [jaccard(a, b) for a, b in combinations(sets, 2)]
    duplicated = [any(jaccard(sets[i], sets[j]) >= duplicate_threshold for j in range(len(sets)) if j != i)
                  for i in range(len(sets))]
    return {f"{prefix}/distinct_2": distinct_n(texts), f"{prefix}/pairwise_similarity": sum(similar) / len(similar),
            f"{prefix}/near_duplicate_share": sum(duplicated) / len(duplicated)}
