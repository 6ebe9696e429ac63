"""End-to-end GRPO step time: this system (vLLM engine + our Learner + merged weight sync) against TRL's
GRPOTrainer (generation with transformers `generate`, `use_vllm=False`; with --trl-vllm also TRL with its vLLM
integration in colocate mode, then the headline), on the same solver-only workload.

Workload, both sides: Q seed questions (configs/seeds/tiny-math.jsonl) as solver prompts (agents.prompts), N
answers each (one GRPO group per question), up to T new tokens at temperature 1.0, reward = the answer's format
score (1 for exactly one well-formed <answer> tag, agents.parsing), group-normalised advantages, one optimizer
step per batch of Q x N, the same model, dtype, LoRA, lr, clip range and loss normalisation (bench/common.py).
The sides run in child processes that step in lockstep, so both see the same machine load; one warm-up step,
then the mean over the timed steps.

What is timed (wall clock per step):
- ours, in-process (no Ray), as `selfplay.iteration` runs it: `Engine.generate` (vLLM, eager, merged-weight
  mode, served in float32 as the product serves it), rewards and advantages, `plan_step` +
  `Learner.train_step`, then `Learner.export` (merged weights with
  the sync probe, calibrated at start and advanced every step as the product does) + `Engine.apply_update`
  (in-place reload, prefix-cache reset, probe check). Phases are
  reported separately too.
- TRL: one optimizer step of `GRPOTrainer.train()` from `on_step_begin` to `on_step_end`: its generation
  (`model.generate` with the LoRA adapter active), reward, advantages, forward + backward, optimizer step. TRL
  needs no weight sync (it samples from the model it trains). Gradient checkpointing off (see bench/common.py).
  Its generation phase (`_generate_single_turn`, i.e. `model.generate`) is also reported separately.
Completion lengths differ between the sides (sampling); the mean length per side is reported next to the times,
and `--ignore-eos` makes every answer T tokens long on both sides.
Leaves out: the proposer and judge roles, Ray actors, multi-engine pools, GPU runs.

    .venv/bin/python bench/vs_trl.py [--questions 4] [--answers 4] [--max-tokens 64] [--steps 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (Controller, load_average, lockstep_settings, log, mean, peft_lora_config,  # noqa: E402
                          resolve_dtype, round_ratios, run_lockstep, side_setup, timed_summary, trl_grpo_config,
                          trl_lockstep_callback)

SEED_FILE = Path(__file__).resolve().parents[1] / "configs" / "seeds" / "tiny-math.jsonl"


def questions(count: int) -> list[str]:
    rows = [json.loads(line) for line in SEED_FILE.read_text().splitlines() if line.strip()]
    if len(rows) < count:
        raise SystemExit(f"--questions {count}: {SEED_FILE} has only {len(rows)} questions")
    return [row["question"] for row in rows[:count]]


def answer_reward(text: str) -> float:
    from agents.parsing import parse_answer

    return parse_answer(text).format_score


# -- ours -----------------------------------------------------------------------------------------------------------
def run_ours(args: argparse.Namespace, model_path: str, controller: Controller) -> None:
    import torch
    from transformers import AutoTokenizer

    from agents.prompts import solver_messages
    from learner.config import LearnerConfig
    from learner.grpo import group_advantages
    from learner.records import TrainBatch, TrainSample
    from learner.trainer import Learner, LearnerSetup, plan_step
    from learner.weights import SyncMode, SyncProbe, scratch_dir
    from rollout.config import RolloutConfig, resolve_engine_dtype
    from rollout.engine import Engine, EngineSpec
    from rollout.host import bind_cpu_share
    from rollout.probe import calibrated
    from rollout.records import GenerationRequest, SamplingSpec
    from selfplay.wiring import probe_token_ids

    bind_cpu_share(0, 1)  # the cores the product's lone CPU engine gets (EngineHost does the same)
    engine_dtype = resolve_engine_dtype(RolloutConfig(sync_mode="merged"), args.dtype)  # as the product serves it
    engine = Engine(EngineSpec(model_path=model_path, dtype=engine_dtype, max_model_len=args.max_model_len,
                               kv_cache_gb=args.kv_cache_gb, enforce_eager=True, sync_mode=SyncMode.MERGED))
    learner = Learner(LearnerConfig(), LearnerSetup(model_path=model_path, dtype=args.dtype, export_dtype=engine_dtype,
                                                    max_model_len=args.max_model_len))
    probe_tokens = tuple(probe_token_ids(AutoTokenizer.from_pretrained(model_path)))
    start = SyncProbe(probe_tokens, tuple(learner.sequence_logprobs(list(probe_tokens))))
    probe = calibrated(start, [engine.read_probe(start)], RolloutConfig().sync_tolerance,
                       (learner.compute_dtype, engine_dtype))  # as the product does
    sampling = SamplingSpec(n=args.answers, max_tokens=args.max_tokens, temperature=1.0, ignore_eos=args.ignore_eos)
    requests = [GenerationRequest(tuple(solver_messages(question)), sampling) for question in questions(args.questions)]
    export_dir = scratch_dir("bench-vs-trl-")
    controller.ready()
    version = 0
    try:
        while controller.next_step():
            started = time.perf_counter()
            completions = engine.generate(requests)
            generated = time.perf_counter()
            samples, rewards, groups = [], [], []
            for group, completion in enumerate(completions):
                for sample in completion.samples:
                    samples.append((completion.prompt_token_ids, sample))
                    rewards.append(answer_reward(sample.text))
                    groups.append(group)
            advantages, _ = group_advantages(torch.tensor(rewards), torch.tensor(groups), normalize_std=True)
            batch = TrainBatch(tuple(TrainSample(prompt, sample.token_ids, sample.logprobs, float(advantage),
                                                 temperature=1.0, role="solver")
                                     for (prompt, sample), advantage in zip(samples, advantages)))
            learner.check_batch(batch)
            plan, _ = plan_step(batch, learner.config.micro_batch_tokens, world_size=1)
            metrics = learner.train_step(plan[0], batch.response_tokens)
            trained = time.perf_counter()
            version += 1
            update = learner.export(version, SyncMode.MERGED, str(export_dir), probe)
            sync = engine.apply_update(update)
            probe = update.probe
            finished = time.perf_counter()
            lengths = [len(sample.token_ids) for _, sample in samples]
            reply = {"seconds": finished - started, "load": load_average(),
                     "generate_s": generated - started, "train_s": trained - generated, "sync_s": finished - trained,
                     "mean_completion_tokens": mean(lengths), "reward_mean": mean(rewards),
                     "loss": metrics["learner/loss"], "probe_gap": sync["probe_gap"]}
            log(f"ours step {version}: " + ", ".join(f"{key} {value:.3f}" if isinstance(value, float) else
                                                     f"{key} {value}" for key, value in reply.items()))
            controller.report(reply)
    finally:
        shutil.rmtree(export_dir, ignore_errors=True)
    controller.finish({})


# -- TRL ------------------------------------------------------------------------------------------------------------
def trl_answer_reward(completions, **kwargs) -> list[float]:
    """TRL reward function: completions are chat turns [{"role": "assistant", "content": text}] (or text)."""
    texts = [completion if isinstance(completion, str) else completion[-1]["content"] for completion in completions]
    return [answer_reward(text) for text in texts]


def run_trl(args: argparse.Namespace, model_path: str, controller: Controller) -> None:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOTrainer

    from agents.prompts import solver_messages

    tokenizer = AutoTokenizer.from_pretrained(model_path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, args.dtype))
    dataset = Dataset.from_dict({"prompt": [solver_messages(question) for question in questions(args.questions)]})
    holder: dict = {}

    def step_fields() -> dict:
        """Generation time, completion length and reward of the step just finished (the last two from TRL's own
        metrics)."""
        metrics = holder["trainer"]._metrics["train"]
        return {"generate_s": holder.pop("generate_s"),
                "mean_completion_tokens": metrics["completions/mean_length"][-1], "reward_mean": metrics["reward"][-1]}

    def timed(generate):
        """Wrap TRL's `_generate_single_turn` (its `model.generate` call) to time the generation phase."""
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            output = generate(*args, **kwargs)
            holder["generate_s"] = time.perf_counter() - started
            return output
        return wrapper

    with tempfile.TemporaryDirectory(prefix="bench-vs-trl-") as output_dir:
        # TRL's vLLM integration as its docs recommend for one machine: colocate mode (an in-process vLLM engine,
        # weights pushed into it before each generation); on CPU the KV cache size comes from VLLM_CPU_KVCACHE_SPACE
        vllm = ({"use_vllm": True, "vllm_mode": "colocate", "vllm_max_model_length": args.max_model_len,
                 "vllm_gpu_memory_utilization": 0.3} if args.side == "trl-vllm" else {})
        if vllm:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(args.kv_cache_gb))))
        ignore_eos = ({"min_new_tokens": args.max_tokens} if not vllm else {"ignore_eos": True}) if args.ignore_eos \
            else None
        config = trl_grpo_config(
            output_dir, args.dtype, per_device_train_batch_size=args.questions * args.answers,
            num_generations=args.answers, max_completion_length=args.max_tokens, temperature=1.0, top_p=1.0,
            max_steps=args.warmup + args.steps, generation_kwargs=ignore_eos, **vllm)
        trainer = GRPOTrainer(model=model, reward_funcs=trl_answer_reward, args=config, train_dataset=dataset,
                              processing_class=tokenizer, peft_config=peft_lora_config(),
                              callbacks=[trl_lockstep_callback(controller, step_fields)])
        holder["trainer"] = trainer
        trainer._generate_single_turn = timed(trainer._generate_single_turn)  # vLLM's generate too, in vLLM mode
        controller.ready()
        trainer.train()
    controller.finish({})


