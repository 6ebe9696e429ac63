"""The shipped harder held-out set, configs/heldout/arithmetic-hard.jsonl (built by launch/build_heldout.py --hard):
whole-number answers, three or more operations as the script counts them, no repeats, no seed question."""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

import pytest

from rewards.arithmetic import evaluate

ROOT = Path(__file__).resolve().parents[2]
HARD = ROOT / "configs" / "heldout" / "arithmetic-hard.jsonl"
SEEDS = ROOT / "configs" / "seeds" / "arithmetic.jsonl"


@pytest.fixture(scope="module")
def build_heldout():
    """The script, imported without the mathematics_dataset generator (only its build step needs it)."""
    spec = importlib.util.spec_from_file_location("build_heldout_script", ROOT / "launch" / "build_heldout.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return [json.loads(line) for line in HARD.read_text().splitlines()]


def test_rows_have_question_whole_answer_and_source(rows):
    assert len(rows) == 200
    for row in rows:
        assert set(row) == {"question", "answer", "source"}
        assert row["question"] and row["source"].startswith("mathematics_dataset arithmetic__")
        assert row["answer"].isdigit() and len(row["answer"]) <= 6, row


def test_every_question_has_three_or_more_operations(build_heldout, rows):
    for row in rows:
        count = build_heldout.operation_count(row["question"])
        assert count is not None and count >= 3, row
        assert evaluate(ast.unparse(build_heldout.expression_of(row["question"]))) == int(row["answer"]), row


def test_questions_are_distinct_and_not_seeds(rows):
    questions = [row["question"] for row in rows]
    assert len(set(questions)) == len(questions)
    seeds = {json.loads(line)["question"] for line in SEEDS.read_text().splitlines() if line.strip()}
    assert not seeds & set(questions)


def test_operation_count_parses_the_generators_phrasings(build_heldout):
    count = build_heldout.operation_count
    assert count("Calculate 168/189*1377/34.") == 3
    assert count("What is the value of (2 - 18/10)/(2346/129030)?") == 4
    assert count("7 \u00d7 3 \u00f7 1 \u2212 2") == 3
    assert count("Divide 1152 by 384.") is None and count("What is 2**3 + 1?") is None
