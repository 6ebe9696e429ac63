"""Reward functions against hand-computed values."""

import pytest

from rewards.scores import (
    DIFFICULTY_VARIANTS,
    GradingMode,
    ProposerReward,
    RewardSettings,
    answer_outcome,
    answer_score,
    judge_reward,
    normalise_score,
    proposer_reward,
    reference_verified,
    solve_rate,
    solver_reward,
)



def settings(**overrides: object) -> RewardSettings:
    """Threshold 7, the paper's difficulty, w = 0.8, agreement weight 0.5, grading off (weight 0.5 when on)."""
    values: dict[str, object] = {
        "quality_threshold": 7,
        "difficulty_variant": "difficulty",
        "solver_judge_weight": 0.8,
        "judge_agreement_weight": 0.5,
        "grading_mode": GradingMode.OFF,
        "grading_weight": 0.5,
    }
    return RewardSettings(**(values | overrides))


DEFAULTS = settings()
LEARNABILITY = settings(difficulty_variant="learnability")


@pytest.mark.parametrize(("score", "expected"), [(1, 0.0), (4, 1 / 3), (8, 7 / 9), (10, 1.0)])
def test_normalise_score(score: int, expected: float) -> None:
    assert normalise_score(score) == pytest.approx(expected)


@pytest.mark.parametrize("score", [0, 11])
def test_normalise_score_refuses_out_of_range(score: int) -> None:
    with pytest.raises(ValueError, match="1 to 10"):
        normalise_score(score)


def test_proposer_accepted_question_averages_quality_difficulty_and_format() -> None:
    # Q = 7/9; one of three answers right -> p = 1/3, D = 2/3; (7/9 + 2/3 + 1) / 3 = 22/27.
    result = proposer_reward(True, 1.0, 8, [False, True, False], DEFAULTS)
    assert result.accepted
    assert result.reward == pytest.approx(22 / 27)
    assert result.quality == pytest.approx(7 / 9)
    assert result.difficulty == pytest.approx(2 / 3)
    assert result.solve_rate == pytest.approx(1 / 3)


def test_proposer_quality_at_the_threshold_is_accepted() -> None:
    # Q = 6/9, every answer right -> D = 0; (2/3 + 0 + 1) / 3 = 5/9.
    result = proposer_reward(True, 1.0, 7, [True, True], DEFAULTS)
    assert result.accepted and result.reward == pytest.approx(5 / 9)


def test_proposer_low_quality_question_is_discarded_without_difficulty() -> None:
    # Q = 4/9; (4/9 + 1) / 3 = 13/27, the answers' outcomes are ignored.
    result = proposer_reward(True, 1.0, 5, [False], DEFAULTS)
    assert result == ProposerReward(reward=pytest.approx(13 / 27), accepted=False, quality=4 / 9, difficulty=None,
                                    solve_rate=0.0, refused="low_quality")


STRICT = settings(difficulty_variant="learnability", strict_gate=True)


@pytest.mark.parametrize(("outcomes", "seen", "strict", "refused"), [
    ([True, False, None], False, True, None),  # p = 1/2 inside the band, new: accepted
    ([True, True, None], False, True, "unlearnable"),  # p = 1 (the unparsed answer left out)
    ([False, False], False, True, "unlearnable"),  # p = 0
    ([None, None], False, True, "unlearnable"),  # no outcome at all
    ([True, False], True, True, "seen"),  # repeats a question seen earlier in the run
    ([True, True], True, False, None),  # the standard gate checks neither
])
def test_the_strict_gate_refuses_seen_and_unlearnable_questions(outcomes, seen, strict, refused) -> None:
    # Q = 1, F = 1. Accepted with p = 1/2: (1 + 4 * 1/2 * 1/2 + 1) / 3 = 1; with p = 1 (standard): (1 + 0 + 1) / 3.
    # Refused: (Q + F) / 3 = 2/3, not accepted, no challenge.
    result = proposer_reward(True, 1.0, 10, outcomes, STRICT if strict else LEARNABILITY, seen=seen)
    assert result.refused == refused and result.accepted is (refused is None)
    assert result.reward == pytest.approx(2 / 3 if refused or outcomes == [True, True] else 1.0)
    assert (result.difficulty is None) is (refused is not None)


