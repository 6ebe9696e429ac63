"""Records that cross the rollout boundary: what to generate and what came back (the weights to serve are the
learner's records: learner.weights)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol, Sequence


@dataclass(frozen=True)
class SamplingSpec:
    """Per-request sampling parameters (mapped onto vLLM's SamplingParams)."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 128
    stop: tuple[str, ...] = ()
    seed: int | None = None  # None: unseeded; else the base of the samples' seeds (`sample_seeds`)
    ignore_eos: bool = False


def stream_seed(*parts: object) -> int:
    """A seed in [0, 2^63) hashed from `parts` (ints, strings, tuples of them): each distinct `parts` names its
    own random stream, and two of N streams share a seed with probability below N^2 / 2^64."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "big") >> 1


def sample_seeds(seed: int | None, prompt_token_ids: Sequence[int], n: int) -> list[int | None]:
    """The seed of each of a request's `n` samples, hashed from the request's seed, its prompt and the sample's
    index. vLLM's own rule for n > 1 (sample j gets seed + j) would give request i's second sample the stream of
    request i + 1's first. The prompt keeps apart requests that got one seed in different calls (players number
    seeds per call); only the same prompt at the same position of two calls with one spec shares a stream."""
    if seed is None:
        return [None] * n
    request = stream_seed(seed, tuple(prompt_token_ids))
    return [stream_seed(request, index) for index in range(n)]


@dataclass(frozen=True)
class GenerationRequest:
    """One chat prompt (rendered once with the tokenizer's chat template) and how to sample it."""

    messages: tuple[dict[str, str], ...]  # [{"role": "user", "content": ...}, ...]
    sampling: SamplingSpec = SamplingSpec()
    role: str = ""  # the self-play role asking: engines serving one adapter per role answer with its adapter


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
