"""The DeepSpeed learner on the tiny model: updates move the rewarded behaviour, bad batches are handled,
checkpoints restore, and GRPO with the real vLLM engine raises a verifiable reward."""

from __future__ import annotations

import math
import tempfile

import pytest
import torch

from learner.config import LearnerConfig
from learner.grpo import group_advantages
from learner.records import TrainBatch, TrainSample
from learner.trainer import BatchError, Learner, LearnerSetup, plan_step

pytestmark = pytest.mark.integration

MAX_LEN = 256


@pytest.fixture(scope="module")
def learner(tiny_model_dir) -> Learner:
    return Learner(LearnerConfig(lr=1e-2, micro_batch_tokens=512),
                   LearnerSetup(model_path=str(tiny_model_dir), max_model_len=MAX_LEN))


def _step(learner: Learner, samples: list[TrainSample]) -> dict[str, float]:
    plan, _ = plan_step(TrainBatch(tuple(samples)), learner.config.micro_batch_tokens, world_size=1)
    return learner.train_step(plan[0], sum(len(s.response_token_ids) for s in samples))


def _response_logprob(learner: Learner, prompt: tuple[int, ...], response: tuple[int, ...]) -> float:
    return sum(learner.sequence_logprobs(list(prompt + response))[len(prompt) - 1:])


def _sample(prompt, response, advantage, learner=None, **overrides) -> TrainSample:
    logprobs = learner.sequence_logprobs(list(prompt + response))[len(prompt) - 1:] if learner else [-5.0] * len(response)
    return TrainSample(prompt, response, tuple(logprobs), advantage, **overrides)


def test_grpo_step_moves_lora_towards_rewarded_response(learner):
    prompt, good, bad = (1, 17, 300, 42, 9), (500, 501, 502, 503), (900, 901, 902, 903)
    before = learner.lora_parameters()
    good_before, bad_before = _response_logprob(learner, prompt, good), _response_logprob(learner, prompt, bad)
    for _ in range(3):
        metrics = _step(learner, [_sample(prompt, good, 1.0, learner), _sample(prompt, bad, -1.0, learner)])
    after = learner.lora_parameters()
    assert any(not torch.equal(before[name], after[name]) for name in before), "LoRA parameters did not move"
    assert _response_logprob(learner, prompt, good) > good_before + 0.5
    assert _response_logprob(learner, prompt, bad) < bad_before - 0.5
    assert metrics["learner/skipped_nonfinite"] == 0.0 and math.isfinite(metrics["learner/grad_norm"])
    assert metrics["learner/importance_logprob_diff_mean"] < 1e-3  # rollout logprobs were the learner's own


def test_nonfinite_loss_skips_step_and_counts(learner):
    prompt, response = (1, 2, 3), (4, 5)
    before = learner.lora_parameters()
    skipped_before = learner.skipped_steps
    poisoned = TrainSample(prompt, response, (-1.0, -1.0), advantage=float("nan"))
    metrics = _step(learner, [poisoned])
    assert metrics["learner/skipped_nonfinite"] == 1.0
    assert learner.skipped_steps == skipped_before + 1
    after = learner.lora_parameters()
    assert all(torch.equal(before[name], after[name]) for name in before)
    metrics = _step(learner, [_sample(prompt, response, 1.0, learner), _sample(prompt, (6, 7), -1.0, learner)])
    assert metrics["learner/skipped_nonfinite"] == 0.0  # training continues


def _loss_made_infinite_on(learner: Learner, monkeypatch, prompt: tuple[int, ...]) -> None:
    """Micro-batches whose first sample has `prompt` get their loss plus a constant +inf: the loss value is not
    finite, its gradient is the real loss's (finite). No real loss term does this: a non-finite advantage,
    logprob or KL term makes its gradient non-finite too, which DeepSpeed's gradient check already catches."""
    real = learner._micro_batch_loss

    def loss(samples, total_tokens):
        value, metrics = real(samples, total_tokens)
        assert torch.isfinite(value)
        return (value + math.inf if samples[0].prompt_token_ids == prompt else value), metrics

    monkeypatch.setattr(learner, "_micro_batch_loss", loss)