def test_an_unverified_reference_is_refused_first() -> None:
    result = proposer_reward(True, 1.0, 3, [True, True], STRICT, verified=False, seen=True)
    assert result.refused == "unverified"


def test_proposer_with_an_unverified_reference_is_discarded_without_difficulty() -> None:
    # Q = 1; the reference was not verified: (1 + 1) / 3, not accepted, whatever the solve rate.
    result = proposer_reward(True, 1.0, 10, [True, False], LEARNABILITY, verified=False)
    assert result.reward == pytest.approx(2 / 3) and not result.accepted and result.verified is False
    verified = proposer_reward(True, 1.0, 10, [True, False], LEARNABILITY, verified=True)
    assert verified.reward == pytest.approx(1.0) and verified.accepted  # (1 + 4 * 1/2 * 1/2 + 1) / 3


def test_proposer_without_a_question_gets_zero() -> None:
    result = proposer_reward(False, 0.5, None, [], DEFAULTS)
    assert result == ProposerReward(reward=0.0, accepted=False, quality=None, difficulty=None)


def test_proposer_without_a_quality_verdict_is_masked_not_neutral() -> None:
    result = proposer_reward(True, 1.0, None, [True], DEFAULTS)
    assert result.reward is None and not result.accepted


def test_proposer_whose_answers_have_no_outcome_earns_no_challenge() -> None:
    # Q = 8/9, every answer failed to parse (None): p unknown, D = 0, never the top difficulty; (8/9 + 0 + 1) / 3.
    for outcomes in ([], [None, None, None]):
        result = proposer_reward(True, 1.0, 9, outcomes, DEFAULTS)
        assert result.reward == pytest.approx(17 / 27) and result.difficulty == 0.0 and result.solve_rate is None


@pytest.mark.parametrize(("solve_rate", "expected"), [(0.0, 0.0), (0.25, 0.75), (0.5, 1.0), (0.75, 0.75), (1.0, 0.0)])
def test_learnability_peaks_at_half_solved(solve_rate: float, expected: float) -> None:
    assert DIFFICULTY_VARIANTS["learnability"](solve_rate) == pytest.approx(expected)


def test_unsolvable_question_tops_difficulty_but_earns_no_learnability() -> None:
    unsolved = [False, False, False, False]
    assert proposer_reward(True, 1.0, 10, unsolved, DEFAULTS).reward == pytest.approx(1.0)
    # (1 + 0 + 1) / 3 with learnability.
    assert proposer_reward(True, 1.0, 10, unsolved, LEARNABILITY).reward == pytest.approx(2 / 3)
    # Half the answers right: learnability 1, (1 + 1 + 1) / 3.
    assert proposer_reward(True, 1.0, 10, [False, True], LEARNABILITY).reward == pytest.approx(1.0)


def test_learnability_comes_from_outcomes_not_from_mean_scores() -> None:
    # Eight answers all judged 5/10 (no grade): each 4/9 < 0.5 is wrong, p = 0, learnability 0 (the mean of
    # continuous scores, 4/9, gave 4 * 4/9 * 5/9 = 0.988).
    judged_five = [answer_outcome(5, None)] * 8
    assert judged_five == [False] * 8
    assert solve_rate(judged_five) == 0.0
    assert proposer_reward(True, 1.0, 10, judged_five, LEARNABILITY).difficulty == 0.0
    # Four truncated answers (no outcome) and four judged 10: p = 4/4 = 1, learnability 0 (it gave 1.0, counting
    # the truncated ones as 0).
    mixed = [None] * 4 + [answer_outcome(10, None)] * 4
    assert solve_rate(mixed) == 1.0
    assert proposer_reward(True, 1.0, 10, mixed, LEARNABILITY).difficulty == 0.0
    # A grade wins over the judge: a right answer judged 1 is right.
    assert answer_outcome(1, True) is True and answer_outcome(10, False) is False
    assert answer_outcome(None, None) is None and answer_outcome(6, None) is True