# -- driver ---------------------------------------------------------------------------------------------------------
def side_main(args: argparse.Namespace) -> None:
    model_path, controller = side_setup(args.threads, args.reply_fd)
    if args.side == "ours":
        run_ours(args, model_path, controller)
    else:
        run_trl(args, model_path, controller)


def timed_mean(steps: list[dict], warmup: int, key: str) -> float:
    return round(mean([step[key] for step in steps[warmup:]]), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--answers", type=int, default=4, help="answers per question (the GRPO group)")
    parser.add_argument("--max-tokens", type=int, default=64, help="max new tokens per answer")
    parser.add_argument("--ignore-eos", action="store_true", help="every answer exactly --max-tokens long")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the warm-up")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--dtype", choices=["auto", "bfloat16", "float32"], default="auto",
                        help="model dtype of both sides; auto: bfloat16 only where the CPU has native bf16 matmuls")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per side (0: torch's default)")
    parser.add_argument("--kv-cache-gb", type=float, default=0.5)
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--quick", action="store_true", help="2 questions x 2 answers x 8 tokens, 1 timed step")
    parser.add_argument("--trl-vllm", action="store_true", help=(
        "add a third side: TRL with its vLLM integration in colocate mode (use_vllm=True)"))
    parser.add_argument("--side", choices=["ours", "trl", "trl-vllm"], help=argparse.SUPPRESS)
    parser.add_argument("--reply-fd", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.questions, args.answers, args.max_tokens, args.steps = 2, 2, 8, 1
    args.dtype = resolve_dtype(args.dtype)
    if args.side:
        side_main(args)
        return

    forwarded = [f"--questions={args.questions}", f"--answers={args.answers}", f"--max-tokens={args.max_tokens}",
                 f"--steps={args.steps}", f"--warmup={args.warmup}", f"--dtype={args.dtype}",
                 f"--threads={args.threads}", f"--kv-cache-gb={args.kv_cache_gb}",
                 f"--max-model-len={args.max_model_len}"] + (["--ignore-eos"] if args.ignore_eos else [])
    started = time.perf_counter()
    load_before = load_average()
    names = ["ours", "trl"] + (["trl-vllm"] if args.trl_vllm else [])
    sides = run_lockstep(Path(__file__).resolve(), names, forwarded, args.warmup + args.steps)
    summaries = {name: timed_summary(side["steps"], args.warmup) for name, side in sides.items()}
    ours_s, trl_s = summaries["ours"]["mean_step_s"], summaries["trl"]["mean_step_s"]
    peer = "trl-vllm" if args.trl_vllm else "trl"  # TRL at its best where it runs: its vLLM integration
    result = {
        "headline": {"peer": peer, "speedup": round(summaries[peer]["mean_step_s"] / ours_s, 3),
                     "spread": round_ratios(sides["ours"]["steps"], sides[peer]["steps"], args.warmup)},
        "ours_s_per_step": ours_s, "trl_s_per_step": trl_s, "speedup": round(trl_s / ours_s, 3),
        "speedup_median": round(summaries["trl"]["median_step_s"] / summaries["ours"]["median_step_s"], 3),
        "speedup_spread": round_ratios(sides["ours"]["steps"], sides["trl"]["steps"], args.warmup),
        "speedup_vs_trl_vllm": round(summaries["trl-vllm"]["mean_step_s"] / ours_s, 3) if args.trl_vllm else None,
        "speedup_vs_trl_vllm_spread": round_ratios(sides["ours"]["steps"], sides["trl-vllm"]["steps"], args.warmup)
        if args.trl_vllm else None,
        "step_s": {name: summary["step_s"] for name, summary in summaries.items()},
        "ours_phases_s": {key: timed_mean(sides["ours"]["steps"], args.warmup, key)
                          for key in ("generate_s", "train_s", "sync_s")},
        "trl_generate_s": {name: timed_mean(sides[name]["steps"], args.warmup, "generate_s")
                           for name in names if name != "ours"},
        "mean_completion_tokens": {name: timed_mean(side["steps"], args.warmup, "mean_completion_tokens")
                                   for name, side in sides.items()},
        "reward_mean": {name: timed_mean(side["steps"], args.warmup, "reward_mean") for name, side in sides.items()},
        "peak_rss_mb": {name: side["peak_rss_mb"] for name, side in sides.items()},
        "idle_cpu_s": {name: side["idle_cpu_s"] for name, side in sides.items()},
        "load_1m_by_step": {name: summary["load_1m"] for name, summary in summaries.items()},
        "load_average": {"start": load_before, "end": load_average()},
        "settings": {"model": "smollm2-135m", "dtype": args.dtype, "questions": args.questions,
                     "answers": args.answers, "batch": args.questions * args.answers, "max_tokens": args.max_tokens,
                     "ignore_eos": args.ignore_eos, "temperature": 1.0, "kv_cache_gb": args.kv_cache_gb,
                     "ours": "vLLM eager engine + Learner (DeepSpeed ZeRO-2) + merged sync, one process tree",
                     "trl": "GRPOTrainer, use_vllm=False, gradient_checkpointing=False",
                     "trl-vllm": "GRPOTrainer, use_vllm=True, vllm_mode=colocate" if args.trl_vllm else None,
                     **lockstep_settings(args)},
        "total_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    from rollout.exit_cleanup import no_orphans

    with no_orphans():
        main()