def test_nonfinite_loss_with_finite_gradients_skips_the_other_micro_batch_too(tiny_model_dir, tmp_path,
                                                                             monkeypatch):
    """ZeRO-2 reduces each micro-batch's gradient into its partitions during backward: the skip must drop the
    finite micro-batch's gradient too, and leave nothing behind for the next step (float32: exact)."""
    learner = Learner(LearnerConfig(lr=1e-2, micro_batch_tokens=512, compute_dtype="float32"),
                      LearnerSetup(model_path=str(tiny_model_dir), dtype="float32", max_model_len=MAX_LEN, seed=6))
    good = _sample((1, 17, 300), (500, 501), 1.0, learner)
    bad = _sample((2, 18, 301), (600, 601), -1.0, learner)
    learner.save_checkpoint(str(tmp_path))
    before = learner.lora_parameters()
    _loss_made_infinite_on(learner, monkeypatch, bad.prompt_token_ids)
    for micro_batches in ([[bad], [good]], [[good], [bad]]):  # the finite one's gradient reduced last, then first
        metrics = learner.train_step(micro_batches, global_response_tokens=4)
        assert metrics["learner/skipped_nonfinite"] == 1.0
        after = learner.lora_parameters()
        assert all(torch.equal(before[name], after[name]) for name in before), "a skipped step moved the LoRA"
    monkeypatch.undo()
    assert learner.train_step([[good]], global_response_tokens=2)["learner/skipped_nonfinite"] == 0.0
    after_skips = learner.lora_parameters()
    learner.load_checkpoint(str(tmp_path))  # the same step without the skipped ones before it
    learner.train_step([[good]], global_response_tokens=2)
    assert any(not torch.equal(before[name], after_skips[name]) for name in before)
    assert all(torch.equal(after_skips[name], value) for name, value in learner.lora_parameters().items()), (
        "the skipped steps left gradients or optimizer state behind")


def _rank_with_one_infinite_loss(rank: int, port: int, model_dir: str, results) -> None:
    """One of two DeepSpeed ranks (a spawned process): rank 1's micro-batch has an infinite loss with finite
    gradients, rank 0's is finite. Reports the skip flag and whether the LoRA stayed as it was."""
    import pytest as _pytest

    learner = Learner(LearnerConfig(lr=1e-2, micro_batch_tokens=512, compute_dtype="float32"),
                      LearnerSetup(model_path=model_dir, dtype="float32", max_model_len=MAX_LEN, seed=7, rank=rank,
                                   world_size=2, master_port=port))
    sample = _sample((1 + rank, 17, 300), (500 + rank, 501), 1.0, learner)
    with _pytest.MonkeyPatch.context() as monkeypatch:
        _loss_made_infinite_on(learner, monkeypatch, (2, 17, 300))
        before = learner.lora_parameters()
        metrics = learner.train_step([[sample]], global_response_tokens=4)
    after = learner.lora_parameters()
    results.put((rank, metrics["learner/skipped_nonfinite"], all(torch.equal(before[k], after[k]) for k in before)))


def test_an_infinite_loss_on_one_rank_skips_the_step_on_both(tiny_model_dir):
    import multiprocessing

    from learner.trainer import free_port

    context = multiprocessing.get_context("spawn")
    results, port = context.Queue(), free_port()
    ranks = [context.Process(target=_rank_with_one_infinite_loss, args=(rank, port, str(tiny_model_dir), results))
             for rank in range(2)]
    for process in ranks:
        process.start()
    try:
        reports = sorted(results.get(timeout=300) for _ in ranks)
    finally:
        for process in ranks:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
    assert reports == [(0, 1.0, True), (1, 1.0, True)]  # (rank, skipped, LoRA unchanged)


def test_empty_batch_is_a_no_op(learner):
    assert learner.train_step([], 0) == {"learner/empty_batch": 1.0}


def test_over_length_sample_is_rejected_naming_it(learner):
    batch = TrainBatch((_sample((1, 2), (3,), 1.0), _sample(tuple(range(MAX_LEN)), (5, 6), 1.0, role="solver")))
    with pytest.raises(BatchError, match=r"sample 1 \(solver\) has 258 tokens, more than the model's context of 256"):
        learner.check_batch(batch)


def test_checkpoint_restores_adapter_optimizer_and_step(learner, tmp_path):
    prompt = (3, 4, 5)
    torch.manual_seed(1234)
    learner.save_checkpoint(str(tmp_path))
    saved_parameters, saved_step = learner.lora_parameters(), learner.step_count
    random_after_save = torch.rand(3)
    _step(learner, [_sample(prompt, (8, 9), 1.0, learner), _sample(prompt, (10, 11), -1.0, learner)])
    assert learner.step_count == saved_step + 1
    learner.load_checkpoint(str(tmp_path))
    assert learner.step_count == saved_step
    restored = learner.lora_parameters()
    assert torch.equal(torch.rand(3), random_after_save)  # RNG state restored
    assert all(torch.equal(saved_parameters[name], restored[name]) for name in saved_parameters)
    # Same step after restore gives the same parameters as a second run of it: the optimizer state came back too.
    first = _step(learner, [_sample(prompt, (8, 9), 1.0, learner), _sample(prompt, (10, 11), -1.0, learner)])
    once = learner.lora_parameters()
    learner.load_checkpoint(str(tmp_path))
    second = _step(learner, [_sample(prompt, (8, 9), 1.0, learner), _sample(prompt, (10, 11), -1.0, learner)])
    assert first["learner/loss"] == pytest.approx(second["learner/loss"], abs=1e-6)
    assert all(torch.allclose(once[name], value) for name, value in learner.lora_parameters().items())


