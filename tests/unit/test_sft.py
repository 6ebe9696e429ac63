"""The SFT cold start's examples and steps (the learner itself is tested with DeepSpeed in the integration tests;
here a recording stand-in takes its place)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from agents.parsing import parse_answer
from agents.tasks import task_family
from selfplay.question_pool import PoolQuestion, QuestionSource, load_seed_file
from selfplay.sft import SFTExample, run_sft, sft_examples, step_examples

ROOT = Path(__file__).resolve().parents[2]

SEEDS = [PoolQuestion(id="seed-1", text="What is 2 + 2?", answer="4", source=QuestionSource.SEED, added_iteration=0),
         PoolQuestion(id="seed-2", text="Why is the sky blue?", answer=None, source=QuestionSource.SEED,
                      added_iteration=0)]


def test_examples_teach_each_role_its_format():
    math_examples = sft_examples(SEEDS, task_family("math"))
    assert [(e.role, e.response) for e in math_examples] == [
        ("solver", "<answer>4</answer>"), ("proposer", "<question>What is 2 + 2?</question>"),
        ("proposer", "<question>Why is the sky blue?</question>")]
    assert parse_answer(math_examples[0].response).value == "4"
    assert math_examples[0].messages[-1]["content"] == "What is 2 + 2?"
    # arithmetic seeds without their expression teach the solver only
    assert [e.role for e in sft_examples(SEEDS, task_family("arithmetic"))] == ["solver"]


def test_arithmetic_seeds_with_their_expression_teach_the_calculation_and_the_proposal_format():
    seed = PoolQuestion(id="seed-3", text="A box holds 4 pens. How many pens are in 3 boxes?", answer="12",
                        source=QuestionSource.SEED, added_iteration=0, checkable="4 * 3")
    family = task_family("arithmetic")
    solver, proposer = sft_examples([seed], family)
    assert solver.response == "4 * 3 = 12.\n<answer>12</answer>" and parse_answer(solver.response).value == "12"
    assert proposer.role == "proposer"
    assert proposer.response == ("<question>A box holds 4 pens. How many pens are in 3 boxes?</question>\n"
                                 "<expression>4 * 3</expression>")
    assert family.parse_proposal(proposer.response).value.reference == "12"  # what the loop itself would accept


@pytest.mark.parametrize("checkable, answer, message", [
    ("4 * 3", "13", "computes 12, but the answer is 13"),
    ("4 * 5", "20", "uses a number its question lacks"),
    ("4 *", "12", "does not compute"),
])
def test_a_seed_whose_expression_is_wrong_is_named(checkable, answer, message):
    seed = PoolQuestion(id="seed:arith:7", text="A box holds 4 pens. How many pens are in 3 boxes?", answer=answer,
                        source=QuestionSource.SEED, added_iteration=0, checkable=checkable)
    with pytest.raises(ValueError, match=f"seed seed:arith:7: .*{message}"):
        sft_examples([seed], task_family("arithmetic"))


def test_steps_take_the_next_examples_in_order_wrapping_around():
    examples = [SFTExample("solver", (), str(index)) for index in range(5)]
    assert [e.response for e in step_examples(examples, 0, 3)] == ["0", "1", "2"]
    assert [e.response for e in step_examples(examples, 1, 3)] == ["3", "4", "0"]


class Tokenizer:
    eos_token_id = 0

    def apply_chat_template(self, messages, add_generation_prompt, tokenize):
        return [1, 2, 3]

    def __call__(self, text, add_special_tokens):
        return {"input_ids": [ord(character) for character in text[:4]]}


class Learner:
    def __init__(self) -> None:
        self.batches = []

    def policy_logprobs(self, samples):
        return [tuple(-0.5 * (step + 1) for step in range(len(s.response_token_ids))) for s in samples]

    def train(self, batch):
        self.batches.append(batch)
        return {}


def test_each_step_trains_advantage_one_with_the_learners_own_logprobs():
    learner, lines = Learner(), []
    metrics = run_sft(learner, Tokenizer(), sft_examples(SEEDS, task_family("math")), steps=2, batch_size=2,
                      progress=lines.append)
    assert len(learner.batches) == 2 and len(lines) == 2
    sample = learner.batches[0].samples[0]
    assert sample.prompt_token_ids == (1, 2, 3) and sample.response_token_ids == (60, 97, 110, 115, 0)
    assert sample.advantage == 1.0 and sample.rollout_logprobs == (-0.5, -1.0, -1.5, -2.0, -2.5)
    assert metrics["sft/nll_first"] == pytest.approx(1.5)  # the mean of 0.5 .. 2.5
    assert metrics["sft/steps"] == 2.0 and metrics["sft/examples"] == 3.0
    with pytest.raises(ValueError, match="no example to learn from"):
        run_sft(learner, Tokenizer(), [], steps=1, batch_size=2, progress=lines.append)
    assert not math.isnan(metrics["sft/nll_last"])


def test_the_project_arithmetic_seeds_teach_both_roles():
    seeds = load_seed_file(ROOT / "configs/seeds/arithmetic.jsonl")
    examples = sft_examples(seeds, task_family("arithmetic"))
    assert [e.role for e in examples] == ["solver", "proposer"] * len(seeds)
