"""Does self-play make the model better on data it never saw? A time-boxed run, then paired held-out evaluations.

    python bench/learning.py --config configs/arithmetic-cpu.yaml --minutes 60 [--mode full|solver-only|base]
        [--limit N] [--reuse-base DIR] [key=value ...]

Held-out sets, built from GSM8K's train split in ../shared/data/gsm8k (human-written word problems, a different
source than any seed file), disjoint from each other:
- `one_step`: the problems whose worked solution has exactly one calculation (404): arithmetic word problems;
- `multi_step`: the last 100 problems with two or more calculations: the "does not lose ground on GSM8K" check.

Modes: `full` (self-play, every role trains), `solver-only` (run.train_roles=[solver]: the same loop, GRPO on the
solver alone), `base` (no training: the base evaluation only). The run is `launch/evolve.py` stopped by SIGTERM at
the deadline (checkpoints are written every iteration), then `launch/eval.py` evaluates its latest checkpoint on
both sets with `--baseline` = the base model's rows: strict and lenient accuracy, each as a paired difference with
a 95 % interval and McNemar's exact p. Greedy decoding, eval.max_tokens 256. The last stdout line is one JSON
object. The base evaluation takes about 20 minutes on 2 cores; `--reuse-base DIR` takes it from an earlier run's
output directory.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GSM8K = ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"
MODES = {"full": [], "solver-only": ["run.train_roles=[solver]"], "base": None}


def log(message: str) -> None:
    print(f"[learning {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def held_out_sets(directory: Path, limit: int | None) -> dict[str, Path]:
    """one_step and multi_step JSONL files under `directory` (see the module docstring)."""
    if not GSM8K.is_file():
        raise SystemExit(f"learning: {GSM8K} not found (the held-out sets are built from it)")
    rows = [json.loads(line) for line in GSM8K.read_text().splitlines() if line.strip()]
    one_step = [row for row in rows if row["answer"].count("<<") == 1]
    multi_step = [row for row in rows if row["answer"].count("<<") >= 2][-100:]
    paths = {}
    for name, chosen in (("one_step", one_step[:limit]), ("multi_step", multi_step[:limit])):
        paths[name] = directory / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(row) + "\n" for row in chosen))
    return paths


def evaluate(config: str, data: Path, output: Path, overrides: list[str], adapter: Path | None = None,
             baseline: Path | None = None) -> dict:
    command = [sys.executable, str(ROOT / "launch/eval.py"), "--config", config, "--data", str(data),
               "--output", str(output), *(["--adapter", str(adapter)] if adapter else []),
               *(["--baseline", str(baseline)] if baseline else []), "tracking.wandb=disabled", *overrides]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"learning: evaluation of {data.name} failed: {result.stderr.strip().splitlines()[-1:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def self_play(config: str, minutes: float, output_dir: Path, overrides: list[str]) -> Path:
    """launch/evolve.py until it finishes or the deadline passes (then SIGTERM: it stops through its cleanup)."""
    log_path = output_dir / "evolve.log"
    command = [sys.executable, str(ROOT / "launch/evolve.py"), "--config", config, "run.iterations=1000",
               f"run.output_dir={output_dir / 'runs'}", *overrides]
    with log_path.open("w") as sink:
        process = subprocess.Popen(command, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
                                   env=os.environ | {"RAY_ADDRESS": ""})
        try:
            process.wait(timeout=minutes * 60)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=300)
    runs = sorted((output_dir / "runs").iterdir()) if (output_dir / "runs").is_dir() else []
    if not runs or not (runs[-1] / "checkpoints" / "latest").is_file():
        raise SystemExit(f"learning: the run left no checkpoint; see {log_path}")
    return runs[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description="Time-boxed self-play run with paired held-out evaluations")
    parser.add_argument("--config", default="configs/arithmetic-cpu.yaml")
    parser.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget of the self-play run")
    parser.add_argument("--mode", choices=sorted(MODES), default="full")
    parser.add_argument("--limit", type=int, help="first N questions of each held-out set (default: all)")
    parser.add_argument("--reuse-base", type=Path, help="an earlier output directory holding base-*.jsonl rows")
    parser.add_argument("--output-dir", type=Path, help="default: a new temporary directory")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides for the run")
    args = parser.parse_args()
    output_dir = args.output_dir or Path(tempfile.mkdtemp(prefix="bench-learning-"))
    output_dir.mkdir(parents=True, exist_ok=True)
    sets = held_out_sets(output_dir, args.limit)
    log(f"held-out sets in {output_dir}: " + ", ".join(f"{name} {len(path.read_text().splitlines())}"
                                                        for name, path in sets.items()))
    eval_overrides = ["eval.max_tokens=256"]
    base = {}
    for name, data in sets.items():
        rows = output_dir / f"base-{name}.jsonl"
        if args.reuse_base and (args.reuse_base / rows.name).is_file():
            rows.write_text((args.reuse_base / rows.name).read_text())
            log(f"base {name}: rows reused from {args.reuse_base}")
            continue
        log(f"base {name}: evaluating")
        base[name] = evaluate(args.config, data, rows, eval_overrides)
    result = {"config": args.config, "mode": args.mode, "overrides": args.overrides, "output_dir": str(output_dir),
              "base": {name: {key: summary[key] for key in ("n", "accuracy", "lenient_accuracy")}
                       for name, summary in base.items()}}
    if MODES[args.mode] is not None:
        log(f"self-play ({args.mode}) for {args.minutes:g} minutes")
        started = time.monotonic()
        run_dir = self_play(args.config, args.minutes, output_dir, MODES[args.mode] + args.overrides)
        checkpoint = (run_dir / "checkpoints" / "latest").read_text().strip()
        result |= {"run_dir": str(run_dir), "checkpoint": checkpoint,
                   "run_minutes": round((time.monotonic() - started) / 60, 1)}
        for name, data in sets.items():
            log(f"trained {name}: evaluating {checkpoint}")
            summary = evaluate(args.config, data, output_dir / f"trained-{name}.jsonl", eval_overrides,
                               adapter=run_dir, baseline=output_dir / f"base-{name}.jsonl")
            result[name] = {key: summary[key] for key in ("n", "accuracy", "lenient_accuracy", "vs_baseline")}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
