"""What does one self-play iteration cost? Runs the real loop (Ray, vLLM, DeepSpeed) on the embedded model and
prints one final JSON line: wall time of the measured iteration(s), each phase, tokens, solver samples trained per
hour, each role's mean cost shares (cost/*), and overhead_frac = other / wall, where other is everything outside
generate, judge, train and sync (scoring, pool, Ray calls, the checkpoint).

    python bench/iteration.py [--iterations 4] [key=value ...]

The first iteration includes one-time warm-up, so the JSON reports the iterations after it, with the spread
(min/median/max) of their wall times: at least 3 measured iterations by default.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import spread  # noqa: E402
from selfplay.config import load_config  # noqa: E402

PHASES = ("wave1_propose_solve", "wave2_judge_solve", "grade_wait", "train", "sync")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/tiny-cpu.yaml")
    parser.add_argument("--iterations", type=int, default=4, help="total, including one warm-up iteration")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    from selfplay.driver import run

    output_dir = tempfile.mkdtemp(prefix="bench-iteration-")
    config = load_config(args.config, [f"run.iterations={args.iterations}", f"run.output_dir={output_dir}",
                                       "tracking.wandb=disabled", *args.overrides])
    run_dir = run(config)
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    iterations = [row for row in rows if "time/iteration" in row]  # not the step-0 row of an in-run evaluation
    measured = iterations[1:] or iterations
    # the loop's checkpoint after each iteration is orchestration too: it counts in the wall time and in `other`
    walls = [row["time/iteration"] + row.get("time/checkpoint", 0.0) for row in measured]
    wall = sum(walls)
    phases = {phase: sum(row.get(f"time/{phase}", 0.0) for row in measured) for phase in PHASES}
    other = wall - sum(phases.values())  # scoring, pool update, Ray calls, checkpoint
    result = {
        "iterations_measured": len(measured), "wall_s": round(wall, 2), "iteration_s": spread(walls, 2),
        **{f"{phase}_s": round(seconds, 2) for phase, seconds in phases.items()}, "other_s": round(other, 2),
        "overhead_frac": round(other / wall, 4) if wall else None,
        "tokens_generated": sum(row.get("rollout/generated_tokens", 0.0) for row in measured),
        "tokens_trained": sum(row.get("learner/tokens", 0.0) for row in measured),
        "solver_samples_per_hour": round(3600 * sum(row.get("learner/samples_solver", 0.0) for row in measured)
                                         / wall, 1) if wall else None,
        "cost_shares": {key: round(sum(row.get(key, 0.0) for row in measured) / len(measured), 3)
                        for key in sorted({key for row in measured for key in row if key.startswith("cost/")})},
        "config": args.config, "overrides": args.overrides, "run_dir": str(run_dir),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    from rollout.exit_cleanup import no_orphans

    with no_orphans():
        main()
