"""Smoke check of the learner on a bare GPU box (no vLLM, no Ray, no network): GRPO steps, both weight
exports reloaded in HF/PEFT and compared with the learner's own logprobs on a probe sequence, a checkpoint round
trip, peak memory. Prints one final JSON line; exits 1 when a check fails.

    python bench/gpu_smoke.py --model DIR [--steps 3] [--batch 16] [--prompt-tokens 128] [--completion-tokens 128]
                              [--pack] [--attn sdpa]

It runs on a CPU too (the embedded model by default), which is how the test suite keeps it working.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import get_args

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import offline, peak_rss_mb, resolve_dtype  # noqa: E402
from bench.learner import random_batch, vocab_size  # noqa: E402
from learner.config import AttentionKernel  # noqa: E402

RELOAD_TOLERANCE = {"float32": 1e-3, "bfloat16": 0.1, "float16": 0.1}  # max |logprob difference| of a reload


def hf_logprobs(model, token_ids: list[int]) -> list[float]:
    """Logprob of tokens 1..P-1 of `token_ids` under a transformers model ([P - 1])."""
    import torch

    ids = torch.tensor([token_ids], device=model.device)  # [1, P]
    with torch.no_grad():
        logits = model(ids).logits[0, :-1].float()  # [P - 1, V]
    return logits.log_softmax(-1).gather(-1, ids[0, 1:, None]).squeeze(-1).tolist()


def max_difference(first: list[float], second: list[float]) -> float:
    return max(abs(a - b) for a, b in zip(first, second, strict=True))


def reloaded_logprobs(model_path: str, dtype: str, probe: list[int], adapter: str | None = None,
                      merged: str | None = None) -> list[float]:
    """The probe's logprobs under the base model, the base plus a PEFT adapter, or a merged model directory."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(merged or model_path, dtype=getattr(torch, dtype)).to(device)
    if adapter:
        model = PeftModel.from_pretrained(model, adapter).to(device)
    logprobs = hf_logprobs(model.eval(), probe)
    del model
    return logprobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a local model directory (default: the embedded SmolLM2-135M)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--completion-tokens", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3, help="large enough that the update shows in the probe")
    parser.add_argument("--dtype", choices=["auto", "bfloat16", "float32"], default="auto")
    parser.add_argument("--micro-batch-tokens", type=int, default=4096)
    parser.add_argument("--pack", action="store_true", help="learner.pack_sequences: padding-free rows")
    parser.add_argument("--attn", choices=get_args(AttentionKernel), default="sdpa",
                        help="learner.attn_implementation")
    args = parser.parse_args()
    args.seed, args.completion_min = 0, args.completion_tokens // 4
    offline()
    import torch
    from safetensors.torch import save_file

    from learner.config import LearnerConfig
    from learner.export import merged_from_adapter
    from learner.records import TrainBatch, TrainSample
    from learner.trainer import Learner, LearnerSetup, plan_step
    from learner.weights import SyncMode

    started = time.perf_counter()
    dtype = resolve_dtype(args.dtype)
    if args.model is None:
        from selfplay.embedded_model import prepare_embedded_model

        args.model = str(prepare_embedded_model("smollm2-135m"))
    result: dict = {"model": args.model, "dtype": dtype, "packed": args.pack, "attn": args.attn,
                    "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}
    config = LearnerConfig(lr=args.lr, micro_batch_tokens=args.micro_batch_tokens, pack_sequences=args.pack,
                           attn_implementation=args.attn)
    learner = Learner(config, LearnerSetup(model_path=args.model, dtype=dtype,
                                           max_model_len=args.prompt_tokens + args.completion_tokens))
    result["learner_start_s"] = round(time.perf_counter() - started, 2)
    rows = random_batch(args, vocab_size(args.model))
    batch = TrainBatch(tuple(TrainSample(tuple(prompt), tuple(completion),
                                         tuple(learner.sequence_logprobs(prompt + completion)[len(prompt) - 1:]),
                                         advantage) for prompt, completion, advantage in rows))
    steps = []
    for _ in range(args.steps):
        began = time.perf_counter()
        plan, _ = plan_step(batch, config.micro_batch_tokens, world_size=1, packed=config.pack_sequences)
        metrics = learner.train_step(plan[0], batch.response_tokens)
        steps.append({"seconds": round(time.perf_counter() - began, 3), "loss": round(metrics["learner/loss"], 5),
                      "grad_norm": round(metrics["learner/grad_norm"], 5)})
    result["steps"] = steps
    result["trained_tokens_per_s"] = round(sum(len(p) + len(c) for p, c, _ in rows) / steps[-1]["seconds"], 1)

    probe = list(rows[0][0] + rows[0][1])[:64]
    expected = learner.sequence_logprobs(probe)
    checks = {}
    with tempfile.TemporaryDirectory(prefix="gpu-smoke-") as scratch:
        for mode in (SyncMode.ADAPTER, SyncMode.MERGED):
            began = time.perf_counter()
            update = learner.export(1, mode, scratch)  # an adapter in both modes
            merged = None
            if mode is SyncMode.MERGED:  # what an engine's worker loads: the adapter merged into the base files
                merged = Path(scratch) / "merged"
                merged.mkdir()
                shutil.copy(Path(args.model) / "config.json", merged)
                save_file(dict(merged_from_adapter(args.model, update.path, getattr(torch, dtype))),
                          merged / "model.safetensors", metadata={"format": "pt"})
            seconds = time.perf_counter() - began
            served = reloaded_logprobs(args.model, dtype, probe, adapter=update.path if merged is None else None,
                                       merged=str(merged) if merged else None)
            checks[f"{mode.value}_export"] = {"seconds": round(seconds, 3),
                                              "max_diff": round(max_difference(expected, served), 6)}
        base_diff = max_difference(expected, reloaded_logprobs(args.model, dtype, probe))
        checks["base_max_diff"] = round(base_diff, 6)  # the update must show: far above the reloads' differences

        saved = learner.lora_parameters()
        learner.save_checkpoint(str(Path(scratch) / "checkpoint"))
        plan, _ = plan_step(batch, config.micro_batch_tokens, world_size=1, packed=config.pack_sequences)
        learner.train_step(plan[0], batch.response_tokens)
        learner.load_checkpoint(str(Path(scratch) / "checkpoint"))
        restored = learner.lora_parameters()
        checks["checkpoint_restored_exactly"] = all(torch.equal(saved[name], restored[name]) for name in saved)
    result["checks"] = checks
    tolerance = RELOAD_TOLERANCE[dtype]
    result["passed"] = bool(checks["adapter_export"]["max_diff"] <= tolerance
                            and checks["merged_export"]["max_diff"] <= tolerance
                            and base_diff > max(checks["adapter_export"]["max_diff"],
                                                checks["merged_export"]["max_diff"])
                            and checks["checkpoint_restored_exactly"])
    result["reload_tolerance"] = tolerance
    result["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None
    result["peak_rss_mb"] = peak_rss_mb()
    result["total_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result), flush=True)
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
