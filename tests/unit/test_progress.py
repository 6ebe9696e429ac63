"""The console's progress line, its clock and the run's closing summary (hand-computed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfplay.driver import closing_summary
from selfplay.progress import duration, eta_seconds, iteration_line, phase_line


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (42.4, "42s"), (59.6, "1m00s"), (185, "3m05s"),
                                           (3599, "59m59s"), (3720, "1h02m"), (-3, "0s")])
def test_durations_read_as_a_clock(seconds, text):
    assert duration(seconds) == text


def test_eta_is_the_mean_pace_of_the_done_iterations_times_those_left():
    assert eta_seconds(done=3, remaining=57, elapsed=300.0) == pytest.approx(5700.0)  # 100 s each
    assert eta_seconds(done=0, remaining=60, elapsed=12.0) is None


def test_the_iteration_line_says_progress_accuracy_rewards_pool_and_speed():
    metrics = {"time/iteration": 102.0, "solver/verifiable_accuracy": 0.4125, "proposer/reward_mean": 0.2149,
               "solver/reward_mean": 0.45, "judge/reward_mean": 0.6251, "pool/size": 312.0, "pool/accepted": 1.0,
               "rollout/tokens_per_second": 259.6}
    assert iteration_line(3, 60, metrics, elapsed=310.0, eta=5890.0) == (
        "iteration 3/60 | 1m42s | elapsed 5m10s, ETA 1h38m | solver accuracy 0.41 | rewards proposer 0.21, "
        "solver 0.45, judge 0.63 | pool 312 (+1) | 260 tokens/s")


def test_the_last_iteration_has_no_eta_and_missing_values_say_so():
    line = iteration_line(5, 5, {"time/iteration": 9.0, "solver/reward_mean": float("nan")}, elapsed=50.0, eta=0.0)
    assert line == "iteration 5/5 | 9s | elapsed 50s | rewards proposer n/a, solver n/a, judge n/a"


def test_phases_are_named_in_plain_words():
    assert phase_line("wave2_judge_solve", 12.34) == "  judging, and answering the new questions: 12.3 s"
    assert phase_line("something_new", 1.0) == "  something_new: 1.0 s"


def test_the_closing_summary_names_the_best_scores_the_adapter_and_the_next_command():
    run_dir = Path("runs/r")
    best = {"arithmetic": {"metric": "lenient_accuracy", "score": 0.1381, "iteration": 10,
                           "checkpoint": "iter-000010"},
            "gsm8k": {"metric": "lenient_accuracy", "score": 0.02, "iteration": 0, "checkpoint": None}}
    lines = closing_summary(run_dir, 60, 6330.0, ["held-out arithmetic ..."], best, run_dir / "adapter")
    assert lines == [
        "done: 60 iteration(s) in 1h45m",
        "held-out arithmetic ...",
        "best arithmetic lenient_accuracy: 0.138 at iteration 10 (iter-000010; RUN_DIR/best.json)",
        "best gsm8k lenient_accuracy: 0.020 at iteration 0 (the base model; RUN_DIR/best.json)",
        "adapter (standard PEFT, the final weights): runs/r/adapter",
        "evaluate it: python launch/eval.py --config runs/r/config.yaml --data FILE --adapter runs/r/adapter",
    ]
