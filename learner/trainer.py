"""The DeepSpeed learner: LoRA adapters on one frozen base, GRPO steps on the advantages it is given. One adapter
shared by all roles (`SHARED_ADAPTER`), or one per role, each with its own DeepSpeed engine and optimizer state:
a step on one role's samples leaves the other roles' adapters and Adam moments as they were (one flat ZeRO
optimizer over all of them would move them on zero gradients, by their moments and weight decay).

Plain class, one instance per data-parallel rank (`learner.group` runs them as Ray actors). Per step:
length-bucketed micro-batches (no padding waste beyond the bucket; with `pack_sequences`, one padding-free
row each), one forward+backward each, one optimizer step. There is a single policy update per batch, so the
"old" policy of the PPO ratio is the current one (ratio 1, gradient of the plain policy gradient); the rollout
engine's logprobs enter through truncated importance weights instead. That saves a forward pass per step; the
KL reference (adapter disabled) costs one extra no-grad forward only when `kl_coef > 0`.

Loss aggregation: every micro-batch contributes sum(token losses) / (response tokens of the whole global
batch); DeepSpeed averages gradients over ranks, so the loss is multiplied by world_size to keep that a sum.
"""

from __future__ import annotations

import math
import os
import random
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from learner import grpo
from learner.config import LearnerConfig
from learner.export import export_adapter, export_bytes, peft_lora_config
from learner.hardware import resolve_compute_dtype
from learner.logprobs import token_logprobs
from learner.memory import peak_resident_gb, release_device_cache, release_free_heap, resident_gb
from learner.packing import pack_micro_batches, padding_fraction, round_up, split_across_ranks
from learner.records import TrainBatch, TrainSample
from learner.weights import ExportDirectories, SyncMode, SyncProbe, WeightUpdate, read_files

SHARED_ADAPTER = "default"  # PEFT's name for a model's only adapter: exports write it at the top of their directory
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
GPU_ATTENTION = ("flex_attention", "flash_attention_2")  # no training on CPUs: torch has no flex backward there


class BatchError(ValueError):
    """A training batch that cannot be trained on (names the sample)."""


