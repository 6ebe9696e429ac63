"""Learner benchmark: trained tokens per second of our GRPO `train_step` against TRL's GRPOTrainer step.

Both sides train the embedded model or `--model DIR` (bf16, or fp32 on CPUs without native bf16 matmuls:
bench/common.py) with the same LoRA (rank 16, alpha 32, all linear layers), lr, clip range, grad clip and
token-level loss normalisation, on the same random token batch (B sequences of P prompt + C/4..C completion
tokens, fixed advantages), one optimizer step per batch, no KL term. Each side runs in its own child process and
the sides step in lockstep (bench/common.py), so both see the same machine load; one warm-up step, then the mean
over the timed steps.

What is timed:
- ours: `plan_step` (length bucketing; `--pack`: padding-free rows) + `Learner.train_step` (tensors, forward,
  backward, DeepSpeed ZeRO-2 optimizer step with grad clipping).
- TRL: one optimizer step of `GRPOTrainer.train()`, from `on_step_begin` to `on_step_end` (`training_step` with
  `compute_loss` forward + backward, grad clipping, optimizer, scheduler, zero_grad). Generation is excluded by
  replacing `_generate_and_score_completions` (the seam `_prepare_inputs` calls) with a function that returns
  the pre-built inputs dict (prompt/completion ids and masks, advantages, num_items_in_batch), exactly the
  shape TRL's own rollout produces; rewards are not computed. TRL's gradient checkpointing (its default) is
  off for the headline number so both sides do the same arithmetic; `trl_gc_tok_s` measures it on.
Trained tokens = real (unpadded) prompt + completion tokens per step, the same count for both sides.
Leaves out: generation and weight sync (bench/vs_trl.py), multi-rank training. On a GPU box see bench/gpu_smoke.py.

    .venv/bin/python bench/learner.py [--model DIR] [--batch 16] [--prompt-tokens 128] [--completion-tokens 128]
                                      [--completion-min 32] [--micro-batch-tokens 4096] [--pack] [--attn sdpa]
                                      [--trl-attn sdpa] [--trl-gc] [--dtype auto] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import get_args

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (Controller, load_average, lockstep_settings, log, peft_lora_config,  # noqa: E402
                          resolve_dtype, round_ratios, run_lockstep, side_setup, timed_summary, trl_grpo_config,
                          trl_lockstep_callback)
from learner.config import AttentionKernel  # noqa: E402

GROUP_SIZE = 4  # answers per question: TRL's num_generations (it only groups rewards, which are not computed here)


def random_batch(args: argparse.Namespace, vocab_size: int) -> list[tuple[list[int], list[int], float]]:
    """(prompt ids, completion ids, advantage) per sequence, from a fixed seed: identical in both children.
    Completion lengths are drawn from [completion_min, completion_tokens] (all equal by default)."""
    import torch

    generator = torch.Generator().manual_seed(args.seed)
    low, high = 100, vocab_size - 100  # keep clear of the special tokens at both ends
    rows = []
    for _ in range(args.batch):
        length = int(torch.randint(args.completion_min, args.completion_tokens + 1, (1,), generator=generator))
        prompt = torch.randint(low, high, (args.prompt_tokens,), generator=generator).tolist()
        completion = torch.randint(low, high, (length,), generator=generator).tolist()
        advantage = float(torch.randn((), generator=generator))
        rows.append((prompt, completion, advantage))
    return rows


def trained_tokens(rows) -> int:
    return sum(len(prompt) + len(completion) for prompt, completion, _ in rows)


def vocab_size(model_path: str) -> int:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model_path).vocab_size


# -- ours -----------------------------------------------------------------------------------------------------------
def run_ours(args: argparse.Namespace, model_path: str, controller: Controller) -> None:
    from learner.config import LearnerConfig
    from learner.records import TrainBatch, TrainSample
    from learner.trainer import Learner, LearnerSetup, plan_step

    rows = random_batch(args, vocab_size(model_path))
    config = LearnerConfig(micro_batch_tokens=args.micro_batch_tokens, pack_sequences=args.pack,
                           attn_implementation=args.attn)
    learner = Learner(config, LearnerSetup(model_path=model_path, dtype=args.dtype,
                                           max_model_len=args.prompt_tokens + args.completion_tokens))
    # Rollout logprobs = the learner's own (as from an engine serving the same weights): importance weights 1,
    # so the loss is the one TRL computes. Not timed.
    samples = []
    for prompt, completion, advantage in rows:
        own = learner.sequence_logprobs(prompt + completion)[len(prompt) - 1:]
        samples.append(TrainSample(tuple(prompt), tuple(completion), tuple(own), advantage))
    batch = TrainBatch(tuple(samples))
    controller.ready()
    padding, plan, step = 0.0, [[]], 0
    while controller.next_step():
        started = time.perf_counter()
        plan, padding = plan_step(batch, config.micro_batch_tokens, world_size=1, packed=config.pack_sequences)
        metrics = learner.train_step(plan[0], batch.response_tokens)
        seconds = time.perf_counter() - started
        step += 1
        log(f"ours step {step}: {seconds:.2f} s, loss {metrics['learner/loss']:.4f}, "
            f"grad norm {metrics['learner/grad_norm']:.4f}, micro-batches {metrics['learner/micro_batches']:.0f}")
        controller.report({"seconds": seconds, "load": load_average(), "loss": metrics["learner/loss"],
                           "grad_norm": metrics["learner/grad_norm"]})
    if args.profile:
        profile_step(learner, plan[0], batch.response_tokens)
    controller.finish({"tokens_per_step": trained_tokens(rows), "padding_fraction": padding,
                       "micro_batches": len(plan[0])})


def profile_step(learner, micro_batches, response_tokens: int) -> None:
    """One more train_step under torch.profiler; the top operators go to stderr."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as profiler:
        learner.train_step(micro_batches, response_tokens)
    log(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    log(profiler.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=15))


