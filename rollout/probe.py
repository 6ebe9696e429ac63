"""Does an engine serve the weights the learner just exported? A fixed probe sequence answers it.

The learner computes the probe's logprobs under version k (`expected`) and under version k-1 (`previous`); the
engine computes them under what it serves. Two tests:

- gap: mean |served - expected| within `tolerance`. Catches weights that are wrong altogether (the base model,
  another run's adapter), but one real optimizer step moves the probe far less than any tolerance that survives
  bf16 noise: SmolLM2-135M, float32 on CPU, one GRPO step at lr 1e-5 moved it by a mean 0.0013 against a noise
  floor of 0.00002 (engine and learner holding identical weights).
- version: where `served` lies on the line from `previous` (0) to `expected` (1), by projection onto their
  difference d. An engine left behind on version k-1 sits near 0 (measured 0.003 in that run; the synced engine
  1.002). The projection sums evidence over the whole probe, so it decides long before the gap could; noise e
  moves it by at most |e| / |d|. The test is made only when |d| >= SEPARATION * noise (the calibrated |e|), so that
  error is at most 1/4 and the 0.5 threshold keeps a margin of 2 for noise that grows with training. A smaller
  step cannot be told apart from the version before it; such syncs are reported by their separation, not passed
  as verified.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from learner.weights import SyncProbe, l2_norm

SEPARATION = 4.0  # |expected - previous| in units of the noise norm needed before the version test is made


@dataclass(frozen=True)
class ProbeReading:
    gap: float  # mean |served - expected|
    distance: float  # |served - expected| (L2)
    position: float  # 0 = serves the previous version, 1 = this one; nan where the version test is not made
    problem: str  # "" when the engine serves the expected weights


def read_probe(served: list[float], probe: SyncProbe) -> ProbeReading:
    if len(served) != len(probe.expected):
        raise ValueError(f"probe: the engine returned {len(served)} logprobs for {len(probe.expected)} positions")
    residual = [s - e for s, e in zip(served, probe.expected)]
    gap = sum(abs(r) for r in residual) / max(len(residual), 1)
    position, problem = math.nan, ""
    if probe.separation() >= SEPARATION:
        step = [e - p for e, p in zip(probe.expected, probe.previous)]
        position = sum((s - p) * d for s, p, d in zip(served, probe.previous, step)) / sum(d * d for d in step)
        if position < 0.5:
            problem = (f"it still serves the previous version (probe position {position:.3f}: 0 = previous "
                       f"weights, 1 = these)")
    if gap > probe.tolerance:
        problem = problem or (f"probe logprob gap {gap:.4f} exceeds tolerance {probe.tolerance:.4f} (the engine is "
                              f"not serving the learner's weights)")
    return ProbeReading(gap=gap, distance=l2_norm(residual), position=position, problem=problem)

