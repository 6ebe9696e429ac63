"""Merging LoRA adapters of one or several runs: linear averaging, SLERP and TIES, in the space of the weight deltas.

Each adapter is turned into its per-module delta (B @ A * scaling, the change it makes to a base weight); the deltas
are merged; the result is factored back into a LoRA adapter by SVD. Linear and SLERP results are linear
combinations of the inputs, so a rank of the inputs' summed ranks holds them exactly; a TIES result is not low-rank
and its truncation error is reported. TIES trimming and sign election come from PEFT's merge utilities; SLERP, which
PEFT does not have, follows mergekit's definition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

Method = Literal["linear", "slerp", "ties"]
METHODS: tuple[str, ...] = ("linear", "slerp", "ties")
LORA_A, LORA_B = ".lora_A.weight", ".lora_B.weight"


class MergeError(ValueError):
    """Adapters that cannot be merged as asked (one line)."""


@dataclass(frozen=True)
class LoRAFactors:
    """A rank-r factorisation delta = B @ A * scaling of each module's weight change."""

    a: dict[str, torch.Tensor]  # module name -> [r, in]
    b: dict[str, torch.Tensor]  # module name -> [out, r]
    scaling: float

    def deltas(self) -> dict[str, torch.Tensor]:
        return {name: (self.b[name].float() @ self.a[name].float()) * self.scaling for name in self.a}


def lora_factors(tensors: dict[str, torch.Tensor], scaling: float) -> LoRAFactors:
    """Split PEFT adapter tensors ('X.lora_A.weight', 'X.lora_B.weight'; any '.default' adapter name already
    removed) into factors by module name X."""
    a = {name[:-len(LORA_A)]: tensor for name, tensor in tensors.items() if name.endswith(LORA_A)}
    b = {name[:-len(LORA_B)]: tensor for name, tensor in tensors.items() if name.endswith(LORA_B)}
    if not a or a.keys() != b.keys():
        raise MergeError("adapter tensors are not lora_A/lora_B pairs of the same modules")
    return LoRAFactors(a, b, scaling)


def normalized(weights: list[float]) -> torch.Tensor:
    if any(weight < 0 for weight in weights) or sum(weights) <= 0:
        raise MergeError(f"merge weights must be non-negative with a positive sum, got {weights}")
    total = sum(weights)
    return torch.tensor([weight / total for weight in weights], dtype=torch.float32)


def linear(deltas: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """Weighted average (weights normalised to sum 1)."""
    return sum(weight * delta for weight, delta in zip(normalized(weights).tolist(), deltas))


def slerp(first: torch.Tensor, second: torch.Tensor, t: float, eps: float = 1e-8) -> torch.Tensor:
    """Spherical interpolation from `first` (t=0) to `second` (t=1) along the angle between their directions;
    linear interpolation where the two are (anti)parallel within `eps` or either is zero (as mergekit does)."""
    if not 0.0 <= t <= 1.0:
        raise MergeError(f"slerp t must be in [0, 1], got {t}")
    norm_first, norm_second = first.norm(), second.norm()
    if norm_first < eps or norm_second < eps:
        return (1 - t) * first + t * second
    dot = float(torch.sum(first / norm_first * second / norm_second).clamp(-1.0, 1.0))
    if abs(dot) > 1 - eps:
        return (1 - t) * first + t * second
    theta = math.acos(dot)
    return (math.sin((1 - t) * theta) * first + math.sin(t * theta) * second) / math.sin(theta)


def ties(deltas: list[torch.Tensor], weights: list[float], density: float) -> torch.Tensor:
    """TIES-merging (Yadav et al. 2023): keep each delta's top `density` share by magnitude, elect each entry's sign
    by the summed mass, and average the entries that agree with it, weighted (normalised over those entries, as
    mergekit's default)."""
    from peft.utils.merge_utils import calculate_majority_sign_mask, prune

    if not 0.0 < density <= 1.0:
        raise MergeError(f"ties density must be in (0, 1], got {density}")
    trimmed = torch.stack([delta if density >= 1 else prune(delta, density, method="magnitude") for delta in deltas])
    agrees = calculate_majority_sign_mask(trimmed, method="total")  # a zero's sign never agrees
    shape = (-1,) + (1,) * (trimmed.dim() - 1)
    weight = normalized(weights).view(shape) * agrees
    return (trimmed * weight).sum(dim=0) / weight.sum(dim=0).clamp(min=1e-12)


def merge_deltas(deltas: list[torch.Tensor], method: Method, weights: list[float] | None = None, t: float = 0.5,
                 density: float = 1.0) -> torch.Tensor:
    weights = weights or [1.0] * len(deltas)
    if len(weights) != len(deltas):
        raise MergeError(f"{len(weights)} weights for {len(deltas)} adapters")
    if method == "linear":
        return linear(deltas, weights)
    if method == "slerp":
        if len(deltas) != 2:
            raise MergeError(f"slerp merges exactly two adapters, got {len(deltas)}")
        return slerp(deltas[0], deltas[1], t)
    if method == "ties":
        return ties(deltas, weights, density)
    raise MergeError(f"unknown merge method {method!r}; choose one of {', '.join(METHODS)}")


@dataclass(frozen=True)
class MergedAdapter:
    factors: LoRAFactors
    relative_error: float  # worst module's ||merged - factored||_F / ||merged||_F (0 when the rank holds it)


def factor(deltas: dict[str, torch.Tensor], rank: int) -> MergedAdapter:
    """Best rank-`rank` factors of each delta (truncated SVD), with scaling 1: delta ~= B @ A."""
    a, b, worst = {}, {}, 0.0
    for name, delta in deltas.items():
        u, s, vh = torch.linalg.svd(delta.float(), full_matrices=False)
        keep = min(rank, s.numel())
        root = s[:keep].sqrt()
        b_full = torch.zeros(delta.shape[0], rank)
        a_full = torch.zeros(rank, delta.shape[1])
        b_full[:, :keep] = u[:, :keep] * root
        a_full[:keep] = root[:, None] * vh[:keep]
        a[name], b[name] = a_full, b_full
        norm = float(delta.norm())
        if norm > 0:
            worst = max(worst, float((delta - b_full @ a_full).norm()) / norm)
    return MergedAdapter(LoRAFactors(a, b, 1.0), worst)


def merge_adapters(adapters: list[LoRAFactors], method: Method, weights: list[float] | None = None, t: float = 0.5,
                   density: float = 1.0, rank: int | None = None) -> MergedAdapter:
    """Merge adapters module by module; `rank` defaults to the inputs' summed ranks (exact for linear and slerp)."""
    if not adapters:
        raise MergeError("no adapters to merge")
    modules = adapters[0].a.keys()
    for index, adapter in enumerate(adapters[1:], start=2):
        if adapter.a.keys() != modules:
            raise MergeError(f"adapter {index} adapts other modules than adapter 1 "
                             f"(e.g. {sorted(adapter.a.keys() ^ modules)[0]})")
        for name in modules:
            if (adapter.b[name].shape[0], adapter.a[name].shape[1]) != (adapters[0].b[name].shape[0],
                                                                        adapters[0].a[name].shape[1]):
                raise MergeError(f"adapter {index} changes {name} with another shape than adapter 1 "
                                 "(another base model?)")
    rank = rank or sum(next(iter(adapter.a.values())).shape[0] for adapter in adapters)
    per_adapter = [adapter.deltas() for adapter in adapters]
    merged = {name: merge_deltas([deltas[name] for deltas in per_adapter], method, weights, t, density)
              for name in modules}
    return factor(merged, rank)