# -- TRL ------------------------------------------------------------------------------------------------------------
def trl_inputs(rows, pad_token_id: int) -> dict:
    """The dict `_generate_and_score_completions` returns: left-padded prompts, right-padded completions."""
    import torch

    prompt_width = max(len(prompt) for prompt, _, _ in rows)
    completion_width = max(len(completion) for _, completion, _ in rows)
    prompt_ids = torch.full((len(rows), prompt_width), pad_token_id, dtype=torch.long)  # [B, P]
    prompt_mask = torch.zeros(len(rows), prompt_width, dtype=torch.long)  # [B, P]
    completion_ids = torch.full((len(rows), completion_width), pad_token_id, dtype=torch.long)  # [B, C]
    completion_mask = torch.zeros(len(rows), completion_width, dtype=torch.long)  # [B, C]
    for row, (prompt, completion, _) in enumerate(rows):
        prompt_ids[row, prompt_width - len(prompt):] = torch.tensor(prompt)
        prompt_mask[row, prompt_width - len(prompt):] = 1
        completion_ids[row, :len(completion)] = torch.tensor(completion)
        completion_mask[row, :len(completion)] = 1
    return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
            "completion_mask": completion_mask,
            "advantages": torch.tensor([advantage for _, _, advantage in rows]),  # [B]
            "num_items_in_batch": completion_mask.sum()}


def no_reward(completions, **kwargs) -> list[float]:
    return [0.0] * len(completions)


def run_trl(args: argparse.Namespace, model_path: str, controller: Controller, gradient_checkpointing: bool) -> None:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOTrainer

    rows = random_batch(args, vocab_size(model_path))
    tokenizer = AutoTokenizer.from_pretrained(model_path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, args.dtype),
                                                 attn_implementation=args.trl_attn)
    with tempfile.TemporaryDirectory(prefix="bench-trl-") as output_dir:
        config = trl_grpo_config(output_dir, args.dtype, per_device_train_batch_size=args.batch,
                                 num_generations=GROUP_SIZE, max_completion_length=args.completion_tokens,
                                 max_steps=args.warmup + args.steps, gradient_checkpointing=gradient_checkpointing)
        dataset = Dataset.from_dict({"prompt": [f"unused prompt {index}" for index in range(args.batch)]})
        timer = trl_lockstep_callback(controller)
        trainer = GRPOTrainer(model=model, reward_funcs=no_reward, args=config, train_dataset=dataset,
                              processing_class=tokenizer, peft_config=peft_lora_config(), callbacks=[timer])
        fixed = trl_inputs(rows, tokenizer.pad_token_id)
        trainer._generate_and_score_completions = lambda generation_batch: dict(fixed)  # generation excluded
        controller.ready()
        trainer.train()
    controller.finish({"tokens_per_step": trained_tokens(rows), "gradient_checkpointing": gradient_checkpointing,
                       "logs": timer.logs})


