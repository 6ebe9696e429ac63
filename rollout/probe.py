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

The noise is calibrated where the engines serve what later syncs will serve (`calibrated`): with identical weights
on both sides, through a zero-delta adapter in adapter mode. Low-precision rounding still changes as the weights
move, so a gap measured once at start-up can be crossed by a correct engine; in bf16 and fp16 one gap breach is a
warning and only the second in a row fails (`GapBreaches`), whichever side rounds: a float32 engine checked
against a bf16 learner too. An engine left on the previous version fails at once, as does any breach where both
sides compute in float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from learner.weights import SyncProbe, l2_norm

SEPARATION = 4.0  # |expected - previous| in units of the noise norm needed before the version test is made
LOW_PRECISION = ("bfloat16", "float16", "half")


@dataclass(frozen=True)
class ProbeReading:
    gap: float  # mean |served - expected|
    distance: float  # |served - expected| (L2)
    position: float  # 0 = serves the previous version, 1 = this one; nan where the version test is not made
    problem: str  # "" when the engine serves the expected weights
    gap_only: bool = False  # the problem is the gap alone: the version test passed or was not made


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
    gap_only = gap > probe.tolerance and not problem
    if gap_only:
        problem = (f"probe logprob gap {gap:.4f} exceeds tolerance {probe.tolerance:.4f} (the engine is not serving "
                   f"the learner's weights)")
    return ProbeReading(gap=gap, distance=l2_norm(residual), position=position, problem=problem, gap_only=gap_only)


def calibrated(probe: SyncProbe, readings: list[ProbeReading], configured_tolerance: float,
               dtypes: tuple[str, ...] = ()) -> SyncProbe:
    """`probe` (the learner's logprobs, no previous version) with the noise the engines showed on it while serving
    the same weights: the largest norm over `readings`, and a gap tolerance of the configured one or twice the
    largest mean gap, whichever is larger; `dtypes`, the learner's and the engines', set the gap breaches
    tolerated in a row."""
    if not readings:
        raise ValueError("probe calibration: no engine answered the probe")
    tolerance = max(configured_tolerance, 2 * max(reading.gap for reading in readings))
    return SyncProbe(probe.token_ids, probe.expected, (), tolerance, max(reading.distance for reading in readings),
                     tolerated_breaches(*dtypes))


@dataclass
class GapBreaches:
    """One engine's consecutive gap breaches (rollout.engine keeps one): `tolerated` in a row pass as warnings
    (1 for low-precision engines, `tolerated_breaches`), the next fails; a clean reading resets the count. A
    version-test failure is never tolerated."""

    tolerated: int
    in_a_row: int = 0

    def verdict(self, reading: ProbeReading, also_tolerated: int = 0) -> str:
        """"" for a clean reading, "warning" for a tolerated gap breach, "fail" otherwise; `also_tolerated` (the
        probe's count, which knows the learner's dtype) raises `tolerated` for this reading."""
        if not reading.problem:
            self.in_a_row = 0
            return ""
        if reading.gap_only and self.in_a_row < max(self.tolerated, also_tolerated):
            self.in_a_row += 1
            return "warning"
        return "fail"


def tolerated_breaches(*dtypes: str) -> int:
    """Gap breaches in a row a sync may show before it fails, where the learner and the engine compute the probe
    in `dtypes`: 1 where either rounds to 16 bits."""
    return 1 if any(dtype in LOW_PRECISION for dtype in dtypes) else 0

