"""The learner's config section: LoRA shape, optimizer, precision and GRPO loss knobs (selfplay.config composes it
into the run config; `Section` is the frozen, strict base every section uses)."""

from __future__ import annotations

from typing import Any, Literal, get_origin

from pydantic import BaseModel, ConfigDict, Field, model_validator

AttentionKernel = Literal["sdpa", "eager", "flex_attention", "flash_attention_2"]  # transformers' names


class Section(BaseModel):
    # A number typed for a text field is that text (run.name=1.5); a comma-separated text for a list field is
    # that list (run.train_roles=solver or solver,judge).
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, coerce_numbers_to_str=True)

    @model_validator(mode="before")
    @classmethod
    def _text_for_a_list(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        lists = {name for name, field in cls.model_fields.items() if get_origin(field.annotation) in (tuple, list)}
        return {key: [part.strip() for part in value.split(",")] if key in lists and isinstance(value, str)
                else value for key, value in data.items()}


class LoRAConfig(Section):
    rank: int = Field(16, ge=1, description="LoRA rank r of every adapted matrix")
    alpha: int = Field(32, ge=1, description="LoRA scale numerator: updates are scaled by alpha / rank")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA input while training")
    target_modules: tuple[str, ...] = Field(
        ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"), min_length=1, description=(
            "module names that get a LoRA adapter (the model's linear layers; a comma-separated list on the command "
            "line)"))


class LearnerConfig(Section):
    num_workers: int = Field(1, ge=1, description="data-parallel learner ranks (gloo on CPU, nccl on GPU)")
    cpus_per_worker: float = Field(1.0, gt=0, description="Ray CPUs reserved per learner rank")
    gpus_per_worker: float = Field(0.0, ge=0, description="Ray GPUs reserved per learner rank (0 on CPU)")
    placement: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field("PACK", description=(
        "Ray placement-group strategy of the ranks: PACK fills a node before the next; STRICT_SPREAD one per node"))
    call_timeout_s: float = Field(3600.0, gt=0, description=(
        "seconds one learner call (a training step, an export, a checkpoint, a probe) may take on every rank; a "
        "rank that has not answered by then (stuck in a collective, or in native code) stops the run with one "
        "line naming the rank and the call"))
    lr: float = Field(1e-5, gt=0, lt=1, description="AdamW learning rate of the LoRA weights (SFT and GRPO)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    warmup_steps: int = Field(0, ge=0, description="optimizer steps of linear learning-rate warm-up from 0 (0 = none)")
    zero_stage: Literal[0, 1, 2] = Field(2, description=(
        "DeepSpeed ZeRO stage; 3 is not supported (the rank-0 weight export needs the LoRA weights gathered)"))
    compute_dtype: Literal["auto", "bfloat16", "float32"] = Field("auto", description=(
        "training precision; auto = the model dtype on GPUs and on CPUs with native bf16 matmuls, float32 on "
        "other CPUs (there bf16 matmuls fall back to slow reference kernels: 50-90x slower backward measured)"))
    grad_clip: float = Field(1.0, gt=0, description="global gradient-norm clip per optimizer step")
    gradient_checkpointing: bool = Field(False, description=(
        "recompute activations in the backward pass: far less memory for long micro-batches, about a third more "
        "compute"))
    micro_batch_tokens: int = Field(4096, ge=64, description=(
        "tokens per micro-batch: padding included (length bucketing), or the packed row's tokens (pack_sequences)"))
    pad_multiple: int = Field(1, ge=1, description=(
        "padded micro-batch rows are this many tokens wide, rounded up: fewer distinct tensor shapes, so fewer "
        "kernels compiled and cached per shape (oneDNN on CPUs keeps up to 1024), for a little padding"))
    pack_sequences: bool = Field(False, description=(
        "padding-free micro-batches: one row of samples end to end, positions restarting at each sample, no "
        "padding computed. Pays with a kernel that skips attention across samples (attn_implementation "
        "flex_attention or flash_attention_2, GPUs); with sdpa or eager a row's attention is dense over all its "
        "tokens: 0.99x TRL on a 2-core CPU, where length bucketing ran at 1.68-1.89x"))
    attn_implementation: AttentionKernel = Field("sdpa", description=(
        "the learner model's attention kernel (transformers). flex_attention (torch's own) and flash_attention_2 "
        "(the flash-attn package) need CUDA: torch has no flex_attention backward on CPUs"))
    logits_chunk_tokens: int = Field(1024, ge=16, description=(
        "positions per output-layer chunk when computing logprobs: bounds the [tokens, vocab] logits in memory"))
    ppo_epochs: int = Field(1, ge=1, description="passes over each rollout batch")
    mini_batches: int = Field(1, ge=1, description=(
        "optimizer steps per pass: the batch shuffled and split into this many parts. With more than one update "
        "per batch (ppo_epochs * mini_batches > 1) the old logprobs are taken before the first, so the clip acts "
        "from the second update on"))
    clip_low: float = Field(0.2, ge=0, lt=1, description=(
        "PPO clip below 1 - clip_low for negative advantages; inactive with one update per batch (ratio 1)"))
    clip_high: float = Field(0.28, ge=0, description="PPO clip above 1 + clip_high for positive advantages (DAPO)")
    kl_coef: float = Field(0.0, ge=0, description="KL to the base model (LoRA disabled); 0 skips the extra pass")
    importance_cap: float = Field(2.0, ge=1, description="truncation of learner/engine importance weights")
    normalize_std: bool = Field(False, description=(
        "divide group advantages by the group std (GRPO). Off by default (Dr. GRPO: reward minus the group mean): "
        "the std division blows a group whose answers differ only by format up to the scale of a right-or-wrong "
        "signal (an all-wrong group of 8 with one unparsed answer: +0.35 and -2.47); "
        "solver/outcome_free_advantage_share_{mean_only,std} log that share of the solver's update both ways"))
    adapters: Literal["shared", "per_role"] = Field("shared", description=(
        "shared: one LoRA adapter trained on every role's samples and served to every role. per_role: one adapter "
        "per role on the same frozen base, each trained on its role's samples only with its own optimizer state, "
        "and served to its role's requests; needs rollout.sync_mode adapter (on CPUs vLLM generated 0.31x as "
        "fast through its LoRA kernels as with merged weights: rollout.config.resolve_sync_mode)"))
    role_token_mean: bool = Field(False, description=(
        "give every trained role an equal share of the loss (a token mean per role, averaged over roles) instead "
        "of its share of the batch's response tokens (learner/token_share_ROLE)"))
    lora: LoRAConfig = LoRAConfig()
