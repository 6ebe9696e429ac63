"""Engine memory benchmark: memory of a vLLM engine's processes over rounds of a merged weight sync (the whole
model reloaded from disk, as `rollout.sync.merged` does) followed by a wave of sampling, with the product's handling
(the worker trims glibc's heap after every generate call and reload: rollout/worker_extension.py) and without it.

Each arm is a child process that builds the real `Engine` (the embedded model or `--model DIR`, bf16 or fp32 as the
product picks, 1 GiB of KV cache) and runs `--rounds` rounds: `reload_weights` from the model's own directory,
then `--questions` arithmetic questions x 8 answers of up to 128 tokens (seeded, so both arms sample the same
tokens). After each round it reads the unique set size (USS: the pages only that process holds) of vLLM's
processes, the engine's children. The arms run one after the other, each with the whole machine; the other arm is
the same code with the trim turned into a no-op.

    .venv/bin/python bench/engine_memory.py [--model DIR] [--rounds 10] [--questions 16]

Final line: JSON with each arm's GiB after every round, its growth from round 1 to the last and its mean seconds
per round.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import log, offline, resolve_dtype, run_arms  # noqa: E402

ARMS = ("trim", "no_trim")
GIB = 2**30


def vllm_processes_gb() -> float:
    import psutil

    return sum(child.memory_full_info().uss for child in psutil.Process().children(recursive=True)) / GIB


def run_arm(args: argparse.Namespace) -> dict:
    from agents.players import Solver
    from rollout.engine import Engine, EngineSpec
    from rollout.records import SamplingSpec
    from selfplay.embedded_model import resolve_model_path

    if args.arm == "no_trim":
        Engine._release_worker_heap = lambda self: None
    model_path = str(resolve_model_path(args.model, None))
    engine = Engine(EngineSpec(model_path=model_path, dtype=resolve_dtype("auto"), kv_cache_gb=1.0,
                               max_model_len=1024))
    solver = Solver(engine)
    questions = [f"What is {7 * i + 3} + {11 * i + 5}?" for i in range(args.questions)]
    gb, seconds = [], []
    try:
        for round_index in range(args.rounds):
            began = time.perf_counter()
            engine.llm.collective_rpc("reload_weights", kwargs={"weights_path": model_path})
            engine._release_worker_heap()  # as Engine.apply_update does after a merged reload
            solver.solve(questions, SamplingSpec(n=8, max_tokens=128, temperature=0.7, seed=round_index))
            seconds.append(time.perf_counter() - began)
            gb.append(round(vllm_processes_gb(), 3))
            log(f"{args.arm}: round {len(gb)}: {gb[-1]:.3f} GiB (vLLM processes, USS), {seconds[-1]:.1f} s")
    finally:
        engine.shutdown()
    return {"uss_gb": gb, "growth_gb": round(gb[-1] - gb[0], 3),
            "seconds_per_round": round(sum(seconds) / len(seconds), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:smollm2-135m")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)  # a child's arm
    args = parser.parse_args()
    offline()
    if args.arm:
        print(json.dumps(run_arm(args)), flush=True)
        return
    results = {"rounds": args.rounds, "questions": args.questions, "dtype": resolve_dtype("auto")}
    results |= run_arms(__file__, list(ARMS), ["--model", args.model, "--rounds", str(args.rounds),
                                               "--questions", str(args.questions)])
    print(json.dumps(results))


if __name__ == "__main__":
    main()
