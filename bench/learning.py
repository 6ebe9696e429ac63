"""Does self-play make the model better on data it never saw? A time-boxed run, then paired held-out evaluations.

    python bench/learning.py --config configs/arithmetic-cpu.yaml --minutes 60 [--modes full,solver-only]
        [--set NAME=FILE ...] [--gsm8k TRAIN_JSONL] [--limit N] [--reuse-base DIR] [--output-dir DIR] [key=value ...]

Held-out sets (JSONL rows with "question" and "answer", or GSM8K's "#### N" answers):
- `--set NAME=FILE`, any number; without any `--set` and `--gsm8k`, the shipped sets `arithmetic`
  (configs/heldout/arithmetic.jsonl: 210 calculations from DeepMind's mathematics_dataset generator, Apache-2.0) and
  `arithmetic_hard` (configs/heldout/arithmetic-hard.jsonl: 200 calculations of three or more operations with larger
  numbers, from the same generator; configs/heldout/README.md);
- `--gsm8k TRAIN_JSONL`: three sets built from GSM8K's train split (human-written, MIT licence, a different source
  than any seed file; `grade_school_math/data/train.jsonl` of https://github.com/openai/grade-school-math):
  - `calculations`: bare arithmetic, "What is 48 / 2?": the first 300 distinct calculator annotations
    (`<<48/2=24>>`) of its worked solutions with one or two operators, whole-number literals and a whole-number result;
  - `one_step`: the problems whose worked solution has exactly one calculation (404): arithmetic word problems;
  - `multi_step`: the last 100 problems with two or more calculations: the "does not lose ground on GSM8K" check.

Modes, each from the same start (the config's SFT cold start included) at the same time budget: `full` (self-play,
every role trains one shared adapter), `per-role` (self-play with one adapter per role: learner.adapters per_role,
adapter sync; the solver's adapter is evaluated), `solver-only` (run.train_roles=[solver]: the same loop, proposer and judge still generate, GRPO
updates the solver alone), `sft-only` (the config's SFT cold start and no self-play: what the others add to it),
`base` (no training: the base evaluation only). Each run is `launch/evolve.py` stopped by
SIGTERM at the deadline (checkpoints are written every iteration, plots at the end under its run directory), then
`launch/eval.py` evaluates its latest checkpoint on every set with `--baseline` = the base model's rows: strict and
lenient accuracy, each as a paired difference with a 95 % interval and McNemar's exact p. Greedy decoding,
eval.max_tokens 256. Writes `table.md` (the comparison against the base model and, with two or more trained modes,
each mode against each one run before it: `--modes sft-only,solver-only,full` tells what GRPO and the other roles
add to the SFT) and prints one JSON object as the last stdout line. The base evaluations take about 20 minutes on
2 cores; `--reuse-base DIR` takes the `base-<set>.jsonl` rows from an earlier output directory. Run again with
the same `--output-dir`, it keeps the base rows and every arm already finished there (its `MODE/result.json`) and
runs only the others, so the arms of one comparison can be run one at a time, in separate sessions.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_SETS = {"arithmetic": ROOT / "configs" / "heldout" / "arithmetic.jsonl",
                "arithmetic_hard": ROOT / "configs" / "heldout" / "arithmetic-hard.jsonl"}
MODES = {"full": [], "per-role": ["learner.adapters=per_role", "rollout.sync_mode=adapter"],
         "solver-only": ["run.train_roles=[solver]"], "sft-only": ["run.iterations=0"], "base": None}
CALCULATION = re.compile(r"<<([^=<>]+)=([^<>]+)>>")  # GSM8K's calculator annotations
OPERATOR = re.compile(r"[-+*/]")
MODE_RESULT = "result.json"  # in a mode's directory once its run and evaluations are done
sys.path.insert(0, str(ROOT))

from rewards.arithmetic import ArithmeticRefused, evaluate  # noqa: E402
from selfplay.evaluation import paired_rows  # noqa: E402


def log(message: str) -> None:
    print(f"[learning {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def computes(expression: str, expected: int) -> bool:
    try:
        return evaluate(expression) == expected
    except ArithmeticRefused:
        return False


def calculations(rows: list[dict], count: int) -> list[dict]:
    """The first `count` distinct calculator annotations with 1-2 operators between whole numbers and a whole,
    non-negative result, as questions ("What is 48 / 2?") with that result as the answer."""
    chosen, seen = [], set()
    for row in rows:
        for expression, result in CALCULATION.findall(row["answer"]):
            operators = len(OPERATOR.findall(expression))
            if expression in seen or not 1 <= operators <= 2 or not re.fullmatch(r"[\d+\-*/]+", expression):
                continue
            seen.add(expression)
            if re.fullmatch(r"\d+", result.strip()) and computes(expression, int(result)):
                chosen.append({"question": f"What is {OPERATOR.sub(lambda m: f' {m.group()} ', expression)}?",
                               "answer": result.strip()})
            if len(chosen) == count:
                return chosen
    return chosen


def gsm8k_sets(gsm8k: Path) -> dict[str, list[dict]]:
    """calculations, one_step and multi_step rows from GSM8K's train split (see the module docstring)."""
    if not gsm8k.is_file():
        raise SystemExit(f"learning: --gsm8k {gsm8k}: file not found")
    rows = [json.loads(line) for line in gsm8k.read_text().splitlines() if line.strip()]
    return {"calculations": calculations(rows, 300),
            "one_step": [row for row in rows if row["answer"].count("<<") == 1],
            "multi_step": [row for row in rows if row["answer"].count("<<") >= 2][-100:]}


