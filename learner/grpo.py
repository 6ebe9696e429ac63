"""GRPO math as pure torch functions: group advantages, the clipped policy loss, the KL penalty
and truncated importance weights.

Loss aggregation (the one choice everything else depends on): every token term is SUMMED and
divided by `total_tokens`, the number of response tokens in the whole global batch (all
micro-batches on all data-parallel ranks). Each micro-batch loss is then its share of the global
token mean, so summing the micro-batch losses over gradient-accumulation steps and ranks gives
exactly the global token mean, whatever the micro-batch sizes (DAPO's token-level loss; TRL's
"dapo" loss type). A per-micro-batch mean would weight tokens unevenly across micro-batches.
DeepSpeed averages gradients over ranks and, by default, scales each micro-batch loss by
1 / accumulation steps: the learner must undo both (multiply by world size and accumulation
steps) or turn them off, so the shares here add up unscaled.

Additive metrics follow the same rule (token sum / `total_tokens`), so the learner sums them over
micro-batches and all-reduces them with a sum; metrics named `*_max` reduce with a max. Loss
metrics are detached 0-dim tensors so that reduction costs no host sync per micro-batch.

Left out: computing logprobs from a model, the reference model (the base model with the LoRA
adapter disabled) and the coefficients; the learner owns those.
"""

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class AdvantageStats:
    """Summary of one `group_advantages` call (plain floats, computed once per batch)."""

    group_count: int
    zero_variance_groups: int
    """Groups whose rewards are all equal (singletons included): their advantages are 0."""


@dataclass(frozen=True)
class ClipRange:
    """Asymmetric PPO ratio clip [1 - low, 1 + high]; high > low is DAPO's clip-higher."""

    low: float = 0.2
    high: float = 0.28

    def __post_init__(self) -> None:
        if not 0.0 <= self.low < 1.0:
            raise ValueError(f"ClipRange.low must be in [0, 1), got {self.low}")
        if self.high < 0.0:
            raise ValueError(f"ClipRange.high must be >= 0, got {self.high}")


@dataclass(frozen=True)
class PolicyLossMetrics:
    """Detached 0-dim tensors. Fractions and means are token sums / total_tokens (sum-reduce)."""

    clip_low_fraction: Tensor
    """Tokens with ratio < 1 - low and negative advantage (gradient cut by the clip)."""
    clip_high_fraction: Tensor
    """Tokens with ratio > 1 + high and positive advantage (gradient cut by the clip)."""
    approx_kl: Tensor
    """k3 estimate of KL(old || current): exp(r) - 1 - r with r = logprob - old_logprob."""
    ratio_max: Tensor
    """Largest probability ratio current / old over unmasked tokens (max-reduce)."""


@dataclass(frozen=True)
class ImportanceWeightMetrics:
    """Learner-vs-rollout mismatch, detached 0-dim tensors; `*_max` max-reduce, others sum-reduce."""

    logprob_diff_mean: Tensor
    """Token mean of |learner logprob - rollout logprob|."""
    logprob_diff_max: Tensor
    weight_mean: Tensor
    """Token mean of the truncated weights."""
    capped_fraction: Tensor
    """Tokens whose raw weight exceeded the cap."""