@dataclass(frozen=True)
class LearnerSetup:
    """What a learner rank needs besides its config section."""

    model_path: str
    dtype: str = "bfloat16"
    """The model's dtype: what learner.compute_dtype auto resolves from."""
    export_dtype: str | None = None
    """The engines' dtype, which weight exports are written in; None = `dtype`."""
    max_model_len: int = 2048
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    master_address: str = "127.0.0.1"
    master_port: int = 0  # 0: pick a free port (single rank only)
    adapters: tuple[str, ...] = (SHARED_ADAPTER,)
    """The LoRA adapters trained: one shared by every role, or one named after each role (its samples train it)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def _init_distributed(setup: LearnerSetup) -> None:
    import deepspeed

    if setup.master_port == 0 and setup.world_size > 1:
        raise ValueError("a multi-rank learner needs an agreed master_port")
    os.environ.update({"RANK": str(setup.rank), "LOCAL_RANK": "0" if torch.cuda.is_available() else str(setup.rank),
                       "WORLD_SIZE": str(setup.world_size), "MASTER_ADDR": setup.master_address,
                       "MASTER_PORT": str(setup.master_port or free_port())})
    # On CPU DeepSpeed JIT-builds its shared-memory comm op with the first `ninja` on PATH. The venv's ninja and a
    # system one write incompatible build logs, so alternating between them rebuilt the op (a minute on 2 cores)
    # at every start; always use this environment's tools.
    tools, path = str(Path(sys.executable).parent), os.environ.get("PATH", "")
    if not path.startswith(tools + os.pathsep):
        os.environ["PATH"] = os.pathsep.join([tools, path])
    if setup.world_size == 1 and not torch.cuda.is_available():
        # The shared-memory comm op only speeds up all-reduces between CPU ranks; a lone rank has none, and
        # building it costs a minute or two on every fresh machine.
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)


def deepspeed_config(config: LearnerConfig, dtype: str) -> dict:
    return {
        "train_micro_batch_size_per_gpu": 1,  # micro-batches are built here; DeepSpeed never sees a data loader
        "gradient_accumulation_steps": 1,
        "gradient_clipping": config.grad_clip,
        "zero_optimization": {"stage": config.zero_stage},
        "bf16": {"enabled": dtype == "bfloat16", "check_grad_overflow": True},
        "fp16": {"enabled": dtype == "float16"},
        "optimizer": {"type": "AdamW", "params": {"lr": config.lr, "weight_decay": config.weight_decay,
                                                  "torch_adam": True}},
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    } | ({"scheduler": {"type": "WarmupLR", "params": {"warmup_min_lr": 0.0, "warmup_max_lr": config.lr,
                                                       "warmup_num_steps": config.warmup_steps}}}
         if config.warmup_steps else {})


class Learner:
    def __init__(self, config: LearnerConfig, setup: LearnerSetup) -> None:
        if not torch.cuda.is_available():  # say so, rather than have DeepSpeed warn that it found no accelerator
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        import deepspeed
        from peft import get_peft_model
        from transformers import AutoModelForCausalLM

        self.config, self.setup = config, setup
        torch.manual_seed(setup.seed + setup.rank)
        if not torch.cuda.is_available():
            # Ray sets OMP_NUM_THREADS to the actor's CPU reservation (1); training and generation take turns, so
            # the learner may use this machine's share of cores while it trains.
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // setup.world_size))
        _init_distributed(setup)
        self.compute_dtype = resolve_compute_dtype(config.compute_dtype, setup.dtype, torch.cuda.is_available())
        if config.attn_implementation in GPU_ATTENTION and not torch.cuda.is_available():
            raise ValueError(f"learner.attn_implementation {config.attn_implementation} needs a CUDA GPU; "
                             f"use sdpa on CPUs")
        base = AutoModelForCausalLM.from_pretrained(setup.model_path, dtype=DTYPES[self.compute_dtype],
                                                    attn_implementation=config.attn_implementation)
        base.config.use_cache = False
        if config.gradient_checkpointing:  # recompute each layer's activations in the backward pass
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            base.enable_input_require_grads()  # the frozen embeddings would otherwise cut the LoRA gradients
        model = get_peft_model(base, peft_lora_config(config.lora), adapter_name=setup.adapters[0])
        for name in setup.adapters[1:]:
            model.add_adapter(name, peft_lora_config(config.lora))
        self._engines = {}
        for name in setup.adapters:
            model.set_adapter(name)  # only the active adapter's weights require gradients
            trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
            self._engines[name], *_ = deepspeed.initialize(model=model, model_parameters=trainable,
                                                           config=deepspeed_config(config, self.compute_dtype))
        self.model = model
        self._use(setup.adapters[0])
        self.step_count = 0
        self.skipped_steps = 0
        # DeepSpeed skips steps only for optimizers with an overflow flag (engine._take_model_step)
        self._has_overflow_path = hasattr(self.engine.optimizer, "overflow")
        self._export_dirs = ExportDirectories()  # removed by remove_exports when the run ends
        self._check_output_layer()

    @property
    def engine(self):
        """The DeepSpeed engine of the active adapter (they share the model: any of them runs its forward)."""
        return self._engines[self.model.active_adapter]

    def _use(self, adapter: str) -> None:
        """Make `adapter` the one the model computes with and the only one that requires gradients."""
        if adapter not in self._engines:
            raise BatchError(f"no adapter {adapter!r}: this learner trains {', '.join(self._engines)}")
        if self.model.active_adapter != adapter:
            self.model.set_adapter(adapter)

    # -- forward ------------------------------------------------------------------------------------------------
    def _micro_batch_tensors(self, samples: list[TrainSample],
                             pad_multiple: int | None = None) -> dict[str, torch.Tensor]:
        """Padded: one row per sample, left-padded. Packed (`pack_sequences`): one row of the samples end to end,
        positions restarting at each and no attention mask (transformers reads the sequence boundaries from the
        restarts). Either way `predict` [B, R] indexes the flattened hidden states that predict each response
        token and `targets` [B, R] holds that token; responses are right-aligned in R."""
        device = self.engine.device
        packed = self.config.pack_sequences
        rows, width = ((1, sum(s.length for s in samples)) if packed
                       else (len(samples), round_up(max(s.length for s in samples),
                                                    pad_multiple or self.config.pad_multiple)))
        response_width = max(len(sample.response_token_ids) for sample in samples)
        input_ids = torch.zeros(rows, width, dtype=torch.long)  # [rows, T]
        attention = torch.zeros(rows, width, dtype=torch.long)  # [rows, T]
        positions = torch.zeros(rows, width, dtype=torch.long)  # [rows, T]
        predict = torch.zeros(len(samples), response_width, dtype=torch.long)  # [B, R]
        targets = torch.zeros(len(samples), response_width, dtype=torch.long)  # [B, R]
        response_mask = torch.zeros(len(samples), response_width)  # [B, R]
        rollout_logprobs = torch.zeros(len(samples), response_width)  # [B, R]
        has_old = all(sample.old_logprobs is not None for sample in samples)
        old_logprobs = torch.zeros(len(samples), response_width)  # [B, R]
        start = 0
        for index, sample in enumerate(samples):
            tokens = sample.prompt_token_ids + sample.response_token_ids
            row, start = (0, start) if packed else (index, width - len(tokens))
            end = start + len(tokens)
            input_ids[row, start:end] = torch.tensor(tokens)
            attention[row, start:end] = 1
            positions[row, start:end] = torch.arange(len(tokens))
            count = len(sample.response_token_ids)
            slots = slice(response_width - count, None)
            first = row * width + end - count - 1  # the position that predicts the first response token
            predict[index] = first  # masked slots read a real position too
            predict[index, slots] = torch.arange(first, first + count)
            targets[index, slots] = torch.tensor(sample.response_token_ids)
            response_mask[index, slots] = 1
            rollout_logprobs[index, slots] = torch.tensor(sample.rollout_logprobs)
            if has_old:
                old_logprobs[index, slots] = torch.tensor(sample.old_logprobs)
            start = end
        return {"input_ids": input_ids.to(device), "position_ids": positions.to(device),
                "predict": predict.to(device), "targets": targets.to(device),
                "response_mask": response_mask.to(device), "rollout_logprobs": rollout_logprobs.to(device),
                "temperatures": torch.tensor([s.temperature for s in samples], device=device),
                "advantages": torch.tensor([s.advantage for s in samples], device=device)} | (
                {} if packed else {"attention_mask": attention.to(device)}) | (
                {"old_logprobs": old_logprobs.to(device)} if has_old else {})

    def _response_logprobs(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logprobs of the response tokens under the current model: [B, R] (fp32)."""
        # The model's own logits are not used: keep one position's. As an index tensor, not the int 1: the slice
        # [:, -1:] is not contiguous, and torch then runs the output layer as a bmm over the weight expanded per
        # row, copying the weight per row (0.9 GB for 16 rows of SmolLM2 on a CPU; 10 GB for Qwen2.5-3B, if so).
        output = self.engine(input_ids=tensors["input_ids"], attention_mask=tensors.get("attention_mask"),
                             position_ids=tensors["position_ids"], output_hidden_states=True,
                             logits_to_keep=torch.zeros(1, dtype=torch.long, device=tensors["input_ids"].device))
        hidden = output.hidden_states[-1]  # [rows, T, H], after the final norm
        predicting = hidden.reshape(-1, hidden.shape[-1])[tensors["predict"]]  # [B, R, H]
        return token_logprobs(self.model.get_output_embeddings(), predicting, tensors["targets"],
                              tensors["temperatures"], self.config.logits_chunk_tokens)

    # -- one update ---------------------------------------------------------------------------------------------
    def check_batch(self, batch: TrainBatch) -> None:
        for index, sample in enumerate(batch.samples):
            if sample.length > self.setup.max_model_len:
                raise BatchError(f"sample {index} ({sample.role or 'unknown role'}) has {sample.length} tokens, "
                                 f"more than the model's context of {self.setup.max_model_len}")
            if not sample.response_token_ids or len(sample.response_token_ids) != len(sample.rollout_logprobs):
                raise BatchError(f"sample {index} ({sample.role}): {len(sample.response_token_ids)} response tokens "
                                 f"but {len(sample.rollout_logprobs)} rollout logprobs")

    def train_step(self, micro_batches: list[list[TrainSample]], global_response_tokens: int,
                   adapter: str = SHARED_ADAPTER) -> dict[str, float]:
        """One optimizer step of `adapter` on this rank's micro-batches (see `plan_step`); every rank gets the same
        number. `global_response_tokens` counts the response tokens of all ranks together."""
        if global_response_tokens == 0 or not micro_batches:
            return {"learner/empty_batch": 1.0}
        self._use(adapter)
        started = time.perf_counter()
        totals: dict[str, float] = {}
        nonfinite = False
        self.engine.train()
        for position, samples in enumerate(micro_batches):
            last = position == len(micro_batches) - 1
            self.engine.set_gradient_accumulation_boundary(last)
            loss, metrics = self._micro_batch_loss(samples, global_response_tokens)
            finite, filler = bool(torch.isfinite(loss)), all(sample.filler for sample in samples)
            nonfinite = self._on_any_rank(nonfinite or not finite) if last else nonfinite or not finite
            # Every rank runs every backward pass (ZeRO-2 reduces gradients inside them); a filler's counts zero.
            scale = float(self.setup.world_size) if finite and not filler else 0.0
            if nonfinite and last and self._has_overflow_path:
                # ZeRO-2 has already reduced the earlier micro-batches' gradients into its partitions, which
                # zero_grad does not clear. NaN gradients on every rank send step() down DeepSpeed's overflow
                # path: partitions and buffers dropped, no optimizer or scheduler step, the skip counted.
                scale = math.nan
            self.engine.backward(loss.nan_to_num(0.0, 0.0, 0.0) * scale, scale_wrt_gas=False)
            if not filler:
                for key, value in metrics.items():
                    totals[key] = (max(totals.get(key, value), value) if key.endswith("_max")
                                   else totals.get(key, 0) + value)
        skipped_before = self.engine.skipped_steps
        if self._has_overflow_path:
            self.engine.step()
            skipped = self.engine.skipped_steps > skipped_before
        else:  # the bare torch optimizer of ZeRO-0 in float32: gradients are whole, reduced, and unchecked
            skipped = self._on_any_rank(nonfinite or not all(
                bool(torch.isfinite(p.grad).all()) for p in self.model.parameters() if p.grad is not None))
            if skipped:
                self.engine.zero_grad()
            else:
                self.engine.step()
        if nonfinite and not skipped:
            raise RuntimeError("DeepSpeed applied an update that should have been skipped (non-finite loss)")
        self.skipped_steps += int(skipped)
        self.step_count += 1
        grad_norm = self.engine.get_global_grad_norm()
        release_free_heap()  # the step's freed activations go back to the OS (learner.memory)
        release_device_cache()  # ... and on a GPU to the driver, for an engine sharing the card
        totals.update({
            "learner/grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
            "learner/skipped_nonfinite": float(skipped),
            "learner/skipped_total": float(self.skipped_steps),
            "learner/micro_batches": float(len(micro_batches)),
            "learner/tokens": float(sum(sample.length for samples in micro_batches for sample in samples
                                        if not sample.filler)),
            "learner/lr": float(self.engine.get_lr()[0]),
            "learner/step_seconds": time.perf_counter() - started,
            "memory/learner_rss_gb": resident_gb(),
            "memory/learner_peak_rss_gb": peak_resident_gb(),
        })
        return totals

    def _on_any_rank(self, flag: bool) -> bool:
        """Whether `flag` is set on any rank (a collective: every rank calls it)."""
        value = torch.tensor([float(flag)], device=self.engine.device)
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
        return bool(value.item())

    def _micro_batch_loss(self, samples: list[TrainSample], total_tokens: int) -> tuple[torch.Tensor, dict]:
        tensors = self._micro_batch_tensors(samples)
        mask = tensors["response_mask"]  # [B, R]
        logprobs = self._response_logprobs(tensors)  # [B, R]
        # One update per batch: the old policy is the current one (ratio 1, the clip inactive). Several: the
        # policy before the batch's first update (`policy_logprobs`), as in PPO.
        old = tensors.get("old_logprobs", logprobs.detach())  # [B, R]
        weights, importance = grpo.truncated_importance_weights(
            old, tensors["rollout_logprobs"], mask, self.config.importance_cap, total_tokens=total_tokens)
        loss, policy = grpo.policy_loss(
            logprobs, old, tensors["advantages"], mask, total_tokens=total_tokens,
            clip_range=grpo.ClipRange(self.config.clip_low, self.config.clip_high), importance_weights=weights)
        metrics = {"learner/policy_loss": loss.item(),
                   "learner/clip_fraction": (policy.clip_low_fraction + policy.clip_high_fraction).item(),
                   "learner/approx_kl": policy.approx_kl.item(), "learner/ratio_max": policy.ratio_max.item(),
                   "learner/importance_logprob_diff_mean": importance.logprob_diff_mean.item(),
                   "learner/importance_logprob_diff_max": importance.logprob_diff_max.item(),
                   "learner/importance_weight_mean": importance.weight_mean.item(),
                   "learner/importance_capped_fraction": importance.capped_fraction.item()}
        if self.config.kl_coef > 0:
            with torch.no_grad(), self.model.disable_adapter():
                reference = self._response_logprobs(tensors)  # [B, R]
            kl = grpo.kl_penalty(logprobs, reference, mask, total_tokens=total_tokens)
            loss = loss + self.config.kl_coef * kl
            metrics["learner/kl"] = kl.item()
        metrics["learner/loss"] = loss.item()
        return loss, metrics

    @torch.no_grad()
    def policy_logprobs(self, samples: list[TrainSample]) -> list[tuple[float, ...]]:
        """Each sample's response logprobs under the current weights of its adapter ([R] each): the old policy of a
        batch that gets several updates."""
        self.engine.eval()
        result: list[tuple[float, ...]] = [()] * len(samples)
        for adapter, indices in adapter_indices(samples, tuple(self._engines)).items():
            self._use(adapter)
            lengths = [samples[index].length for index in indices]
            for micro_batch in pack_micro_batches(lengths, self.config.micro_batch_tokens,
                                                  self.config.pack_sequences, self.config.pad_multiple):
                chosen = [samples[indices[position]] for position in micro_batch.indices]
                logprobs = self._response_logprobs(self._micro_batch_tensors(chosen)).float().cpu()  # [B, R]
                for row, sample in enumerate(chosen):
                    count = len(sample.response_token_ids)
                    result[indices[micro_batch.indices[row]]] = tuple(logprobs[row, logprobs.shape[1] - count:]
                                                                      .tolist())
        return result

    @torch.no_grad()
    def drift_from_base(self, samples: list[TrainSample]) -> float:
        """How far the adapters moved the model from the base on `samples`' responses (each through its role's
        adapter): the token-mean k3 estimate of KL(current || base), the estimator of the KL loss term."""
        current = self.policy_logprobs(samples)
        with self.model.disable_adapter():
            base = self.policy_logprobs(samples)
        current_tokens = torch.tensor([value for row in current for value in row])[None]  # [1, N]
        base_tokens = torch.tensor([value for row in base for value in row])[None]  # [1, N]
        tokens = current_tokens.shape[1]
        return grpo.kl_penalty(current_tokens, base_tokens, torch.ones_like(current_tokens),
                               total_tokens=max(tokens, 1)).item()

    # -- probes -------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sequence_logprobs(self, token_ids: list[int], adapter: str | None = None) -> list[float]:
        """Logprob of tokens 1..P-1 given their prefix under the current weights of `adapter` (default: the
        first) (sync probe). [P - 1]"""
        self._use(adapter or self.setup.adapters[0])
        self.engine.eval()
        sample = TrainSample(tuple(token_ids[:1]), tuple(token_ids[1:]), (0.0,) * (len(token_ids) - 1), 0.0)
        # unpadded: one sequence needs no shape bucketing, and in bf16 the extra padding moved these logprobs past
        # the output-layer check's 1e-2 tolerance
        return self._response_logprobs(self._micro_batch_tensors([sample], pad_multiple=1))[0].tolist()

    @torch.no_grad()
    def _check_output_layer(self) -> None:
        """The chunked logprobs assume logits = output_layer(last hidden state); models that rescale or soft-cap
        logits after that layer would train on wrong logprobs, so refuse them here."""
        self.engine.eval()
        ids = torch.arange(2, 10, device=self.engine.device)[None]  # [1, 8]
        full = torch.log_softmax(self.engine(input_ids=ids).logits[0, :-1].float(), -1)  # [7, V]
        expected = full.gather(-1, ids[0, 1:, None]).squeeze(-1)  # [7]
        got = torch.tensor(self.sequence_logprobs(ids[0].tolist()), device=expected.device)
        if not torch.allclose(got, expected, atol=1e-2):
            raise ValueError(f"{self.setup.model_path}: logits are not the output layer applied to the last hidden "
                             f"state (logit scaling or soft-capping?); the learner does not support this model")

    def lora_parameters(self) -> dict[str, torch.Tensor]:
        """Every adapter's LoRA weights, by parameter name (adapter names inside)."""
        return {name: parameter.detach().clone() for name, parameter in self.model.named_parameters()
                if ".lora_" in name}

    # -- checkpoints --------------------------------------------------------------------------------------------
    def save_checkpoint(self, directory: str) -> None:
        """Adapters, optimizer, scheduler, step and RNG states (every rank calls it; DeepSpeed is collective): one
        DeepSpeed checkpoint per adapter (`checkpoint_tag`), each holding only that adapter's weights."""
        state = {"learner_step_count": self.step_count, "learner_skipped_steps": self.skipped_steps,
                 "torch_rng": torch.get_rng_state(), "python_rng": random.getstate()}
        for adapter in self._engines:
            self._use(adapter)  # exclude_frozen_parameters keeps the weights that require gradients: this adapter's
            self.engine.save_checkpoint(directory, tag=checkpoint_tag(adapter), client_state=state,
                                        exclude_frozen_parameters=True)

    def save_adapter(self, directory: str) -> str:
        """The adapter as a standard PEFT directory (float32), for PEFT, vLLM and launch/eval.py."""
        return str(export_adapter(self.model, Path(directory), torch.float32))

    def load_checkpoint(self, directory: str) -> None:
        for adapter in self._engines:
            self._use(adapter)
            _, state = self.engine.load_checkpoint(directory, tag=checkpoint_tag(adapter), load_module_strict=False)
            if state is None:
                raise FileNotFoundError(f"no learner checkpoint of adapter {adapter} in {directory}")
        self.step_count, self.skipped_steps = state["learner_step_count"], state["learner_skipped_steps"]
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])

    # -- export -------------------------------------------------------------------------------------------------
    def export(self, version: int, mode: SyncMode, directory: str,
               probe: SyncProbe | dict[str, SyncProbe] | None = None) -> WeightUpdate:
        """Write weight version `version` for the engines. With the previous version's probe (one for all
        adapters, or one per role: `WeightUpdate.probes`), the update carries each adapter's advanced to these
        weights, so each engine can verify what it serves."""
        dtype = DTYPES[self.setup.export_dtype or self.setup.dtype]
        needed = export_bytes(self.model, merged=False, dtype=dtype)
        target = self._export_dirs.place(Path(directory), mode, version, needed) / f"{mode.value}-v{version}"
        export_adapter(self.model, target, dtype)  # merged sync too: the engine's worker merges it (worker_extension)
        advanced = {}
        for adapter in self._engines if probe else ():
            previous = probe.get("" if adapter == SHARED_ADAPTER else adapter) if isinstance(probe, dict) else probe
            if previous is None:
                raise ValueError(f"no previous probe of adapter {adapter} to advance")
            advanced[adapter] = previous.advanced(tuple(self.sequence_logprobs(list(previous.token_ids), adapter)))
        release_free_heap()  # the pages the export and the probe's forward pass freed, until the next step
        release_device_cache()  # ... and their blocks on a GPU
        if tuple(self._engines) == (SHARED_ADAPTER,):
            return WeightUpdate(version=version, mode=mode, path=str(target), probe=advanced.get(SHARED_ADAPTER))
        return WeightUpdate(version=version, mode=mode, path=str(target),
                            role_probes=tuple((adapter, advanced.get(adapter)) for adapter in self._engines))

    def remove_exports(self) -> None:
        """Remove the directories this learner exported to (weights in /dev/shm are memory: a finished run
        must not keep them)."""
        self._export_dirs.remove()

    def write_marker(self, directory: str) -> str:
        """A small file in `directory` (created), whose name says which rank wrote it."""
        marker = Path(directory) / f".rank-{self.setup.rank}-{os.getpid()}-{time.time_ns()}"
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("written by a learner rank: the driver checks that it can read the run directory\n")
        return str(marker)

    def read_export(self, path: str) -> dict[str, bytes]:
        """An export's files, for engines on nodes that cannot read this one's disk."""
        return read_files(path)

