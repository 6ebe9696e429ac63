"""Learner memory benchmark: resident memory of a learner rank over training steps of changing shapes, with the
product's handling (glibc's heap trimmed after every step, oneDNN's and ideep's kernel caches capped:
learner/memory.py), with glibc's default, with glibc's mmap threshold fixed at 1 MiB instead of trimming, with the
trim and a threshold fixed at `--threshold-mib` (8 by default), with oneDNN's or ideep's default cache, and with
both caches at `--small-cache` kernels.

Each arm is a child process that builds the real `Learner` (DeepSpeed ZeRO-2, LoRA r=16 on all linear layers, the
embedded model or `--model DIR`, bf16 or fp32 as the product picks) and runs `--steps` steps of `--samples`
random sequences each (prompt 64-400 and response 8-128 tokens, drawn per step from a fixed seed, so both arms
see the same batches), reading its resident memory after each step. The arms run one after the other, each with
the whole machine. The allocator arms are the same code with `release_free_heap` turned into a no-op; the
`onednn_default_cache` arm trims but runs with oneDNN's own cache capacity (1024 kernels), `ideep_default_cache`
with ideep's (PyTorch's oneDNN wrapper, `LRU_CACHE_CAPACITY`, 1024), `small_caches` with both at `--small-cache`
(16 by default).
`--pad-multiple` rounds padded rows as `learner.pad_multiple` does (64 in configs/arithmetic-cpu.yaml). `--export`
follows each step with what an iteration does next, a weight export with the sync probe (written, then removed),
and reads the resident memory after it too.

    .venv/bin/python bench/learner_memory.py [--model DIR] [--steps 12] [--samples 12] [--pad-multiple 1]
        [--threshold-mib 8] [--small-cache 16] [--export]
        [--arms trim,glibc_default,fixed_threshold,trim_fixed_threshold,onednn_default_cache,ideep_default_cache,
                small_caches]

Final line: JSON with each arm's resident GiB after every step (and after every export), its growth from step 2 to
the last (after the exports where there are any), its peak and its mean seconds per step.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import log, offline, resolve_dtype, run_arms  # noqa: E402

ARMS = ("trim", "glibc_default", "fixed_threshold", "trim_fixed_threshold", "onednn_default_cache",
        "ideep_default_cache", "small_caches")
ONEDNN_CACHE = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
IDEEP_CACHE = "LRU_CACHE_CAPACITY"
DEFAULT_CAPACITY = "1024"  # oneDNN's and ideep's own


def run_arm(args: argparse.Namespace) -> dict:
    import random

    import learner.trainer
    from learner.config import LearnerConfig
    from learner.memory import fix_mmap_threshold, peak_resident_gb, resident_gb
    from learner.records import TrainBatch, TrainSample
    from learner.trainer import Learner, LearnerSetup, plan_step
    from learner.weights import SyncMode, SyncProbe
    from selfplay.embedded_model import resolve_model_path

    if args.arm in ("glibc_default", "fixed_threshold"):  # the product trims the heap after every step
        learner.trainer.release_free_heap = lambda: False
    if args.arm == "fixed_threshold":
        fix_mmap_threshold()
    if args.arm == "trim_fixed_threshold":
        fix_mmap_threshold(args.threshold_mib << 20)
    config = LearnerConfig(pad_multiple=args.pad_multiple)
    rank = Learner(config, LearnerSetup(model_path=resolve_model_path(args.model, None),
                                        dtype=resolve_dtype("auto")))
    draw = random.Random(0)

    def sample() -> TrainSample:
        prompt, response = draw.randint(64, 400), draw.randint(8, 128)
        return TrainSample(tuple(draw.randrange(1000, 40000) for _ in range(prompt)),
                           tuple(draw.randrange(1000, 40000) for _ in range(response)),
                           (-1.0,) * response, draw.uniform(-1, 1), 0.7, "solver")

    rss, exported, seconds = [], [], []
    export_dir = Path(tempfile.mkdtemp(prefix="bench-learner-memory-"))
    probe = SyncProbe(tuple(draw.randrange(1000, 40000) for _ in range(64)), ())
    try:
        for step in range(args.steps):
            batch = TrainBatch(tuple(sample() for _ in range(args.samples)))
            plan, _ = plan_step(batch, config.micro_batch_tokens, 1, pad_multiple=config.pad_multiple)
            began = time.perf_counter()
            rank.train_step(plan[0], batch.response_tokens)
            seconds.append(time.perf_counter() - began)
            rss.append(round(resident_gb(), 3))
            if args.export:  # what an iteration does next: the weights for the engines, with the sync probe
                update = rank.export(step + 1, SyncMode.MERGED, str(export_dir), probe)
                shutil.rmtree(update.path)
                exported.append(round(resident_gb(), 3))
            log(f"{args.arm}: step {len(rss)}: {rss[-1]:.2f} GiB resident"
                + (f", {exported[-1]:.2f} after the export" if exported else "") + f", {seconds[-1]:.1f} s")
    finally:
        shutil.rmtree(export_dir, ignore_errors=True)
    last = exported or rss
    return {"rss_gb": rss, "rss_after_export_gb": exported, "growth_gb": round(last[-1] - last[min(1, len(last) - 1)], 3),
            "peak_gb": round(peak_resident_gb(), 3), "seconds_per_step": round(sum(seconds) / len(seconds), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:smollm2-135m")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--samples", type=int, default=12)
    parser.add_argument("--pad-multiple", type=int, default=1)
    parser.add_argument("--threshold-mib", type=int, default=8, help="the trim_fixed_threshold arm's mmap threshold")
    parser.add_argument("--small-cache", type=int, default=16, help="the small_caches arm's capacity of both caches")
    parser.add_argument("--export", action="store_true", help=(
        "after each step also export merged weights with the sync probe, as every iteration does"))
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated, of " + ", ".join(ARMS))
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)  # a child's arm
    args = parser.parse_args()
    offline()
    if args.arm:
        print(json.dumps(run_arm(args)), flush=True)
        return
    from learner.memory import NATIVE_CACHE_LIMITS

    arms = args.arms.split(",")
    if unknown := set(arms) - set(ARMS):
        parser.error(f"--arms: unknown {', '.join(sorted(unknown))} (choose from {', '.join(ARMS)})")
    results = {"steps": args.steps, "samples": args.samples, "pad_multiple": args.pad_multiple,
               "dtype": resolve_dtype("auto")}
    small = str(args.small_cache)
    changed = {"onednn_default_cache": {ONEDNN_CACHE: DEFAULT_CAPACITY},
               "ideep_default_cache": {IDEEP_CACHE: DEFAULT_CAPACITY},
               "small_caches": {ONEDNN_CACHE: small, IDEEP_CACHE: small}}
    cache = {arm: NATIVE_CACHE_LIMITS | changed.get(arm, {}) for arm in arms}
    results |= run_arms(__file__, arms, ["--model", args.model, "--steps", str(args.steps), "--samples",
                                         str(args.samples), "--pad-multiple", str(args.pad_multiple),
                                         "--threshold-mib", str(args.threshold_mib)]
                          + (["--export"] if args.export else []), cache)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
