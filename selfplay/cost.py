"""What each role costs: the share of an iteration's wall time spent generating and training each role's turns.

Generation runs all roles' calls at once on the engines and training is one update over every role's samples, so
neither phase's time splits by role on a clock. Each phase's seconds are divided by token counts instead: generation
by the tokens each role generated (decoding dominates it), training by the prompt and response tokens each role's
samples carry (the learner runs forward and backward over both). Estimates, named as such in the metrics.
"""

from __future__ import annotations

from collections.abc import Mapping

GENERATION_PHASES = ("wave1_propose_solve", "wave2_judge_solve", "refill")
TRAINING_PHASES = ("train",)


def role_time_shares(generated: Mapping[str, int], trained: Mapping[str, int], phase_seconds: Mapping[str, float],
                     wall_seconds: float) -> dict[str, float]:
    """`cost/generation_share_ROLE` and `cost/training_share_ROLE`: the generation phases' seconds split by each
    role's generated tokens, the training phase's by its trained tokens, as shares of `wall_seconds`."""
    if wall_seconds <= 0:
        return {}
    shares = {}
    for name, tokens, phases in (("generation", generated, GENERATION_PHASES),
                                 ("training", trained, TRAINING_PHASES)):
        seconds, total = sum(phase_seconds.get(phase, 0.0) for phase in phases), sum(tokens.values())
        for role, count in tokens.items():
            if total > 0:
                shares[f"cost/{name}_share_{role}"] = seconds * count / total / wall_seconds
    return shares