@pytest.mark.parametrize(("grades", "agreement", "verified"), [
    ([True] * 4 + [False] * 4, 0.5, True),  # 4 of 8 >= 0.5 * 8
    ([True] * 3 + [False] * 5, 0.5, False),  # 3 of 8 < 4
    ([True] * 3 + [False] * 5, 0.375, True),
    ([True, False, False], 0.5, False),  # 1 of 3 < 1.5
    ([], 0.5, False),  # nothing answered: nothing verified
    ([False] * 8, 0.0, True),  # agreement 0 trusts every computed reference (the check off)
])
def test_reference_verified_needs_the_agreeing_share_of_all_answers(grades, agreement, verified) -> None:
    assert reference_verified(grades, agreement) is verified


def test_solver_reward_mixes_answer_score_and_format() -> None:
    # 0.8 * 7/9 + 0.2 * 1 = 37/45.
    assert solver_reward(normalise_score(8), 1.0, DEFAULTS) == pytest.approx(37 / 45)
    # No answer tag: score 0 and format 0.
    assert solver_reward(0.0, 0.0, DEFAULTS) == 0.0
    # Two answer tags: score 0, format 0.5 -> 0.2 * 0.5.
    assert solver_reward(0.0, 0.5, DEFAULTS) == pytest.approx(0.1)
    # Judge verdict unparseable: masked.
    assert solver_reward(None, 1.0, DEFAULTS) is None


@pytest.mark.parametrize(
    ("mode", "judge_score", "grade", "expected"),
    [
        (GradingMode.OFF, 8, True, 7 / 9),
        (GradingMode.OFF, None, True, None),
        (GradingMode.REPLACE, 8, False, 0.0),
        (GradingMode.REPLACE, None, True, 1.0),
        (GradingMode.REPLACE, 8, None, 7 / 9),
        (GradingMode.MIX, 8, True, 0.5 * 1 + 0.5 * 7 / 9),
        (GradingMode.MIX, 10, False, 0.5),
        (GradingMode.MIX, None, True, 1.0),
        (GradingMode.MIX, None, None, None),
    ],
)
def test_answer_score_by_grading_mode(mode: GradingMode, judge_score, grade, expected) -> None:
    result = answer_score(judge_score, grade, settings(grading_mode=mode))
    assert result == (None if expected is None else pytest.approx(expected))


def test_answer_score_mix_weight() -> None:
    mix = settings(grading_mode=GradingMode.MIX, grading_weight=0.25)
    # 0.25 * 0 + 0.75 * 1 = 0.75: the judge gave 10 to a wrong answer.
    assert answer_score(10, False, mix) == pytest.approx(0.75)


@pytest.mark.parametrize(
    ("format_score", "judge_score", "grade", "expected"),
    [
        (1.0, 7, None, 1.0),  # no truth: format alone
        (0.5, None, None, 0.5),  # several score tags
        (0.0, None, None, 0.0),  # no score tag
        (1.0, 10, True, 1.0),  # agrees fully
        (1.0, 1, True, 0.5),  # agreement 0
        (1.0, 4, False, (1 + 2 / 3) / 2),  # agreement 1 - 1/3
        (0.5, None, True, 0.25),  # no score against a known truth: agreement 0
    ],
)
def test_judge_reward(format_score: float, judge_score, grade, expected: float) -> None:
    assert judge_reward(format_score, judge_score, grade, DEFAULTS) == pytest.approx(expected)


def test_judge_reward_agreement_weight() -> None:
    # 0.25 * 1 + 0.75 * (1 - 1/3) = 0.75.
    assert judge_reward(1.0, 4, False, settings(judge_agreement_weight=0.75)) == pytest.approx(0.75)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"difficulty_variant": "hardness"}, "choose one of: difficulty, learnability"),
        ({"quality_threshold": 0}, "quality_threshold"),
        ({"quality_threshold": 6.5}, "quality_threshold"),
        ({"solver_judge_weight": 1.5}, "solver_judge_weight"),
        ({"grading_weight": -0.1}, "grading_weight"),
        ({"grading_mode": "mix"}, "GradingMode"),
    ],
)
def test_settings_refuse_bad_values(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings(**overrides)


def test_out_of_range_inputs_are_errors_not_rewards() -> None:
    with pytest.raises(ValueError, match="format_score"):
        proposer_reward(True, 1.5, 9, [True], DEFAULTS)
    with pytest.raises(ValueError, match="format_score"):
        solver_reward(0.5, 2.0, DEFAULTS)
