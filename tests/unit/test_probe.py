"""The weight-sync probe decides 'serves version k' against 'serves version k-1' (hand-computed cases), its calibration,
and how many gap breaches in a row a low-precision engine may show."""

from __future__ import annotations

import math

import pytest

from learner.weights import SyncProbe
from rollout.probe import SEPARATION, GapBreaches, ProbeReading, calibrated, read_probe, tolerated_breaches

PREVIOUS = (-1.1, -2.1, -3.1, -4.1)
EXPECTED = (-1.0, -2.0, -3.0, -4.0)  # one update moved every position by +0.1: |d| = 0.2


def probe(noise: float = 0.01, tolerance: float = 0.05, previous=PREVIOUS) -> SyncProbe:
    return SyncProbe(token_ids=(7, 8, 9, 10, 11), expected=EXPECTED, previous=previous, tolerance=tolerance,
                     noise=noise)


def shifted(values, delta: float) -> list[float]:
    return [v + delta for v in values]


def test_an_engine_serving_this_version_passes():
    reading = read_probe(list(EXPECTED), probe())
    assert (reading.gap, reading.distance, reading.position, reading.problem) == (0.0, 0.0, 1.0, "")


def test_an_engine_left_on_the_previous_version_fails_within_the_gap_tolerance():
    reading = read_probe(list(PREVIOUS), probe(tolerance=0.5))  # gap 0.1 is well inside the tolerance
    assert reading.gap == pytest.approx(0.1)
    assert reading.position == pytest.approx(0.0)
    assert "still serves the previous version" in reading.problem


def test_the_position_is_the_projection_on_the_update():
    # served = previous + 0.3 d with d = (0.1, 0.1, 0.1, 0.1): position 0.3, so the previous version is closer
    served = shifted(PREVIOUS, 0.03)
    assert read_probe(served, probe()).position == pytest.approx(0.3)
    assert "previous version" in read_probe(served, probe()).problem
    # noise orthogonal to d (+e, -e, +e, -e) does not move the position
    noisy = [value + sign * 0.02 for value, sign in zip(EXPECTED, (1, -1, 1, -1))]
    reading = read_probe(noisy, probe())
    assert reading.position == pytest.approx(1.0)
    assert reading.gap == pytest.approx(0.02) and reading.distance == pytest.approx(0.04)
    assert reading.problem == ""


def test_an_update_within_the_noise_is_not_version_tested():
    # |d| = 0.2 and noise 0.1: separation 2 < 4, so the previous weights cannot be told apart and are not refused
    weak = probe(noise=0.1, tolerance=0.5)
    assert weak.separation() == pytest.approx(2.0) and weak.separation() < SEPARATION
    reading = read_probe(list(PREVIOUS), weak)
    assert math.isnan(reading.position) and reading.problem == ""


def test_wrong_weights_fail_the_gap_test():
    reading = read_probe(shifted(EXPECTED, -0.3), probe(previous=()))
    assert reading.gap == pytest.approx(0.3) and math.isnan(reading.position)
    assert "gap 0.3000 exceeds tolerance 0.0500" in reading.problem


def test_separation_in_noise_norms_with_a_floor_for_zero_noise():
    assert probe(noise=0.01).separation() == pytest.approx(20.0)
    assert probe(noise=0.0).separation() == pytest.approx(0.2 / 1e-6)
    assert math.isnan(probe(previous=()).separation())


def test_advanced_moves_this_version_to_previous():
    following = probe().advanced((-0.9, -1.9, -2.9, -3.9))
    assert following.previous == EXPECTED and following.expected == (-0.9, -1.9, -2.9, -3.9)
    assert (following.token_ids, following.tolerance, following.noise) == ((7, 8, 9, 10, 11), 0.05, 0.01)


def test_a_reading_of_the_wrong_length_is_refused():
    with pytest.raises(ValueError, match="3 logprobs for 4 positions"):
        read_probe([-1.0, -2.0, -3.0], probe())


def test_the_iteration_line_places_the_engines_or_says_the_step_was_within_the_noise():
    from selfplay.driver import probe_position

    assert probe_position({"sync/probe_position": 0.984, "sync/probe_separation": 9.0}) == "position 0.98"
    assert probe_position({"sync/probe_position": math.nan, "sync/probe_separation": 1.234}) == (
        "step within the probe's noise (separation 1.23 of the 4.00 needed to place it)")
    assert probe_position({}) == "no probe reading"