def _target_tokens(learner: Learner, count: int = 1000) -> set[int]:
    """Tokens whose embedding points most along a fixed random direction: a behaviour LoRA can learn."""
    embeddings = learner.model.get_input_embeddings().weight.float()  # [V, H]
    direction = torch.randn(embeddings.shape[1], generator=torch.Generator().manual_seed(0))  # [H]
    return set((embeddings @ direction).topk(count).indices.tolist())


def test_grpo_with_real_engine_raises_verifiable_reward(tiny_model_dir):
    """Generate with vLLM, reward the share of target tokens, update with DeepSpeed, sync merged weights."""
    from learner.weights import SyncMode
    from rollout.engine import Engine, EngineSpec
    from rollout.records import GenerationRequest, SamplingSpec

    engine = Engine(EngineSpec(model_path=str(tiny_model_dir), kv_cache_gb=0.25, max_model_len=MAX_LEN,
                               sync_mode=SyncMode.MERGED))
    learner = Learner(LearnerConfig(lr=1e-2, micro_batch_tokens=4096),
                      LearnerSetup(model_path=str(tiny_model_dir), max_model_len=MAX_LEN, seed=1))
    target = _target_tokens(learner)
    requests = [GenerationRequest(({"role": "user", "content": f"Say something {i}"},),
                                  SamplingSpec(n=8, max_tokens=16, seed=1000 * i)) for i in range(4)]
    mean_rewards = []
    try:
        with tempfile.TemporaryDirectory() as export_dir:
            for step in range(40):
                samples, rewards, groups = [], [], []
                for group, completion in enumerate(engine.generate(requests)):
                    for sample in completion.samples:
                        rewards.append(sum(token in target for token in sample.token_ids) / len(sample.token_ids))
                        groups.append(group)
                        samples.append((completion.prompt_token_ids, sample))
                advantages, _ = group_advantages(torch.tensor(rewards), torch.tensor(groups), normalize_std=True)
                batch = [TrainSample(prompt, sample.token_ids, sample.logprobs, float(advantage))
                         for (prompt, sample), advantage in zip(samples, advantages)]
                learner.train_step(plan_step(TrainBatch(tuple(batch)), 4096, 1)[0][0], sum(len(s.response_token_ids)
                                                                                           for s in batch))
                engine.apply_update(learner.export(step + 1, SyncMode.MERGED, export_dir))
                mean_rewards.append(sum(rewards) / len(rewards))
    finally:
        engine.shutdown()
    first, last = sum(mean_rewards[:5]) / 5, sum(mean_rewards[-5:]) / 5
    assert last > 2 * first and last > first + 0.03, f"reward did not rise: {[round(r, 3) for r in mean_rewards]}"


def test_clip_acts_from_the_second_update_of_a_batch(tiny_model_dir):
    """Two PPO epochs over one batch: the old logprobs are taken before the first update, so the first update
    sees ratio 1 (nothing clipped) and the second a moved policy (clipped tokens); one update never clips."""
    learner = Learner(LearnerConfig(lr=1e-2, micro_batch_tokens=512, clip_low=0.01, clip_high=0.01),
                      LearnerSetup(model_path=str(tiny_model_dir), max_model_len=MAX_LEN, seed=2))
    prompt, good, bad = (1, 17, 300, 42, 9), (500, 501, 502, 503), (900, 901, 902, 903)
    samples = [_sample(prompt, good, 1.0, learner), _sample(prompt, bad, -1.0, learner)]
    old = learner.policy_logprobs(samples)
    assert [len(logprobs) for logprobs in old] == [4, 4]
    assert old[0] == pytest.approx(samples[0].rollout_logprobs, abs=1e-4)  # the same weights, the same logprobs
    with_old = [TrainSample(s.prompt_token_ids, s.response_token_ids, s.rollout_logprobs, s.advantage,
                            old_logprobs=logprobs) for s, logprobs in zip(samples, old)]
    first, second = _step(learner, with_old), _step(learner, with_old)
    assert first["learner/clip_fraction"] == 0.0
    assert second["learner/clip_fraction"] > 0.0
    assert _step(learner, samples)["learner/clip_fraction"] == 0.0  # no old logprobs: one update, ratio 1


