"""One LoRA adapter per role on one frozen base (learner.adapters: per_role), with real DeepSpeed on the tiny
model: a step on one role's samples moves that role's adapter only, even for an adapter whose Adam moments are
non-zero; checkpoints restore every adapter with its optimizer state; an export holds each adapter in its own
directory; each sample is scored through its own role's adapter."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from learner.config import LearnerConfig
from learner.records import TrainBatch, TrainSample
from learner.trainer import BatchError, Learner, LearnerSetup, plan_step
from learner.weights import SyncMode

pytestmark = pytest.mark.integration

ROLES = ("proposer", "solver", "judge")
PROMPT = (3, 4, 5)


@pytest.fixture(scope="module")
def learner(tiny_model_dir) -> Learner:
    return Learner(LearnerConfig(lr=1e-2, micro_batch_tokens=512),
                   LearnerSetup(model_path=str(tiny_model_dir), max_model_len=256, adapters=ROLES))


def _pair(role: str) -> list[TrainSample]:
    return [TrainSample(PROMPT, (8, 9), (-5.0, -5.0), 1.0, role=role),
            TrainSample(PROMPT, (10, 11), (-5.0, -5.0), -1.0, role=role)]


def _step(learner: Learner, role: str) -> dict[str, float]:
    samples = _pair(role)
    plan, _ = plan_step(TrainBatch(tuple(samples)), learner.config.micro_batch_tokens, world_size=1)
    return learner.train_step(plan[0], sum(len(s.response_token_ids) for s in samples), adapter=role)


def _of(parameters: dict[str, torch.Tensor], role: str) -> dict[str, torch.Tensor]:
    return {name: value for name, value in parameters.items() if f".{role}." in name}


def test_a_step_on_one_roles_samples_moves_that_adapter_only(learner):
    _step(learner, "proposer")  # the proposer's Adam moments are non-zero from here on
    before = learner.lora_parameters()
    assert {name.split(".lora_")[1].split(".")[1] for name in before} == set(ROLES)
    _step(learner, "solver")
    after = learner.lora_parameters()
    assert any(not torch.equal(value, after[name]) for name, value in _of(before, "solver").items())
    for role in ("proposer", "judge"):  # a flat optimizer would move the proposer on its moments alone
        assert all(torch.equal(value, after[name]) for name, value in _of(before, role).items()), role


def test_each_sample_is_scored_through_its_roles_adapter(learner):
    _step(learner, "solver")
    as_solver, as_judge = learner.policy_logprobs([_pair("solver")[0], _pair("judge")[0]])
    assert as_solver != as_judge  # same tokens, different adapters
    assert learner.policy_logprobs([_pair("judge")[0]]) == [as_judge]
    with pytest.raises(BatchError, match=r"sample 0 has role 'critic', which has no adapter \(adapters: proposer, "):
        learner.policy_logprobs([TrainSample(PROMPT, (8,), (-5.0,), 1.0, role="critic")])


def test_a_checkpoint_restores_every_adapter_and_its_optimizer_state(learner, tmp_path):
    learner.save_checkpoint(str(tmp_path))
    assert sorted(path.name for path in tmp_path.iterdir() if path.is_dir()) == [f"learner-{r}" for r in sorted(ROLES)]
    saved = learner.lora_parameters()
    _step(learner, "solver")
    _step(learner, "judge")
    learner.load_checkpoint(str(tmp_path))
    assert all(torch.equal(value, learner.lora_parameters()[name]) for name, value in saved.items())
    _step(learner, "proposer")
    once = learner.lora_parameters()
    learner.load_checkpoint(str(tmp_path))
    _step(learner, "proposer")  # the same step from the restored moments: the same weights
    assert all(torch.allclose(value, learner.lora_parameters()[name]) for name, value in once.items())


def test_an_export_holds_each_adapter_in_its_own_directory(learner, tmp_path):
    update = learner.export(1, SyncMode.ADAPTER, str(tmp_path))
    parameters = learner.lora_parameters()
    for role in ROLES:
        written = load_file(f"{update.path}/{role}/adapter_model.safetensors")
        expected = {name.replace(f".{role}.", "."): value for name, value in _of(parameters, role).items()}
        assert written.keys() == expected.keys()
        assert all(torch.equal(written[name], expected[name].to(written[name].dtype)) for name in written)
