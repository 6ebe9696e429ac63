"""Records the learner consumes: one trajectory per sample, with the advantage the caller computed."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainSample:
    """One prompt + sampled response. The learner is algorithm-blind: it trains on `advantage` as given."""

    prompt_token_ids: tuple[int, ...]  # [P]
    response_token_ids: tuple[int, ...]  # [R]
    rollout_logprobs: tuple[float, ...]  # [R] the engine's logprobs of the response tokens
    advantage: float
    temperature: float = 1.0  # sampling temperature: logits are scaled the same way
    role: str = ""  # for error messages and per-role metrics
    old_logprobs: tuple[float, ...] | None = None  # [R] the policy's before the batch's first update; None = current
    filler: bool = False  # a copy that only keeps a data-parallel rank in step (learner.packing): loss counts zero

    @property
    def length(self) -> int:
        return len(self.prompt_token_ids) + len(self.response_token_ids)


@dataclass(frozen=True)
class TrainBatch:
    """The global batch of one update (all roles together)."""

    samples: tuple[TrainSample, ...]

    @property
    def response_tokens(self) -> int:
        return sum(len(sample.response_token_ids) for sample in self.samples)
