"""Bare-calculation seed questions for the arithmetic family ("What is 84 - 27?"), with expression and answer.

    python launch/calculation_seeds.py --count 256 --seed 1 [--exclude ../shared/data/gsm8k/train.jsonl] \
        >> configs/seeds/arithmetic.jsonl

Why: after the SFT cold start the solver is right on 7-20 % of the templated word problems, so most of its answer
groups are all wrong and teach GRPO nothing. Bare calculations sit nearer its ability (about half right), where the
answers of a group differ. One or two operators over whole numbers of one to three digits; every division is exact
and every result whole and non-negative. No two questions share their numbers in the same order: the pool's
duplicate check reads words, and "84 - 27" and "84 + 27" are the same words to it. `--exclude` drops every
expression that occurs among the calculator annotations (`<<48/2=24>>`) of a GSM8K file, so that held-out sets
built from it share no calculation with the seeds. Prints JSONL rows; the last stderr line counts what was dropped.
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


def _operand(rng: random.Random, most_digits: int = 3) -> int:
    digits = rng.choices(range(1, most_digits + 1), weights=(3, 4, 2)[:most_digits])[0]
    return rng.randint(max(2, 10 ** (digits - 1)), 10**digits - 1)


def _one_operator(rng: random.Random) -> str:
    operator = rng.choice("+-*/")
    if operator == "+":
        return f"{_operand(rng)} + {_operand(rng)}"
    if operator == "-":
        small, big = sorted((_operand(rng), _operand(rng)))
        return f"{big} - {small}"
    if operator == "*":
        return f"{_operand(rng, 2)} * {rng.randint(2, 12)}"
    divisor = rng.randint(2, 20)
    return f"{divisor * rng.randint(2, 50)} / {divisor}"


def _two_operators(rng: random.Random) -> str:
    template, divisor = rng.choice(TWO_OPERATORS), rng.randint(2, 12)  # b divides q exactly where q appears
    return template.format(a=_operand(rng, 2), b=divisor, c=_operand(rng, 2), q=divisor * rng.randint(2, 30))


def gsm8k_calculations(path: Path) -> set[str]:
    """The calculator annotations of a GSM8K JSONL file, spaces removed."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {expression.replace(" ", "") for row in rows for expression in ANNOTATION.findall(row["answer"])}


def calculation_seeds(count: int, seed: int, exclude: set[str] = frozenset()) -> tuple[list[dict], int]:
    """`count` seed rows (question, answer, checkable), about 70 % with one operator; and how many drawn
    expressions were dropped because `exclude` (spaces removed) holds them."""
    rng = random.Random(seed)
    rows, numbers_seen, excluded = [], set(), 0
    while len(rows) < count:
        expression = _one_operator(rng) if rng.random() < 0.7 else _two_operators(rng)
        phrase = rng.choice(PHRASES)  # drawn before any check, so a dropped draw leaves the later ones as they were
        value = evaluate(expression)
        numbers = tuple(re.findall(r"\d+", expression))
        if value.denominator != 1 or value < 0 or numbers in numbers_seen:
            continue
        if expression.replace(" ", "") in exclude:
            excluded += 1
            continue
        numbers_seen.add(numbers)
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
    rows, excluded = calculation_seeds(args.count, args.seed, gsm8k_calculations(args.exclude) if args.exclude else
                                       set())
    sys.stdout.write("".join(json.dumps(row) + "\n" for row in rows))
    print(f"calculation_seeds: {len(rows)} rows; {excluded} drawn expressions dropped as excluded", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