# -- driver ---------------------------------------------------------------------------------------------------------
def side_main(args: argparse.Namespace) -> None:
    model_path, controller = side_setup(args.threads, args.reply_fd, args.model)
    if args.side == "ours":
        run_ours(args, model_path, controller)
    else:
        run_trl(args, model_path, controller, gradient_checkpointing=args.side == "trl-gc")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a local model directory (default: the embedded SmolLM2-135M)")
    parser.add_argument("--batch", type=int, default=16, help="sequences per step (a multiple of 4)")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--completion-tokens", type=int, default=128, help="longest completion")
    parser.add_argument("--completion-min", type=int, default=None,
                        help="shortest completion (default: a quarter of the longest; lengths vary as in rollouts)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the warm-up")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=["auto", "bfloat16", "float32"], default="auto",
                        help="weights and compute dtype of both sides; auto: bfloat16 only where the CPU "
                             "has native bf16 matmuls (see bench/common.resolve_dtype)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per side (0: torch's default)")
    parser.add_argument("--micro-batch-tokens", type=int, default=4096, help="ours: learner.micro_batch_tokens")
    parser.add_argument("--pack", action="store_true",
                        help="ours: learner.pack_sequences (one padding-free row per micro-batch)")
    parser.add_argument("--attn", choices=get_args(AttentionKernel), default="sdpa",
                        help="ours: learner.attn_implementation (flex_attention, flash_attention_2: CUDA only)")
    parser.add_argument("--trl-attn", choices=["sdpa", "eager", "flash_attention_2"], default="sdpa",
                        help="TRL's attention kernel (its padded batches)")
    parser.add_argument("--trl-gc", action="store_true", help="also time TRL with gradient checkpointing (its default)")
    parser.add_argument("--profile", action="store_true", help="profile one more step of ours (stderr)")
    parser.add_argument("--quick", action="store_true", help="4 sequences x (32 + 32) tokens, 1 timed step")
    parser.add_argument("--side", choices=["ours", "trl", "trl-gc"], help=argparse.SUPPRESS)
    parser.add_argument("--reply-fd", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.batch, args.prompt_tokens, args.completion_tokens, args.steps = 4, 32, 32, 1
    args.completion_min = args.completion_tokens // 4 if args.completion_min is None else args.completion_min
    args.dtype = resolve_dtype(args.dtype)
    if args.side:
        side_main(args)
        return

    forwarded = [f"--batch={args.batch}", f"--prompt-tokens={args.prompt_tokens}",
                 f"--completion-tokens={args.completion_tokens}", f"--completion-min={args.completion_min}",
                 f"--steps={args.steps}", f"--warmup={args.warmup}", f"--seed={args.seed}",
                 f"--threads={args.threads}", f"--dtype={args.dtype}", f"--attn={args.attn}",
                 f"--trl-attn={args.trl_attn}",
                 f"--micro-batch-tokens={args.micro_batch_tokens}"] + (["--pack"] if args.pack else []) + (
                    ["--profile"] if args.profile else []) + (
                    [f"--model={args.model}"] if args.model else [])
    started = time.perf_counter()
    load_before = load_average()
    names = ["ours", "trl"] + (["trl-gc"] if args.trl_gc else [])
    sides = run_lockstep(Path(__file__).resolve(), names, forwarded, args.warmup + args.steps)
    summaries = {name: timed_summary(side["steps"], args.warmup) for name, side in sides.items()}
    tokens = sides["ours"]["tokens_per_step"]
    rates = {name: tokens / summary["mean_step_s"] for name, summary in summaries.items()}
    result = {
        "ours_tok_s": round(rates["ours"], 1), "trl_tok_s": round(rates["trl"], 1),
        "ratio": round(rates["ours"] / rates["trl"], 3),
        "ratio_median": round(summaries["trl"]["median_step_s"] / summaries["ours"]["median_step_s"], 3),
        "ratio_spread": round_ratios(sides["ours"]["steps"], sides["trl"]["steps"], args.warmup),
        "trl_gc_tok_s": round(rates["trl-gc"], 1) if "trl-gc" in rates else None,
        "ratio_vs_trl_gc": round(rates["ours"] / rates["trl-gc"], 3) if "trl-gc" in rates else None,
        "ratio_vs_trl_gc_spread": round_ratios(sides["ours"]["steps"], sides["trl-gc"]["steps"], args.warmup)
        if "trl-gc" in rates else None,
        "step_s": {name: summary["step_s"] for name, summary in summaries.items()},
        "peak_rss_mb": max(side["peak_rss_mb"] for side in sides.values()),
        "peak_rss_mb_by_side": {name: side["peak_rss_mb"] for name, side in sides.items()},
        "first_step": {  # same LoRA init (seed 0) and data: loss and grad norm should agree
            "ours": {key: round(sides["ours"]["steps"][0][key], 4) for key in ("loss", "grad_norm")},
            "trl": {key: round(sides["trl"]["logs"][0][key], 4) for key in ("loss", "grad_norm")}
            if sides["trl"]["logs"] else None},
        "load_1m_by_step": {name: summary["load_1m"] for name, summary in summaries.items()},
        "load_average": {"start": load_before, "end": load_average()},
        "settings": {"model": args.model or "smollm2-135m", "dtype": args.dtype, "batch": args.batch,
                     "prompt_tokens": args.prompt_tokens, "completion_tokens": args.completion_tokens,
                     "completion_min": args.completion_min, "tokens_per_step": tokens,
                     "ours_micro_batches": sides["ours"]["micro_batches"], "attn": args.attn, "trl_attn": args.trl_attn,
                     "ours_micro_batch_tokens": args.micro_batch_tokens, "ours_packed": args.pack,
                     "ours_padding_fraction": round(sides["ours"]["padding_fraction"], 4),
                     "trl_gradient_checkpointing": False, **lockstep_settings(args)},
        "total_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    from rollout.exit_cleanup import no_orphans

    with no_orphans():
        main()
