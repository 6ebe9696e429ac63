"""The SFT cold start's examples and steps (the learner itself is tested with DeepSpeed in the integration tests;
here a recording stand-in takes its place)."""

from __future__ import annotations

import math

import pytest

from agents.parsing import parse_answer
from agents.tasks import task_family
from selfplay.question_pool import PoolQuestion, QuestionSource
from selfplay.sft import SFTExample, run_sft, sft_examples, step_examples

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
    # arithmetic seeds carry no expression: only the solver learns from them
    assert [e.role for e in sft_examples(SEEDS, task_family("arithmetic"))] == ["solver"]


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