# Recorded on this project's CPU engine in bf16 (configs/arithmetic-cpu.yaml: one engine, merged sync, 2026-12-07):
# the start-up reading with identical weights, then the mean gaps of the first three syncs.
BF16_STARTUP_GAP, BF16_STARTUP_NORM = 0.0795, 1.1
BF16_SYNC_GAPS = (0.0799, 0.0709, 0.0811)


def reading(gap: float, position: float = math.nan, problem: str = "", gap_only: bool = False) -> ProbeReading:
    return ProbeReading(gap=gap, distance=gap * 10, position=position, problem=problem, gap_only=gap_only)


def test_calibration_takes_the_largest_noise_and_twice_the_largest_gap_over_the_configured_tolerance():
    start = SyncProbe((7, 8, 9), (-1.0, -2.0))
    readings = [ProbeReading(BF16_STARTUP_GAP, BF16_STARTUP_NORM, math.nan, ""), ProbeReading(0.03, 0.4, math.nan, "")]
    probe = calibrated(start, readings, configured_tolerance=0.05)
    assert probe.tolerance == pytest.approx(0.159) and probe.noise == pytest.approx(1.1)
    assert (probe.token_ids, probe.expected, probe.previous) == ((7, 8, 9), (-1.0, -2.0), ())
    assert calibrated(start, readings, configured_tolerance=0.2).tolerance == 0.2  # the configured one is larger
    with pytest.raises(ValueError, match="no engine answered"):
        calibrated(start, [], 0.05)


def test_recorded_bf16_syncs_pass_the_calibrated_tolerance_and_would_fail_the_configured_one():
    def verdicts(tolerance: float) -> list[str]:
        breaches = GapBreaches(tolerated_breaches("bfloat16"))
        return [breaches.verdict(reading(gap, problem="gap" if gap > tolerance else "", gap_only=gap > tolerance))
                for gap in BF16_SYNC_GAPS]

    assert verdicts(2 * BF16_STARTUP_GAP) == ["", "", ""]
    assert verdicts(0.05) == ["warning", "fail", "fail"]  # the uncalibrated default: every correct sync breaches


def test_a_reading_over_the_gap_tolerance_alone_is_marked_gap_only():
    over = read_probe(shifted(EXPECTED, 0.06), probe(tolerance=0.0582, previous=()))
    assert over.gap_only and "gap 0.0600 exceeds tolerance 0.0582" in over.problem
    behind = read_probe(list(PREVIOUS), probe(tolerance=0.05))  # the previous version, also over the gap
    assert behind.gap > 0.05 and not behind.gap_only and "previous version" in behind.problem


def test_in_bf16_one_gap_breach_warns_and_the_second_in_a_row_fails():
    breaches = GapBreaches(tolerated_breaches("bfloat16"))
    tolerance = 2 * BF16_STARTUP_GAP  # 0.159
    gaps = (0.0799, 0.1620, 0.0709, 0.1650, 0.1700)  # syncs 1-5: a breach at 2, then at 4 and 5 in a row
    verdicts = [breaches.verdict(reading(gap, problem="gap" if gap > tolerance else "", gap_only=gap > tolerance))
                for gap in gaps]
    assert verdicts == ["", "warning", "", "warning", "fail"]


def test_float32_tolerates_no_breach_and_no_dtype_tolerates_a_stale_engine():
    assert tolerated_breaches("float32") == 0 and tolerated_breaches("float16") == 1
    assert GapBreaches(tolerated_breaches("float32")).verdict(reading(0.1, problem="gap", gap_only=True)) == "fail"
    stale = reading(0.01, position=0.02, problem="it still serves the previous version")
    assert GapBreaches(tolerated_breaches("bfloat16")).verdict(stale) == "fail"


def test_a_float32_engine_checked_against_a_bf16_learner_tolerates_one_breach():
    """Merged sync serves float32 while the learner may compute in bf16: its rounding moves the expected logprobs."""
    assert tolerated_breaches("bfloat16", "float32") == 1 and tolerated_breaches("float32", "float32") == 0
    start = SyncProbe((7, 8, 9), (-1.0, -2.0))
    probe = calibrated(start, [ProbeReading(0.01, 0.02, math.nan, "")], 0.05, ("bfloat16", "float32"))
    assert probe.tolerated_breaches == 1 and probe.advanced((-1.5, -2.5)).tolerated_breaches == 1
    breach = reading(0.1, problem="gap", gap_only=True)
    engine = GapBreaches(tolerated_breaches("float32"))  # what a float32 engine keeps
    assert [engine.verdict(breach, probe.tolerated_breaches) for _ in range(2)] == ["warning", "fail"]
    assert calibrated(start, [ProbeReading(0.01, 0.02, math.nan, "")], 0.05).tolerated_breaches == 0