def group_advantages(
    rewards: Tensor,
    group_ids: Tensor,
    normalize_std: bool = True,
    eps: float = 1e-4,
) -> tuple[Tensor, AdvantageStats]:
    """Reward minus its group mean, optionally divided by (group std + eps).

    rewards: [N] float; group_ids: [N] integer, any values. The caller defines the groups: the N
    solver answers to one question share an id; proposer and judge samples each share one id per
    role (per-role baselines). Std is the unbiased (Bessel) group std, as in TRL's GRPO (eps 1e-4
    there too). Groups whose rewards are all equal, singletons included, carry no learning signal:
    their advantages are exactly 0 and they are counted in `zero_variance_groups`. Computed in
    float64, so a constant shift of all rewards leaves the advantages unchanged up to rounding.
    Returns advantages [N] in the rewards' dtype and the stats.
    """
    if rewards.dim() != 1 or rewards.numel() == 0:
        raise ValueError(f"rewards must be a non-empty 1-D tensor, got shape {tuple(rewards.shape)}")
    if group_ids.shape != rewards.shape:
        raise ValueError(f"group_ids shape {tuple(group_ids.shape)} != rewards shape {tuple(rewards.shape)}")
    if group_ids.is_floating_point() or group_ids.dtype == torch.bool:
        raise ValueError(f"group_ids must be an integer tensor, got {group_ids.dtype}")
    if not torch.isfinite(rewards).all():
        raise ValueError("rewards contain NaN or infinity")

    values = rewards.to(torch.float64)  # [N]
    float64_options = {"dtype": torch.float64, "device": rewards.device}
    unique_ids, group_index = torch.unique(group_ids, return_inverse=True)  # [G], [N]
    group_count = unique_ids.numel()
    sizes = torch.bincount(group_index, minlength=group_count).to(torch.float64)  # [G]
    means = torch.zeros(group_count, **float64_options).index_add_(0, group_index, values) / sizes  # [G]
    maxima = torch.full((group_count,), -math.inf, **float64_options).scatter_reduce(
        0, group_index, values, reduce="amax"
    )  # [G]
    minima = torch.full((group_count,), math.inf, **float64_options).scatter_reduce(
        0, group_index, values, reduce="amin"
    )  # [G]
    constant = maxima == minima  # [G]
    advantages = values - means[group_index]  # [N]
    if normalize_std:
        squares = torch.zeros(group_count, **float64_options).index_add_(0, group_index, advantages**2)  # [G]
        stds = torch.sqrt(squares / (sizes - 1).clamp(min=1))  # [G]
        advantages = advantages / (stds[group_index] + eps)
    # Zero constant groups explicitly: rounding in the mean can leave tiny nonzero values, which
    # division by a near-zero std would inflate (or turn into NaN when eps is 0).
    advantages = torch.where(constant[group_index], 0.0, advantages)  # [N]
    stats = AdvantageStats(
        group_count=group_count,
        zero_variance_groups=int(constant.sum()),
    )
    return advantages.to(rewards.dtype), stats


def token_share(values: Tensor, mask: Tensor, total_tokens: float) -> Tensor:
    """Sum of values [B, T] over unmasked tokens divided by the global batch's token count."""
    if total_tokens <= 0:
        raise ValueError(f"total_tokens must be positive, got {total_tokens}")
    if values.shape != mask.shape:
        raise ValueError(f"values shape {tuple(values.shape)} != mask shape {tuple(mask.shape)}")
    return (values * mask).sum() / total_tokens


