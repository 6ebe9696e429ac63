"""launch/calculation_seeds.py, run as users run it, and the bare calculations it wrote into the arithmetic seeds."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from agents.tasks import task_family
from rewards.arithmetic import evaluate
from selfplay.config import load_config
from selfplay.question_pool import QuestionPool, load_seed_file
from selfplay.sft import sft_examples, step_examples

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "launch/calculation_seeds.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def rows_of(result: subprocess.CompletedProcess) -> list[dict]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_rows_are_whole_distinct_checkable_calculations():
    rows = rows_of(run("--count", "200", "--seed", "3"))
    assert len(rows) == 200
    for row in rows:
        value = evaluate(row["checkable"])
        assert value.denominator == 1 and value >= 0 and row["answer"] == str(value.numerator)
        assert row["checkable"] in row["question"]
        assert 1 <= len(re.findall(r" [-+*/] ", row["checkable"])) <= 2
    numbers = [tuple(re.findall(r"\d+", row["checkable"])) for row in rows]
    assert len(set(numbers)) == len(numbers)
    assert {operator for row in rows for operator in "+-*/" if f" {operator} " in row["checkable"]} == set("+-*/")
    assert rows_of(run("--count", "200", "--seed", "3")) == rows


def test_excluded_calculations_are_dropped_and_counted(tmp_path):
    unfiltered = rows_of(run("--count", "20", "--seed", "5"))
    excluded = unfiltered[2:5]
    annotations = "".join(f"<<{row['checkable'].replace(' ', '')}={row['answer']}>>" for row in excluded)
    gsm8k = tmp_path / "train.jsonl"
    gsm8k.write_text(json.dumps({"question": "q", "answer": f"Work: {annotations}\n#### 1"}) + "\n")
    result = run("--count", "20", "--seed", "5", "--exclude", str(gsm8k))
    rows = rows_of(result)
    assert len(rows) == 20 and not [row for row in rows if row in excluded]
    assert rows[:17] == [row for row in unfiltered if row not in excluded]
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line == "calculation_seeds: 20 rows; 3 drawn expressions dropped as excluded"


def test_a_missing_exclude_file_is_one_line_and_status_2(tmp_path):
    result = run("--exclude", str(tmp_path / "absent.jsonl"))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == f"calculation_seeds: {tmp_path / 'absent.jsonl'} not found"


def test_asking_for_more_calculations_than_exist_is_one_line_and_status_2():
    result = run("--count", "100000")
    assert result.returncode == 2 and result.stdout == ""
    expected = r"calculation_seeds: only \d+ distinct calculations found, 100000 asked for"
    assert re.fullmatch(expected, result.stderr.strip())


def test_the_arithmetic_config_shows_the_solver_word_problems_and_the_proposer_calculations_in_its_cold_start():
    config = load_config(ROOT / "configs/arithmetic-cpu.yaml")
    assert config.task.family == "calculation"
    seeds = load_seed_file(ROOT / config.pool.seed_file)
    pool = QuestionPool(2000, config.pool.duplicate_threshold, 0.9, 2, 0.3, seed=0)
    assert all(pool.add(seed).outcome.name == "ACCEPTED" for seed in seeds) and len(pool) == len(seeds) == 312
    examples = sft_examples(seeds, task_family(config.task.family))
    taken = [example for step in range(config.sft.steps)
             for example in step_examples(examples, step, config.sft.batch_size)]
    word_problems = seeds[:56]
    bare = re.compile(r"(What is|Calculate|Compute|Find the value of) [\d(]")
    assert not any(bare.match(seed.text) for seed in word_problems)
    assert all(bare.match(seed.text) for seed in seeds[56:])
    # one pass over 112 examples: each word problem's worked answer (no proposal: the proposer writes calculations),
    # then 28 calculations, each as a worked answer and as a proposal
    assert len(taken) == len({(example.role, example.response) for example in taken}) == 112
    solver = [example.messages[-1]["content"] for example in taken if example.role == "solver"]
    proposer = [example.response for example in taken if example.role == "proposer"]
    assert solver[:56] == [seed.text for seed in word_problems] and len(solver) == 84
    assert proposer == [f"<question>{seed.text}</question>" for seed in seeds[56:84]]
