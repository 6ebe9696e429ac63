"""Bare-calculation seed questions for the arithmetic family ("What is 84 - 27?"), with expression and answer.

    python launch/calculation_seeds.py --count 256 --seed 1 [--exclude grade_school_math/data/train.jsonl] \
        >> configs/seeds/arithmetic.jsonl

Why: after the SFT cold start the solver is right on 7-20 % of the templated word problems, so most of its answer
groups are all wrong and teach GRPO nothing. Bare calculations sit nearer its ability (the SFT model answered 28 %
of the committed ones right, greedy), where the answers of a group differ. Most have one operator: a two-digit
number plus or minus a small or round one, a product of 2-40 and 2-9, an exact division by 2-9; about one in ten has
two operators over small numbers. Every result is whole and non-negative. No two questions share their numbers in
the same order: the pool's duplicate check reads words, and "84 - 27" and "84 + 27" are the same words to it.
`--exclude` drops every expression that occurs among the calculator annotations (`<<48/2=24>>`) of a GSM8K file,
so that held-out sets built from it share no calculation with the seeds (most small products and quotients are
among them). Prints JSONL rows; the last stderr line counts what was dropped.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

import _bootstrap  # noqa: F401

from rewards.arithmetic import as_answer, evaluate  # noqa: E402

PHRASES = ("What is {}?", "Calculate {}.", "Compute {}.", "Find the value of {}.")
TWO_OPERATORS = ("{a} * {b} + {c}", "{a} * {b} - {c}", "{a} + {b} - {c}", "{a} + {b} * {c}", "({a} + {b}) * {c}",
                 "{q} / {b} + {c}", "{a} - {q} / {b}")
ANNOTATION = re.compile(r"<<([^=<>]+)=[^<>]+>>")
MAX_MISSES = 10_000  # draws in a row that give no new row: the distinct calculations are used up


def _small(rng: random.Random) -> int:
    """2-9, or a round ten."""
    return rng.randint(2, 9) if rng.random() < 0.5 else 10 * rng.randint(1, 9)


def _one_operator(rng: random.Random) -> str:
    operator = rng.choice("+-*/")
    if operator in "+-":
        return f"{rng.randint(10, 99)} {operator} {_small(rng)}"  # a negative difference is drawn again
    if operator == "*":
        return f"{rng.randint(2, 40)} * {rng.randint(2, 9)}"
    divisor = rng.randint(2, 9)
    return f"{divisor * rng.randint(2, 30)} / {divisor}"


def _two_operators(rng: random.Random) -> str:
    template, divisor = rng.choice(TWO_OPERATORS), rng.randint(2, 5)  # b divides q exactly where q appears
    return template.format(a=rng.randint(2, 9), b=divisor, c=rng.randint(2, 20), q=divisor * rng.randint(2, 10))


def gsm8k_calculations(path: Path) -> set[str]:
    """The calculator annotations of a GSM8K JSONL file, spaces removed."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {expression.replace(" ", "") for row in rows for expression in ANNOTATION.findall(row["answer"])}


def calculation_seeds(count: int, seed: int, exclude: set[str] = frozenset()) -> tuple[list[dict], int]:
    """`count` seed rows (question, answer, checkable), most with one operator; and how many drawn
    expressions were dropped because `exclude` (spaces removed) holds them. Raises ValueError when no more distinct
    calculations can be found."""
    rng = random.Random(seed)
    rows, numbers_seen, excluded, misses = [], set(), 0, 0
    while len(rows) < count:
        if misses == MAX_MISSES:
            raise ValueError(f"only {len(rows)} distinct calculations found, {count} asked for")
        misses += 1
        expression = _one_operator(rng) if rng.random() < 0.95 else _two_operators(rng)
        phrase = rng.choice(PHRASES)  # drawn before any check, so a dropped draw leaves the later ones as they were
        value = evaluate(expression)
        numbers = tuple(re.findall(r"\d+", expression))
        if value.denominator != 1 or value < 0 or numbers in numbers_seen:
            continue
        if expression.replace(" ", "") in exclude:
            excluded += 1
            continue
        numbers_seen.add(numbers)
        misses = 0
        rows.append({"question": phrase.format(expression), "answer": as_answer(value),
                     "checkable": expression})
    return rows, excluded


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=256)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--exclude", type=Path, help="a GSM8K JSONL file whose calculations the seeds must avoid")
    args = parser.parse_args(argv)
    if args.exclude is not None and not args.exclude.is_file():
        print(f"calculation_seeds: {args.exclude} not found", file=sys.stderr)
        return 2
    try:
        rows, excluded = calculation_seeds(args.count, args.seed,
                                           gsm8k_calculations(args.exclude) if args.exclude else set())
    except ValueError as error:
        print(f"calculation_seeds: {error}", file=sys.stderr)
        return 2
    sys.stdout.write("".join(json.dumps(row) + "\n" for row in rows))
    print(f"calculation_seeds: {len(rows)} rows; {excluded} drawn expressions dropped as excluded", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
