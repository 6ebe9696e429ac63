"""GRPO math against hand-computed values, and the micro-batch / rank sum equal to the global token mean."""

import math

import pytest
import torch

from learner.grpo import (
    ClipRange,
    group_advantages,
    kl_penalty,
    per_token_policy_loss,
    policy_loss,
    truncated_importance_weights,
)


def test_group_advantages_hand_computed_with_unbiased_std() -> None:
    rewards = torch.tensor([1.0, 2.0, 3.0, 0.0, 1.0, 0.5])
    group_ids = torch.tensor([4, 4, 4, 9, 9, 2])
    advantages, stats = group_advantages(rewards, group_ids, normalize_std=True, eps=0.0)
    # Group 4: mean 2, unbiased std 1. Group 9: mean 0.5, unbiased std sqrt(0.5). Group 2: a singleton.
    half_sqrt2 = 0.5 / math.sqrt(0.5)
    assert advantages.tolist() == pytest.approx([-1.0, 0.0, 1.0, -half_sqrt2, half_sqrt2, 0.0])
    assert stats.group_count == 3
    assert stats.zero_variance_groups == 1


def test_group_advantages_without_std_are_centered_rewards() -> None:
    rewards = torch.tensor([0.2, 1.0, 0.6, 0.6])
    group_ids = torch.tensor([0, 1, 0, 1])
    advantages, _ = group_advantages(rewards, group_ids, normalize_std=False)
    assert advantages.tolist() == pytest.approx([-0.2, 0.2, 0.2, -0.2])


def test_zero_variance_groups_give_exact_zeros_and_are_counted() -> None:
    rewards = torch.tensor([0.1, 0.1, 0.1, 0.7, 0.7, 0.3, 0.9])
    group_ids = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    advantages, stats = group_advantages(rewards, group_ids)
    assert advantages[:5].tolist() == [0.0] * 5
    assert stats.zero_variance_groups == 2
    assert advantages[5] < 0 < advantages[6]