def per_token_policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    clip_range: ClipRange,
    importance_weights: Tensor | None = None,
) -> Tensor:
    """PPO clipped surrogate per token, negated for minimisation: [B, T].

    -w * min(r * A, clip(r, 1 - low, 1 + high) * A), r = exp(logprobs - old_logprobs),
    A = advantages [B] broadcast over tokens, w = detached importance weights [B, T] (1 if None).
    """
    if logprobs.shape != old_logprobs.shape:
        raise ValueError(f"logprobs {tuple(logprobs.shape)} != old_logprobs {tuple(old_logprobs.shape)}")
    if advantages.shape != logprobs.shape[:1]:
        raise ValueError(f"advantages must be [B]={tuple(logprobs.shape[:1])}, got {tuple(advantages.shape)}")
    ratio = torch.exp(logprobs - old_logprobs.detach())  # [B, T]
    token_advantages = advantages.detach().unsqueeze(1)  # [B, 1]
    unclipped = ratio * token_advantages  # [B, T]
    clipped = torch.clamp(ratio, 1.0 - clip_range.low, 1.0 + clip_range.high) * token_advantages  # [B, T]
    loss = -torch.minimum(unclipped, clipped)  # [B, T]
    if importance_weights is not None:
        if importance_weights.shape != loss.shape:
            raise ValueError(f"importance_weights {tuple(importance_weights.shape)} != {tuple(loss.shape)}")
        loss = loss * importance_weights.detach()
    return loss


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    total_tokens: float,
    clip_range: ClipRange = ClipRange(),
    importance_weights: Tensor | None = None,
) -> tuple[Tensor, PolicyLossMetrics]:
    """Clipped GRPO policy loss of one micro-batch as its share of the global token mean.

    logprobs [B, T] (with grad), old_logprobs [B, T], advantages [B], mask [B, T] (1 on response
    tokens), importance_weights [B, T] or None. total_tokens: response tokens in the WHOLE global
    batch (all micro-batches, all ranks), so the micro-batch losses sum to the global token mean.
    """
    per_token = per_token_policy_loss(logprobs, old_logprobs, advantages, clip_range, importance_weights)  # [B, T]
    loss = token_share(per_token, mask, total_tokens)
    with torch.no_grad():
        log_ratio = logprobs - old_logprobs  # [B, T]
        ratio = torch.exp(log_ratio)  # [B, T]
        token_advantages = advantages.unsqueeze(1)  # [B, 1]
        low_clipped = (ratio < 1.0 - clip_range.low) & (token_advantages < 0)  # [B, T]
        high_clipped = (ratio > 1.0 + clip_range.high) & (token_advantages > 0)  # [B, T]
        mask_bool = mask.bool()
        metrics = PolicyLossMetrics(
            clip_low_fraction=token_share(low_clipped.to(ratio.dtype), mask, total_tokens),
            clip_high_fraction=token_share(high_clipped.to(ratio.dtype), mask, total_tokens),
            approx_kl=token_share(ratio - 1.0 - log_ratio, mask, total_tokens),
            ratio_max=torch.where(mask_bool, ratio, 0.0).max(),
        )
    return loss, metrics


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor, *, total_tokens: float) -> Tensor:
    """k3 estimate of KL(current || reference), aggregated like `policy_loss`; the caller scales it.

    Per token: exp(ref - logprobs) - (ref - logprobs) - 1, nonnegative and unbiased for samples drawn
    from the current policy (Schulman, "Approximating KL divergence"). All tensors [B, T].
    """
    if logprobs.shape != ref_logprobs.shape:
        raise ValueError(f"logprobs {tuple(logprobs.shape)} != ref_logprobs {tuple(ref_logprobs.shape)}")
    difference = ref_logprobs.detach() - logprobs  # [B, T]
    per_token = torch.exp(difference) - difference - 1.0  # [B, T]
    return token_share(per_token, mask, total_tokens)


def truncated_importance_weights(
    learner_logprobs: Tensor,
    rollout_logprobs: Tensor,
    mask: Tensor,
    cap: float,
    *,
    total_tokens: float,
) -> tuple[Tensor, ImportanceWeightMetrics]:
    """Truncated importance sampling weights min(exp(learner - rollout), cap), detached: [B, T].

    Corrects for the rollout engine sampling from slightly different probabilities than the
    learner computes (kernels, precision): "Your efficient RL framework secretly brings you
    off-policy RL training" (Yao et al., 2025). learner_logprobs are the learner's old logprobs.
    Multiply the weights into the per-token loss. Masked positions get weight 0.
    """
    if cap <= 0:
        raise ValueError(f"importance weight cap must be positive, got {cap}")
    if learner_logprobs.shape != rollout_logprobs.shape or learner_logprobs.shape != mask.shape:
        raise ValueError(
            f"learner_logprobs {tuple(learner_logprobs.shape)}, rollout_logprobs "
            f"{tuple(rollout_logprobs.shape)} and mask {tuple(mask.shape)} must have one shape"
        )
    with torch.no_grad():
        difference = learner_logprobs - rollout_logprobs  # [B, T]
        # Clamping the exponent instead of the weight avoids overflow for large differences.
        weights = torch.exp(torch.clamp(difference, max=math.log(cap))) * mask  # [B, T]
        absolute_difference = difference.abs()  # [B, T]
        metrics = ImportanceWeightMetrics(
            logprob_diff_mean=token_share(absolute_difference, mask, total_tokens),
            logprob_diff_max=torch.where(mask.bool(), absolute_difference, 0.0).max(),
            weight_mean=token_share(weights, mask, total_tokens),
            capped_fraction=token_share((difference > math.log(cap)).to(weights.dtype), mask, total_tokens),
        )
    return weights, metrics
