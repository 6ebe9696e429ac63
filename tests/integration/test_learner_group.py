"""Two DeepSpeed ranks (gloo) through Ray: one step on a batch gives the gradient a single rank computes, both
ranks hold the same weights after it, and a batch with fewer samples than ranks trains (filler micro-batches)."""

from __future__ import annotations

import time

import pytest
import ray
import torch

from learner.calls import LearnerTimeout, gathered
from learner.config import LearnerConfig
from learner.group import LearnerGroup
from learner.records import TrainBatch, TrainSample
from learner.trainer import Learner, LearnerSetup, plan_step

pytestmark = pytest.mark.integration
CONFIG = LearnerConfig(lr=1e-2, micro_batch_tokens=4096, num_workers=2)


@pytest.fixture(scope="module")
def group(tiny_model_dir):
    from selfplay.wiring import PROJECT_ROOT

    ray.init(num_cpus=3, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": str(PROJECT_ROOT)}})
    try:
        yield LearnerGroup(CONFIG, LearnerSetup(model_path=str(tiny_model_dir), dtype="float32"))
    finally:
        ray.shutdown()


def _samples(count: int) -> list[TrainSample]:
    prompt = (1, 17, 300, 42)
    return [TrainSample(prompt, tuple(500 + 10 * i + j for j in range(2 + i)), (-5.0,) * (2 + i), advantage)
            for i, advantage in zip(range(count), (1.0, -0.5, 0.25))]


@pytest.fixture(scope="module")
def single(tiny_model_dir) -> Learner:
    """One in-process rank that takes the same steps as the group."""
    return Learner(CONFIG.model_copy(update={"num_workers": 1}),
                   LearnerSetup(model_path=str(tiny_model_dir), dtype="float32"))


def _one_rank_metrics(single: Learner, samples: list[TrainSample]) -> dict[str, float]:
    plan, _ = plan_step(TrainBatch(tuple(samples)), CONFIG.micro_batch_tokens, world_size=1)
    return single.train_step(plan[0], sum(len(sample.response_token_ids) for sample in samples))


def _rank_weights(group: LearnerGroup) -> list[dict[str, torch.Tensor]]:
    return ray.get([worker.lora_parameters.remote() for worker in group.workers])


@pytest.mark.parametrize("count", [3, 1])  # 3: one micro-batch split in two; 1: rank 1 gets a filler copy
def test_two_ranks_take_the_step_one_rank_takes(group, single, count):
    samples = _samples(count)
    expected = _one_rank_metrics(single, samples)
    before = _rank_weights(group)[0]
    metrics = group.train(TrainBatch(tuple(samples)))
    assert metrics["learner/grad_norm"] == pytest.approx(expected["learner/grad_norm"], rel=1e-4)
    assert metrics["learner/policy_loss"] == pytest.approx(expected["learner/policy_loss"], rel=1e-4, abs=1e-7)
    assert metrics["learner/tokens"] == expected["learner/tokens"]  # a filler's tokens are not counted
    first, second = _rank_weights(group)
    assert all(torch.equal(first[name], second[name]) for name in first), "the ranks' weights diverged"
    for name, value in single.lora_parameters().items():
        # Adam turns float-noise differences of near-zero gradients into steps of up to lr: a tenth of it is close
        torch.testing.assert_close(first[name], value, rtol=1e-4, atol=1e-3)
    assert any(not torch.equal(first[name], before[name]) for name in first), "the step did not move the LoRA"


def test_a_learner_call_past_its_timeout_names_the_rank_and_the_call(group):
    @ray.remote(num_cpus=0)
    def answer(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    assert gathered([answer.remote(0), answer.remote(0.1)], "train_step", 60) == [0, 0.1]
    with pytest.raises(LearnerTimeout, match=r"^learner rank\(s\) 1 did not finish train_step within 0.5 s "
                                             r"\(learner.call_timeout_s\): stuck in a collective or in native code$"):
        gathered([answer.remote(0), answer.remote(30)], "train_step", 0.5)
