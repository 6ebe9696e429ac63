"""Records that cross the rollout boundary: what to generate and what came back (the weights to serve are the
learner's records: learner.weights)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class SamplingSpec:
    """Per-request sampling parameters (mapped onto vLLM's SamplingParams)."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 128
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False


@dataclass(frozen=True)
class GenerationRequest:
    """One chat prompt (rendered once with the tokenizer's chat template) and how to sample it."""

    messages: tuple[dict[str, str], ...]  # [{"role": "user", "content": ...}, ...]
    sampling: SamplingSpec = SamplingSpec()


PROMPT_TOO_LONG = "prompt_too_long"  # finish reason of a sample never generated: its prompt filled the context


@dataclass(frozen=True)
class Sample:
    """One generated continuation. `token_ids` and `logprobs` have the same length T."""

    text: str
    token_ids: tuple[int, ...]  # [T]
    logprobs: tuple[float, ...]  # [T] engine logprob of each sampled token (after temperature)
    finish_reason: str


@dataclass(frozen=True)
class Completion:
    """All samples for one request, with the prompt tokens the learner will train on."""

    prompt_token_ids: tuple[int, ...]  # [P]
    samples: tuple[Sample, ...]  # [n]
    weight_version: int


class Generator(Protocol):
    """Anything that answers generation requests in order: an engine pool, or one in-process engine."""

    def generate(self, requests: list[GenerationRequest]) -> list[Completion]: ...