def test_gradient_checkpointing_gives_the_same_step(tiny_model_dir):
    """Recomputing activations in the backward pass changes memory, not the gradient: from the same start, one
    step with and one without it reach the same LoRA weights."""
    prompt, good, bad = (1, 17, 300, 42, 9), (500, 501, 502, 503), (900, 901, 902, 903)
    after = []
    for checkpointing in (False, True):
        learner = Learner(LearnerConfig(lr=1e-2, micro_batch_tokens=512, gradient_checkpointing=checkpointing),
                          LearnerSetup(model_path=str(tiny_model_dir), max_model_len=MAX_LEN, seed=3))
        metrics = _step(learner, [_sample(prompt, good, 1.0, learner), _sample(prompt, bad, -1.0, learner)])
        after.append((metrics["learner/grad_norm"], learner.lora_parameters()))
    (norm, plain), (norm_checkpointed, checkpointed) = after
    assert norm_checkpointed == pytest.approx(norm, rel=1e-4) and norm > 0
    assert all(torch.allclose(plain[name], checkpointed[name], atol=1e-6) for name in plain)


def test_drift_from_base_is_zero_at_start_and_grows_with_training(tiny_model_dir):
    learner = Learner(LearnerConfig(lr=1e-2, micro_batch_tokens=512),
                      LearnerSetup(model_path=str(tiny_model_dir), max_model_len=MAX_LEN, seed=4))
    general = [_sample((1, 2, 3, 4), (40, 41, 42, 43, 44), 0.0), _sample((5, 6, 7), (70, 71, 72), 0.0)]
    assert learner.drift_from_base(general) == pytest.approx(0.0, abs=1e-7)  # LoRA B starts at zero
    prompt, good, bad = (1, 17, 300, 42, 9), (500, 501, 502, 503), (900, 901, 902, 903)
    for _ in range(3):
        _step(learner, [_sample(prompt, good, 1.0, learner), _sample(prompt, bad, -1.0, learner)])
    assert learner.drift_from_base(general) > 1e-6


def test_packed_rows_and_wider_padding_compute_what_padded_rows_compute(tiny_model_dir):
    """`pack_sequences` puts a micro-batch's samples end to end in one row, positions restarting at each, and
    `pad_multiple` pads rows wider: both must give the response logprobs, loss, gradient and updated weights of one
    padded row per sample (float32)."""
    samples = [_sample((1, 17, 300, 42, 9), (500, 501, 502, 503), 1.0), _sample((5, 6), (70,), -1.0),
               _sample((8, 9, 10, 11, 12, 13, 14), (80, 81), 0.5),
               _sample((2, 3, 4), (90, 91, 92, 93, 94, 95), -0.5)]
    batch = TrainBatch(tuple(samples))
    results = []
    for packed, pad_multiple, shape in ((False, 1, (4, 9)), (True, 1, (1, 30)), (False, 8, (4, 16))):
        config = LearnerConfig(lr=1e-2, micro_batch_tokens=512, pack_sequences=packed, pad_multiple=pad_multiple,
                               compute_dtype="float32")
        learner = Learner(config, LearnerSetup(model_path=str(tiny_model_dir), max_model_len=MAX_LEN, seed=5))
        assert learner._micro_batch_tensors(samples)["input_ids"].shape == shape
        logprobs = learner.policy_logprobs(samples)
        plan, padding = plan_step(batch, 512, world_size=1, packed=packed, pad_multiple=pad_multiple)
        assert len(plan[0]) == 1 and (padding == 0.0) == packed
        metrics = learner.train_step(plan[0], batch.response_tokens)
        results.append((logprobs, metrics, learner.lora_parameters(), learner.policy_logprobs(samples)))
    padded, padded_metrics, padded_weights, padded_after = results[0]
    for other, other_metrics, other_weights, other_after in results[1:]:
        for before, after, other_before, other_later in zip(padded, padded_after, other, other_after):
            assert other_before == pytest.approx(before, abs=1e-4)
            assert other_later == pytest.approx(after, abs=1e-4)
            assert other_later != pytest.approx(other_before, abs=1e-3)  # the step moved every sample's logprobs
        assert other_metrics["learner/loss"] == pytest.approx(padded_metrics["learner/loss"], rel=1e-4)
        assert other_metrics["learner/grad_norm"] == pytest.approx(padded_metrics["learner/grad_norm"], rel=1e-4)
        # Adam's first step moves a weight by about lr (1e-2) wherever its gradient is not zero, and it normalises
        # gradients near zero, where rounding differs: agreement to 1 % of a step.
        assert all(torch.allclose(padded_weights[name], other_weights[name], atol=1e-4) for name in padded_weights)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
@pytest.mark.parametrize("kernel", ["flex_attention", "flash_attention_2"])
def test_gpu_attention_on_a_cpu_is_refused_in_one_line(tiny_model_dir, kernel):
    with pytest.raises(ValueError, match=f"{kernel} needs a CUDA GPU"):
        Learner(LearnerConfig(attn_implementation=kernel),
                LearnerSetup(model_path=str(tiny_model_dir), max_model_len=MAX_LEN))