@pytest.mark.parametrize("normalize_std", [True, False])
def test_group_advantages_are_shift_invariant(normalize_std: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    # float64 rewards, so the shifted input itself is exact to well below the tolerance.
    rewards = torch.rand(24, generator=generator, dtype=torch.float64)
    group_ids = torch.arange(24) % 5
    advantages, _ = group_advantages(rewards, group_ids, normalize_std)
    shifted, _ = group_advantages(rewards + 100.0, group_ids, normalize_std)
    torch.testing.assert_close(shifted, advantages, atol=1e-9, rtol=0)


@pytest.mark.parametrize(
    "rewards, group_ids, message",
    [
        (torch.tensor([1.0, 2.0]), torch.tensor([0]), "shape"),
        (torch.tensor([1.0, 2.0]), torch.tensor([0.0, 1.0]), "integer"),
        (torch.tensor([1.0, float("nan")]), torch.tensor([0, 0]), "NaN"),
        (torch.tensor([]), torch.tensor([], dtype=torch.long), "non-empty"),
    ],
)
def test_group_advantages_rejects_bad_input(rewards: torch.Tensor, group_ids: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        group_advantages(rewards, group_ids)


def _clip_example() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ratios 1.5, 0.5, 1.0 for one positive and one negative advantage; last token of row 1 masked."""
    logprobs = torch.log(torch.tensor([[1.5, 0.5, 1.0], [1.5, 0.5, 1.0]])).requires_grad_()  # [2, 3]
    old_logprobs = torch.zeros(2, 3)
    advantages = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    return logprobs, old_logprobs, advantages, mask


def test_per_token_policy_loss_clips_asymmetrically() -> None:
    logprobs, old_logprobs, advantages, _ = _clip_example()
    per_token = per_token_policy_loss(logprobs, old_logprobs, advantages, ClipRange(low=0.2, high=0.28))
    # A=+1: min(1.5, 1.28), min(0.5, 0.8), 1.  A=-1: min(-1.5, -1.28), min(-0.5, -0.8), -1.  Negated.
    expected = [[-1.28, -0.5, -1.0], [1.5, 0.8, 1.0]]
    torch.testing.assert_close(per_token.detach(), torch.tensor(expected))


def test_policy_loss_hand_computed_value_gradient_and_metrics() -> None:
    logprobs, old_logprobs, advantages, mask = _clip_example()
    loss, metrics = policy_loss(logprobs, old_logprobs, advantages, mask, total_tokens=5)
    assert loss.item() == pytest.approx((-1.28 - 0.5 - 1.0 + 1.5 + 0.8) / 5)
    loss.backward()
    # d(-r A)/d logprob = -r A / total_tokens where unclipped; clipped and masked tokens get no gradient.
    expected_gradient = [[0.0, -0.5 / 5, -1.0 / 5], [1.5 / 5, 0.0, 0.0]]
    torch.testing.assert_close(logprobs.grad, torch.tensor(expected_gradient))
    assert metrics.clip_high_fraction.item() == pytest.approx(1 / 5)
    assert metrics.clip_low_fraction.item() == pytest.approx(1 / 5)
    k3_of_1_5 = 0.5 - math.log(1.5)
    k3_of_0_5 = -0.5 + math.log(2.0)
    assert metrics.approx_kl.item() == pytest.approx(2 * (k3_of_1_5 + k3_of_0_5) / 5)
    assert metrics.ratio_max.item() == pytest.approx(1.5)


def test_policy_loss_divides_by_the_global_token_count() -> None:
    logprobs, old_logprobs, advantages, mask = _clip_example()
    loss, _ = policy_loss(logprobs, old_logprobs, advantages, mask, total_tokens=10)
    assert loss.item() == pytest.approx(-0.48 / 10)


def test_policy_loss_multiplies_importance_weights_per_token() -> None:
    logprobs, old_logprobs, advantages, mask = _clip_example()
    weights = torch.tensor([[2.0, 1.0, 1.0], [0.5, 1.0, 1.0]])
    loss, _ = policy_loss(logprobs, old_logprobs, advantages, mask, total_tokens=5, importance_weights=weights)
    assert loss.item() == pytest.approx((-1.28 * 2 - 0.5 - 1.0 + 1.5 * 0.5 + 0.8) / 5)


def test_policy_loss_rejects_nonpositive_total_tokens() -> None:
    logprobs, old_logprobs, advantages, mask = _clip_example()
    with pytest.raises(ValueError, match="total_tokens"):
        policy_loss(logprobs, old_logprobs, advantages, mask, total_tokens=0)


def test_kl_penalty_k3_hand_computed() -> None:
    logprobs = torch.zeros(1, 4, requires_grad=True)
    ref_logprobs = torch.tensor([[math.log(2.0), 0.0, -math.log(2.0), 3.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    penalty = kl_penalty(logprobs, ref_logprobs, mask, total_tokens=3)
    # k3(d) = e^d - d - 1: d = log 2 -> 1 - log 2; d = 0 -> 0; d = -log 2 -> log 2 - 0.5. Sum 0.5.
    assert penalty.item() == pytest.approx(0.5 / 3)
    penalty.backward()
    # d k3 / d logprob = 1 - e^d.
    torch.testing.assert_close(logprobs.grad, torch.tensor([[-1.0 / 3, 0.0, 0.5 / 3, 0.0]]))


def test_kl_penalty_is_zero_at_the_reference() -> None:
    logprobs = torch.randn(3, 5)
    assert kl_penalty(logprobs, logprobs.clone(), torch.ones(3, 5), total_tokens=15).item() == 0.0


def test_truncated_importance_weights_hand_computed() -> None:
    learner_logprobs = torch.tensor([[0.0, math.log(3.0), -math.log(2.0), 5.0]])
    rollout_logprobs = torch.zeros(1, 4)
    mask = torch.tensor([[1, 1, 1, 0]])
    weights, metrics = truncated_importance_weights(learner_logprobs, rollout_logprobs, mask, cap=2.0, total_tokens=3)
    torch.testing.assert_close(weights, torch.tensor([[1.0, 2.0, 0.5, 0.0]]))
    assert metrics.logprob_diff_mean.item() == pytest.approx((math.log(3.0) + math.log(2.0)) / 3)
    assert metrics.logprob_diff_max.item() == pytest.approx(math.log(3.0))
    assert metrics.weight_mean.item() == pytest.approx(3.5 / 3)
    assert metrics.capped_fraction.item() == pytest.approx(1 / 3)


def test_truncated_importance_weights_are_detached_and_finite_for_huge_gaps() -> None:
    learner_logprobs = torch.tensor([[1000.0, 0.0]], requires_grad=True)
    rollout_logprobs = torch.zeros(1, 2)
    weights, _ = truncated_importance_weights(learner_logprobs, rollout_logprobs, torch.ones(1, 2), 2.0, total_tokens=2)
    assert not weights.requires_grad
    torch.testing.assert_close(weights, torch.tensor([[2.0, 1.0]]))


def test_micro_batches_over_ranks_sum_to_the_global_token_mean() -> None:
    generator = torch.Generator().manual_seed(0)
    batch, length = 8, 6
    logprobs = (-torch.rand(batch, length, generator=generator)).requires_grad_()  # [B, T]
    old_logprobs = logprobs.detach() + 0.3 * torch.randn(batch, length, generator=generator)  # [B, T]
    rollout_logprobs = old_logprobs + 0.1 * torch.randn(batch, length, generator=generator)  # [B, T]
    ref_logprobs = logprobs.detach() + 0.2 * torch.randn(batch, length, generator=generator)  # [B, T]
    advantages = torch.randn(batch, generator=generator)  # [B]
    response_lengths = torch.tensor([6, 1, 3, 5, 2, 6, 4, 1])
    mask = (torch.arange(length) < response_lengths.unsqueeze(1)).float()  # [B, T]
    total_tokens = float(mask.sum())

    def objective(rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
        weights, _ = truncated_importance_weights(
            old_logprobs[rows], rollout_logprobs[rows], mask[rows], cap=2.0, total_tokens=total_tokens
        )
        loss, metrics = policy_loss(
            logprobs[rows],
            old_logprobs[rows],
            advantages[rows],
            mask[rows],
            total_tokens=total_tokens,
            importance_weights=weights,
        )
        penalty = kl_penalty(logprobs[rows], ref_logprobs[rows], mask[rows], total_tokens=total_tokens)
        return loss + 0.05 * penalty, metrics.clip_high_fraction + metrics.clip_low_fraction

    full_loss, full_clip = objective(slice(0, batch))
    full_gradient = torch.autograd.grad(full_loss, logprobs)[0]
    # Two ranks, two micro-batches each, of unequal sizes: rows 0-2 and 3 on rank 0, rows 4-5 and 6-7 on rank 1.
    parts = [objective(rows) for rows in (slice(0, 3), slice(3, 4), slice(4, 6), slice(6, 8))]
    summed_loss = sum(part_loss for part_loss, _ in parts)
    summed_gradient = torch.autograd.grad(summed_loss, logprobs)[0]
    torch.testing.assert_close(summed_loss, full_loss)
    torch.testing.assert_close(summed_gradient, full_gradient)
    torch.testing.assert_close(sum(clip for _, clip in parts), full_clip)
    assert full_clip.item() > 0  # the clipped branch is exercised too


def test_clip_range_validates() -> None:
    with pytest.raises(ValueError, match="low"):
        ClipRange(low=1.0)
    with pytest.raises(ValueError, match="high"):
        ClipRange(high=-0.1)