def named_set(text: str) -> tuple[str, Path]:
    """NAME=FILE of --set."""
    name, _, path = text.partition("=")
    if not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=FILE, got {text!r}")
    return name, Path(path)


def held_out_sets(directory: Path, given: list[tuple[str, Path]], gsm8k: Path | None,
                  limit: int | None) -> dict[str, Path]:
    """The held-out JSONL files, each as its first `limit` rows under `directory`: the --set files, the GSM8K-built
    sets, or (neither given) the shipped ones."""
    chosen: dict[str, list[dict]] = {}
    for name, path in given or ([] if gsm8k else list(SHIPPED_SETS.items())):
        if not path.is_file():
            raise SystemExit(f"learning: --set {name}={path}: file not found")
        chosen[name] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if gsm8k:
        chosen |= gsm8k_sets(gsm8k)
    paths = {}
    for name, rows in chosen.items():
        paths[name] = directory / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(row) + "\n" for row in rows[:limit]))
    return paths


def run_eval(config: str, data: Path, output: Path, overrides: list[str], adapter: Path | None = None,
             baseline: Path | None = None) -> dict:
    command = [sys.executable, str(ROOT / "launch/eval.py"), "--config", config, "--data", str(data),
               "--output", str(output), *(["--adapter", str(adapter), "--role", "solver"] if adapter else []),
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


def read_rows(rows_path: Path) -> list[dict]:
    """An evaluation's rows (launch/eval.py --output)."""
    return [json.loads(line) for line in rows_path.read_text().splitlines() if line.strip()]


def accuracies(rows_path: Path) -> dict:
    """n, strict and lenient accuracy of an evaluation's rows."""
    rows = read_rows(rows_path)
    n = len(rows)
    return {"n": n, "accuracy": sum(bool(row["correct"]) for row in rows) / n,
            "lenient_accuracy": sum(bool(row.get("lenient_correct")) for row in rows) / n}


def table(result: dict, modes: list[str], sets: list[str]) -> str:
    """Markdown: per held-out set, the base row and one row per trained mode with its paired lenient difference."""
    lines = ["| set | weights | strict | lenient | lenient vs base (95 % CI; gained/lost; McNemar p) |",
             "| --- | --- | --- | --- | --- |"]
    for name in sets:
        base = result["base"][name]
        lines.append(f"| {name} (n={base['n']}) | base | {base['accuracy']:.3f} | {base['lenient_accuracy']:.3f} | |")
        for mode in modes:
            trained = result[mode][name]
            lines.append(f"| | {mode} | {trained['accuracy']:.3f} | {trained['lenient_accuracy']:.3f} | "
                         f"{paired_cell(trained['vs_baseline']['lenient'])} |")
    return "\n".join(lines) + "\n"


def paired_cell(paired: dict) -> str:
    low, high = paired["ci95"]
    return (f"{paired['difference']:+.3f} ({low:+.3f} to {high:+.3f}; {paired['gained']}/{paired['lost']}; "
            f"{paired['mcnemar_p']:.2g})")


def finished_arm(mode_dir: Path, sets: list[str]) -> dict | None:
    """An arm an earlier invocation finished in `mode_dir` (its result and evaluations on every one of `sets`), or
    None: arms can span sessions. A result without this invocation's sets is run again."""
    if not (mode_dir / MODE_RESULT).is_file():
        return None
    result = json.loads((mode_dir / MODE_RESULT).read_text())
    evaluated = all(name in result and (mode_dir / f"trained-{name}.jsonl").is_file() for name in sets)
    return result if evaluated else None


def between_arms(output_dir: Path, modes: list[str], sets: list[str]) -> dict:
    """Each trained mode against each one run before it, on the same held-out questions: what one arm adds to
    another (the base comparison alone cannot tell an SFT's gain from self-play's)."""
    compared = {}
    for position, later in enumerate(modes):
        for earlier in modes[:position]:
            compared[f"{later} vs {earlier}"] = {
                name: paired_rows(read_rows(output_dir / later / f"trained-{name}.jsonl"),
                                  {row["id"]: row for row in read_rows(output_dir / earlier / f"trained-{name}.jsonl")})
                for name in sets}
    return compared


def arms_table(compared: dict, sets: list[str]) -> str:
    """Markdown: per held-out set, one row per pair of trained modes with its paired lenient difference."""
    lines = ["| set | arms | lenient difference (95 % CI; gained/lost; McNemar p) |", "| --- | --- | --- |"]
    for name in sets:
        for pair, by_set in compared.items():
            lines.append(f"| {name} | {pair} | {paired_cell(by_set[name]['lenient'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description="Time-boxed self-play runs with paired held-out evaluations")
    parser.add_argument("--config", default="configs/arithmetic-cpu.yaml")
    parser.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget of each self-play run")
    parser.add_argument("--modes", default="full", help=f"comma-separated, run in order: {', '.join(MODES)}")
    parser.add_argument("--set", dest="sets", type=named_set, action="append", default=[], metavar="NAME=FILE",
                        help="a held-out JSONL set (repeatable; default: the shipped configs/heldout/arithmetic.jsonl)")
    parser.add_argument("--gsm8k", type=Path, metavar="TRAIN_JSONL",
                        help="build the calculations, one_step and multi_step sets from GSM8K's train split")
    parser.add_argument("--limit", type=int, help="first N questions of each held-out set (default: all)")
    parser.add_argument("--reuse-base", type=Path, help="an earlier output directory holding base-*.jsonl rows")
    parser.add_argument("--output-dir", type=Path, help="default: a new temporary directory")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides for the runs")
    args = parser.parse_args()
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown or not modes:
        parser.error(f"--modes: unknown {unknown or 'empty'} (known: {', '.join(MODES)})")
    trained_modes = [mode for mode in modes if MODES[mode] is not None]
    output_dir = args.output_dir or Path(tempfile.mkdtemp(prefix="bench-learning-"))
    output_dir.mkdir(parents=True, exist_ok=True)
    sets = held_out_sets(output_dir, args.sets, args.gsm8k, args.limit)
    log(f"held-out sets in {output_dir}: " + ", ".join(f"{name} {len(path.read_text().splitlines())}"
                                                        for name, path in sets.items()))
    eval_overrides = ["eval.max_tokens=256"]
    for name, data in sets.items():
        rows = output_dir / f"base-{name}.jsonl"
        if rows.is_file():
            log(f"base {name}: rows kept from an earlier invocation in {output_dir}")
        elif args.reuse_base and (args.reuse_base / rows.name).is_file():
            rows.write_text((args.reuse_base / rows.name).read_text())
            log(f"base {name}: rows reused from {args.reuse_base}")
        else:
            log(f"base {name}: evaluating")
            run_eval(args.config, data, rows, eval_overrides)
    result = {"config": args.config, "modes": modes, "minutes": args.minutes, "overrides": args.overrides,
              "output_dir": str(output_dir),
              "base": {name: accuracies(output_dir / f"base-{name}.jsonl") for name in sets}}
    for mode in trained_modes:
        mode_dir = output_dir / mode
        if (finished := finished_arm(mode_dir, list(sets))) is not None:
            result[mode] = finished
            log(f"{mode}: kept from an earlier invocation ({mode_dir / MODE_RESULT})")
            continue
        mode_dir.mkdir(exist_ok=True)
        log(f"self-play ({mode}) for {args.minutes:g} minutes")
        started = time.monotonic()
        run_dir = self_play(args.config, args.minutes, mode_dir, MODES[mode] + args.overrides)
        checkpoint = (run_dir / "checkpoints" / "latest").read_text().strip()
        result[mode] = {"run_dir": str(run_dir), "checkpoint": checkpoint,
                        "run_minutes": round((time.monotonic() - started) / 60, 1)}
        for name, data in sets.items():
            log(f"{mode} {name}: evaluating {checkpoint}")
            summary = run_eval(args.config, data, mode_dir / f"trained-{name}.jsonl", eval_overrides,
                               adapter=run_dir, baseline=output_dir / f"base-{name}.jsonl")
            result[mode][name] = {key: summary[key] for key in ("n", "accuracy", "lenient_accuracy", "vs_baseline")}
        (mode_dir / MODE_RESULT).write_text(json.dumps(result[mode]) + "\n")
    if trained_modes:
        result["between_arms"] = between_arms(output_dir, trained_modes, list(sets))
        markdown = table(result, trained_modes, list(sets))
        if result["between_arms"]:
            markdown += "\n" + arms_table(result["between_arms"], list(sets))
        (output_dir / "table.md").write_text(markdown)
        log(f"table ({output_dir / 'table.md'}):\n" + (output_dir / "table.md").read_text())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