def checkpoint_tag(adapter: str) -> str:
    """The DeepSpeed checkpoint tag of `adapter`'s weights and optimizer state in a learner checkpoint."""
    return "learner" if adapter == SHARED_ADAPTER else f"learner-{adapter}"


def adapter_indices(samples: Sequence[TrainSample], adapters: tuple[str, ...]) -> dict[str, list[int]]:
    """Which samples each adapter trains on, by index, in order: all of them for one shared adapter, else each
    sample's role's. Raises BatchError for a role without an adapter."""
    if adapters == (SHARED_ADAPTER,):
        return {SHARED_ADAPTER: list(range(len(samples)))} if samples else {}
    indices: dict[str, list[int]] = {}
    for index, sample in enumerate(samples):
        if sample.role not in adapters:
            raise BatchError(f"sample {index} has role {sample.role or 'unknown'!r}, which has no adapter "
                             f"(adapters: {', '.join(adapters)})")
        indices.setdefault(sample.role, []).append(index)
    return indices


def plan_updates(batch: TrainBatch, epochs: int, mini_batches: int, seed: int) -> list[TrainBatch]:
    """The updates of one batch: `epochs` passes, each a fresh shuffle split into `mini_batches` near-equal parts
    (empty parts dropped). Every pass covers every sample exactly once."""
    rng = random.Random(seed)
    updates = []
    for _ in range(epochs):
        order = list(range(len(batch.samples)))
        rng.shuffle(order)
        size, extra = divmod(len(order), mini_batches)
        start = 0
        for part in range(mini_batches):
            end = start + size + (part < extra)
            if end > start:
                updates.append(TrainBatch(tuple(batch.samples[index] for index in order[start:end])))
            start = end
    return updates


def plan_step(batch: TrainBatch, token_budget: int, world_size: int, packed: bool = False,
              pad_multiple: int = 1) -> tuple[list[list[list[TrainSample]]], float]:
    """Length-bucketed micro-batches of the global batch (`packed`: the budget counts tokens, for a learner with
    `pack_sequences`; padded rows `pad_multiple` wide, rounded up), split so every rank gets the same count (filler
    copies, whose loss counts zero, where the samples cannot go round). Returns ([rank][micro-batch][sample],
    padding fraction of the real micro-batches)."""
    micro_batches = pack_micro_batches([sample.length for sample in batch.samples], token_budget, packed,
                                       pad_multiple)
    plan = [[[replace(batch.samples[index], filler=True) if micro_batch.filler else batch.samples[index]
              for index in micro_batch.indices] for micro_batch in rank_batches]
            for rank_batches in split_across_ranks(micro_batches, world_size)]
    return plan, padding_fraction(micro_batches)
