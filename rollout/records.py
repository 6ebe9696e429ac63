"""Records that cross the rollout boundary: what to generate, what came back, what weights to serve."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from rollout.probe import SyncProbe


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


class SyncMode(str, Enum):
    ADAPTER = "adapter"  # load the LoRA as a new immutable adapter version
    MERGED = "merged"  # push LoRA-merged full weights into the running engine


@dataclass(frozen=True)
class WeightUpdate:
    """New weights ready for the engines: a PEFT adapter directory or a merged model directory."""

    version: int
    mode: SyncMode
    path: str
    probe: SyncProbe | None = None  # how each engine checks that it serves these weights (None: unchecked)
