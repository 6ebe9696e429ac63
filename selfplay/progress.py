"""What the console says about a run's progress: one compact line per iteration, and in verbose mode the phases in
plain words. Pure code: the driver prints what these return.
"""

from __future__ import annotations

import math

PHASE_WORDS = {  # selfplay.iteration's phase names, as a reader would say them
    "wave1_propose_solve": "proposing, and answering pool questions",
    "wave2_judge_solve": "judging, and answering the new questions",
    "grade_wait": "waiting for answer grading",
    "refill": "drawing more solver groups",
    "score": "scoring",
    "train": "training",
    "sync": "syncing weights to the engines",
}


def duration(seconds: float) -> str:
    """42s, 3m05s, 1h02m."""
    seconds = max(int(round(seconds)), 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def eta_seconds(done: int, remaining: int, elapsed: float) -> float | None:
    """The time the `remaining` iterations take at the mean pace of the `done` ones (evaluations and checkpoints
    included); None before the first is done."""
    return elapsed / done * remaining if done > 0 else None


def phase_line(phase: str, seconds: float) -> str:
    return f"  {PHASE_WORDS.get(phase, phase)}: {seconds:.1f} s"


def _number(metrics: dict[str, float], key: str, digits: int = 2) -> str:
    value = metrics.get(key)
    return f"{value:.{digits}f}" if value is not None and math.isfinite(value) else "n/a"


def iteration_line(iteration: int, total: int, metrics: dict[str, float], elapsed: float,
                   eta: float | None) -> str:
    """iteration 3/60 | 1m42s | elapsed 5m10s, ETA 1h38m | solver accuracy 0.41 | rewards proposer 0.21, solver
    0.45, judge 0.62 | pool 312 (+1) | 260 tokens/s. Solver accuracy is the graded share of answers, shown where
    answers were graded."""
    parts = [f"iteration {iteration}/{total}", duration(metrics.get("time/iteration", 0.0)),
             f"elapsed {duration(elapsed)}" + (f", ETA {duration(eta)}" if eta is not None and iteration < total
                                               else "")]
    if "solver/verifiable_accuracy" in metrics:
        parts.append(f"solver accuracy {_number(metrics, 'solver/verifiable_accuracy')}")
    parts.append("rewards " + ", ".join(f"{role} {_number(metrics, f'{role}/reward_mean')}"
                                        for role in ("proposer", "solver", "judge")))
    if "pool/size" in metrics:
        parts.append(f"pool {metrics['pool/size']:.0f} (+{metrics.get('pool/accepted', 0.0):.0f})")
    if "rollout/tokens_per_second" in metrics:
        parts.append(f"{metrics['rollout/tokens_per_second']:.0f} tokens/s")
    return " | ".join(parts)
