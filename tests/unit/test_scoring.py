"""Scoring one hand-built iteration: rewards per turn, GRPO groups per role, the proposer's reward from the solver's
results, masking, and which roles enter the train batch. Every expected number is worked out in the comments."""

import dataclasses

import pytest

from agents.parsing import FormatFailure, Parsed
from agents.players import Turn
from agents.roles import Role
from rewards.scores import GradingMode, RewardSettings
from rollout.records import Sample
from selfplay.scoring import BatchSettings, IterationTurns, SolveItem, build_train_batch, score_iteration

SETTINGS = RewardSettings(quality_threshold=6, difficulty_variant="learnability", solver_judge_weight=0.8,
                          judge_agreement_weight=0.5, grading_mode=GradingMode.MIX, grading_weight=0.5)


def _turn(role: Role, value: str | int | None) -> Turn:
    parsed = Parsed(value, None) if value is not None else Parsed(None, FormatFailure.MISSING_TAG)
    return Turn(role, (1, 2), Sample(str(value), (3,), (-0.5,), "stop"), parsed, 1.0, 0)


def _iteration() -> IterationTurns:
    proposal, untagged_proposal = _turn(Role.PROPOSER, "What is 6 x 7?"), _turn(Role.PROPOSER, None)
    right, unparsed, wrong = _turn(Role.SOLVER, "4"), _turn(Role.SOLVER, None), _turn(Role.SOLVER, "5")
    first, second = _turn(Role.SOLVER, "42"), _turn(Role.SOLVER, "40")
    return IterationTurns(
        proposals=(proposal, untagged_proposal),
        quality_verdicts=(_turn(Role.JUDGE, 10), None),
        solve_items=(SolveItem("What is 2 + 2?", "seed-1", "4", None),
                     SolveItem("What is 6 x 7?", "it1-q0", None, 0)),
        attempts=((right, unparsed, wrong), (first, second)),
        # the unparsed answer was never judged; the judge wrongly gives the wrong answer 9
        answer_verdicts=((_turn(Role.JUDGE, 10), None, _turn(Role.JUDGE, 9)),
                         (_turn(Role.JUDGE, 7), _turn(Role.JUDGE, 4))),
        grades=((True, False, False), (None, None)))


def _rewards(scores, role: Role) -> list[float | None]:
    return [scored.reward for scored in scores.turns if scored.turn.role is role]


def test_rewards_per_turn_are_the_hand_computed_ones():
    scores = score_iteration(_iteration(), SETTINGS)
    # right: judge 10 -> 1, grade 1, mix 1.0; 0.8 * 1 + 0.2 * 1 = 1.0. unparsed: 0 + 0.2 * 0 = 0.
    # wrong: judge 9 -> 8/9, grade 0, mix 4/9; 0.8 * 4/9 + 0.2 = 0.5556.
    # proposed question: judge 7 -> 6/9 and 4 -> 3/9 (no grade): 0.8 * 6/9 + 0.2 = 0.7333 and 0.4667.
    assert _rewards(scores, Role.SOLVER) == pytest.approx([1.0, 0.0, 0.8 * 4 / 9 + 0.2, 0.8 * 6 / 9 + 0.2,
                                                           0.8 * 3 / 9 + 0.2])
    # judges of graded answers: 0.5 * format + 0.5 * (1 - |score - grade|): 10 vs right -> 1.0; 9 vs wrong ->
    # 0.5 + 0.5 * (1 - 8/9) = 0.5556. Without a grade: the format score, 1.0 (also the quality verdict).
    assert _rewards(scores, Role.JUDGE) == pytest.approx([1.0, 0.5 + 0.5 / 9, 1.0, 1.0, 1.0])
    # proposal: quality 10 -> 1.0 >= threshold; its answers scored 6/9 and 3/9, mean 1/2, learnability
    # 4 * 1/2 * 1/2 = 1.0; (1 + 1 + 1) / 3 = 1.0. The untagged proposal: 0.
    assert _rewards(scores, Role.PROPOSER) == pytest.approx([1.0, 0.0])
    assert scores.proposer_results[0].accepted and not scores.proposer_results[1].accepted
    assert scores.answer_scores == (pytest.approx((1.0, 0.0, 4 / 9)), pytest.approx((6 / 9, 3 / 9)))
    assert scores.metrics["proposer/learnability_mean"] == 1.0  # named for the variant in use
    assert scores.metrics["judge/accuracy_vs_truth"] == 0.5  # 10 agrees with "right", 9 disagrees with "wrong"
    assert scores.metrics["solver/verifiable_accuracy"] == pytest.approx(1 / 3)


def test_a_verdict_that_does_not_parse_masks_the_answer_without_a_grade():
    turns = _iteration()
    unparseable = _turn(Role.JUDGE, None)
    turns = IterationTurns(turns.proposals, turns.quality_verdicts, turns.solve_items, turns.attempts,
                           (turns.answer_verdicts[0], (unparseable, turns.answer_verdicts[1][1])), turns.grades)
    scores = score_iteration(turns, SETTINGS)
    assert _rewards(scores, Role.SOLVER)[3] is None  # masked, never a neutral 0.5
    assert scores.metrics["solver/masked"] == 1.0


def test_groups_per_role_and_a_frozen_judge_left_out_of_the_batch():
    scores = score_iteration(_iteration(), SETTINGS)
    batch, metrics = build_train_batch(scores)
    by_role = {role: [sample.advantage for sample in batch.samples if sample.role == role]
               for role in ("solver", "judge", "proposer")}
    # solver group 0: mean (1 + 0 + 0.5556) / 3 = 0.5185; group 1: mean 0.6; proposer: mean 0.5
    first_mean = (1.0 + 0.0 + 0.8 * 4 / 9 + 0.2) / 3
    assert by_role["solver"] == pytest.approx([1.0 - first_mean, -first_mean, 0.8 * 4 / 9 + 0.2 - first_mean,
                                               0.8 * 6 / 9 + 0.2 - 0.6, 0.8 * 3 / 9 + 0.2 - 0.6])
    assert by_role["proposer"] == pytest.approx([0.5, -0.5])
    judge_mean = (4.0 + 0.5 + 0.5 / 9) / 5
    assert sorted(by_role["judge"]) == pytest.approx(sorted([1.0 - judge_mean] * 4 + [0.5 + 0.5 / 9 - judge_mean]))
    assert metrics["learner/groups"] == 4.0 and metrics["learner/zero_variance_groups"] == 0.0

    frozen_batch, frozen_metrics = build_train_batch(scores, BatchSettings(trained_roles=("proposer", "solver")))
    assert {sample.role for sample in frozen_batch.samples} == {"proposer", "solver"}
    assert "learner/samples_judge" not in frozen_metrics and frozen_metrics["learner/samples"] == 7.0


def test_a_capped_role_trains_a_random_subset_with_the_advantages_of_all_its_turns():
    scores = score_iteration(_iteration(), SETTINGS)
    full, _ = build_train_batch(scores)
    capped, metrics = build_train_batch(scores, BatchSettings(sample_caps={"judge": 2}), seed=3)
    judged = [sample for sample in capped.samples if sample.role == "judge"]
    # 5 judge turns: 3 left out; the 2 kept carry the advantages computed against all 5 (mean 0.9111)
    assert len(judged) == 2 and metrics["learner/samples_judge"] == 2.0
    assert metrics["learner/capped_samples_judge"] == 3.0 and metrics["learner/samples"] == 9.0
    assert all(sample in full.samples for sample in judged)
    assert [sample for sample in capped.samples if sample.role != "judge"] == \
        [sample for sample in full.samples if sample.role != "judge"]
    again, _ = build_train_batch(scores, BatchSettings(sample_caps={"judge": 2}), seed=3)
    assert again.samples == capped.samples  # the same seed draws the same subset
    roomy, roomy_metrics = build_train_batch(scores, BatchSettings(sample_caps={"judge": 5}))
    assert roomy.samples == full.samples and "learner/capped_samples_judge" not in roomy_metrics


def test_a_cap_keeps_the_verdicts_that_enter_no_other_reward_first():
    # under replace grading the 2 verdicts on seed-1's graded answers enter no reward; the 2 on the proposal's
    # ungraded answers enter the solver's, the quality verdict the proposer's. A cap of 2 keeps the graded 2.
    scores = score_iteration(_iteration(), dataclasses.replace(SETTINGS, grading_mode=GradingMode.REPLACE))
    judged = [s for s in scores.turns if s.turn.role is Role.JUDGE]
    assert [s.trains_only for s in judged] == [True, True, False, False, False]
    capped, metrics = build_train_batch(scores, BatchSettings(sample_caps={"judge": 2}), seed=3)
    assert metrics["learner/capped_samples_judge"] == 3.0 and metrics["judge/verdicts_untrained_unrewarded"] == 0.0
    # rewards 1.0 and 0.5556 against the mean of all five, (1 + 0.5556 + 1 + 1 + 1) / 5 = 0.9111
    mean = (4.0 + 0.5 + 0.5 / 9) / 5
    assert [s.advantage for s in capped.samples if s.role == "judge"] == pytest.approx([1.0 - mean,
                                                                                       0.5 + 0.5 / 9 - mean])
    _, tight = build_train_batch(scores, BatchSettings(sample_caps={"judge": 1}), seed=3)
    assert tight["judge/verdicts_untrained_unrewarded"] == 1.0
    _, frozen = build_train_batch(scores, BatchSettings(trained_roles=("proposer", "solver")))
    assert "judge/verdicts_untrained_unrewarded" not in frozen


def _all_wrong_iteration() -> IterationTurns:
    """Question 0 has a reference answer and every answer is wrong, though the judge scores them apart; question 1
    (proposed, no reference) has two answers the judge scores 7 and 4."""
    turns = _iteration()
    wrong, unparsed, also_wrong = _turn(Role.SOLVER, "5"), _turn(Role.SOLVER, None), _turn(Role.SOLVER, "3")
    return IterationTurns(turns.proposals, turns.quality_verdicts, turns.solve_items,
                          ((wrong, unparsed, also_wrong), turns.attempts[1]),
                          ((_turn(Role.JUDGE, 9), None, _turn(Role.JUDGE, 2)), turns.answer_verdicts[1]),
                          ((False, False, False), (None, None)))


def test_all_equal_groups_are_found_on_the_raw_outcome_and_counted_per_role():
    scores = score_iteration(_all_wrong_iteration(), SETTINGS)
    # question 0: shaped rewards 0.8 * 4/9 + 0.2, 0 and 0.8 * 1/9 * 0.5 + 0.2 differ, yet every grade is False
    assert len(set(_rewards(scores, Role.SOLVER)[:3])) == 3
    assert scores.all_equal_groups == {"solver:0"}
    assert scores.metrics["solver/all_equal_group_share"] == 0.5  # 1 of 2 questions
    assert scores.metrics["proposer/all_equal_group_share"] == 0.0  # rewards 1.0 and 0.0
    assert scores.metrics["judge/all_equal_group_share"] == 0.0
    # the first iteration: question 0 has one right answer, so no group is all-equal
    assert score_iteration(_iteration(), SETTINGS).all_equal_groups == frozenset()


def test_dynamic_sampling_leaves_all_equal_groups_out_of_the_batch():
    scores = score_iteration(_all_wrong_iteration(), SETTINGS)
    kept, kept_metrics = build_train_batch(scores)
    assert sum(sample.role == "solver" for sample in kept.samples) == 5  # shaped differences train by default
    filtered, metrics = build_train_batch(scores, BatchSettings(drop_all_equal=True))
    # only question 1's two answers remain: advantages 0.7333 - 0.6 and 0.4667 - 0.6
    assert [s.advantage for s in filtered.samples if s.role == "solver"] == pytest.approx([2 / 15, -2 / 15])
    assert metrics["learner/dropped_all_equal_groups"] == 1.0 and kept_metrics["learner/dropped_all_equal_groups"] == 0
    assert metrics["learner/samples_proposer"] == kept_metrics["learner/samples_proposer"] == 2.0


def _grounded_iteration(grades: tuple[bool, ...], by_form: bool = False) -> IterationTurns:
    """One proposal with a computed reference "42", answered four times with the given grades (True = "42"); the
    judge scores every answer 10 and the question 10."""
    question = "What is 6 * 7?" if by_form else "A box holds 6 rows of 7. How many?"
    proposal = _turn(Role.PROPOSER, question)
    attempts = tuple(_turn(Role.SOLVER, "42" if grade else "13") for grade in grades)
    return IterationTurns(
        proposals=(proposal,), quality_verdicts=(_turn(Role.JUDGE, 10),),
        solve_items=(SolveItem(question, "it1-q0", "42", 0, by_form),),
        attempts=(attempts,), answer_verdicts=(tuple(_turn(Role.JUDGE, 10) for _ in grades),), grades=(grades,))


def test_an_unverified_reference_trains_no_answer_and_is_not_accepted():
    # 1 of 4 answers equals the computed reference: below the agreement 0.5 * 4 = 2, so the reference may answer
    # another question. The answers are masked, the judge earns its format score (1.0) only, and the proposal is
    # discarded: (Q + F) / 3 = (1 + 1) / 3.
    scores = score_iteration(_grounded_iteration((True, False, False, False)), SETTINGS)
    assert _rewards(scores, Role.SOLVER) == [None] * 4
    assert _rewards(scores, Role.JUDGE) == pytest.approx([1.0] * 5)
    result = scores.proposer_results[0]
    assert not result.accepted and result.verified is False and result.reward == pytest.approx(2 / 3)
    assert scores.metrics["proposer/verified_rate"] == 0.0
    assert "solver/verifiable_accuracy" not in scores.metrics  # untrusted grades are no accuracy either
    assert not any(sample.role == "solver" for sample in build_train_batch(scores)[0].samples)


def test_a_verified_reference_grades_and_the_solve_rate_sets_the_challenge():
    # 2 of 4 agree: verified. p = 2/4, learnability 1: (1 + 1 + 1) / 3. Solver (mix 0.5, judge 10 -> 1):
    # right 0.8 * 1 + 0.2 = 1.0; wrong 0.8 * 0.5 + 0.2 = 0.6. Judge vs grade: right 1.0, wrong 0.5 + 0.5 * 0 = 0.5.
    scores = score_iteration(_grounded_iteration((True, True, False, False)), SETTINGS)
    assert _rewards(scores, Role.SOLVER) == pytest.approx([1.0, 1.0, 0.6, 0.6])
    assert _rewards(scores, Role.JUDGE) == pytest.approx([1.0, 1.0, 0.5, 0.5, 1.0])
    result = scores.proposer_results[0]
    assert result.accepted and result.verified is True and result.solve_rate == 0.5
    assert result.reward == pytest.approx(1.0)
    assert scores.metrics["proposer/verified_rate"] == 1.0


def test_a_reference_by_form_needs_no_majority():
    # "What is 6 * 7?" is its own expression: 1 of 4 right still grades. p = 1/4, learnability 4 * 1/4 * 3/4 = 0.75:
    # (1 + 1 + 0.75) / 3. Solver: right 1.0, wrong 0.6 (as above).
    scores = score_iteration(_grounded_iteration((True, False, False, False), by_form=True), SETTINGS)
    assert _rewards(scores, Role.SOLVER) == pytest.approx([1.0, 0.6, 0.6, 0.6])
    result = scores.proposer_results[0]
    assert result.accepted and result.verified is True and result.solve_rate == 0.25
    assert result.reward == pytest.approx(2.75 / 3)


@pytest.mark.parametrize("grades, seen, refused", [
    ((True, True, False, False), True, "seen"),  # verified (2 of 4), but a question seen earlier in the run
    ((True, True, True, True), False, "unlearnable"),  # all four right: p = 1
])
def test_the_strict_gate_masks_the_answers_to_a_question_it_refuses(grades, seen, refused):
    strict = dataclasses.replace(SETTINGS, strict_gate=True)
    scores = score_iteration(_grounded_iteration(grades), strict, seen=[seen])
    result = scores.proposer_results[0]
    assert result.refused == refused and not result.accepted and result.reward == pytest.approx(2 / 3)
    assert _rewards(scores, Role.SOLVER) == [None] * 4  # never trained on as a solver question
    standard = score_iteration(_grounded_iteration(grades), SETTINGS, seen=[seen])
    assert standard.proposer_results[0].accepted and None not in _rewards(standard, Role.SOLVER)


def _graded_iteration() -> IterationTurns:
    """Question 0 (reference "4"): seven wrong answers and one that did not parse, all graded wrong. Question 1
    (reference "7"): one right answer and one wrong. Grading replaces the judge (solver reward 0.8 grade + 0.2
    format)."""
    wrong, unparsed = _turn(Role.SOLVER, "5"), _turn(Role.SOLVER, None)
    return IterationTurns(
        proposals=(), quality_verdicts=(),
        solve_items=(SolveItem("What is 2 + 2?", "seed-1", "4", None), SolveItem("What is 3 + 4?", "seed-2", "7", None)),
        attempts=((wrong,) * 7 + (unparsed,), (_turn(Role.SOLVER, "7"), wrong)),
        answer_verdicts=((None,) * 8, (None, None)), grades=((False,) * 8, (True, False)))


def test_mean_only_advantages_keep_a_format_difference_small_and_the_std_share_is_logged():
    settings = RewardSettings(quality_threshold=6, difficulty_variant="learnability", solver_judge_weight=0.8,
                              judge_agreement_weight=0.5, grading_mode=GradingMode.REPLACE, grading_weight=0.5)
    scores = score_iteration(_graded_iteration(), settings)
    # question 0: rewards 0.2 x 7 and 0, mean 0.175: advantages +0.025 and -0.175 (mean only). Divided by the
    # Bessel std sqrt((7 * 0.025^2 + 0.175^2) / 7) = sqrt(0.005): +0.354 and -2.475, a right-or-wrong scale.
    mean_only, metrics = build_train_batch(scores)
    assert [s.advantage for s in mean_only.samples][:8] == pytest.approx([0.025] * 7 + [-0.175])
    with_std, _ = build_train_batch(scores, BatchSettings(normalize_std=True))
    assert [s.advantage for s in with_std.samples][:8] == pytest.approx([0.025 / 0.005 ** 0.5] * 7
                                                                        + [-0.175 / 0.005 ** 0.5], rel=2e-3)  # eps 1e-4
    # question 1: 1.0 and 0.2, +-0.4 (mean only), +-0.4 / sqrt(0.32) with the std. The outcome-free share of
    # |A|: 0.35 / (0.35 + 0.8) mean only; (7 * 0.3536 + 2.4749) / (4.9497 + 1.4142) with the std.
    assert metrics["solver/outcome_free_advantage_share_mean_only"] == pytest.approx(0.35 / 1.15)
    assert metrics["solver/outcome_free_advantage_share_std"] == pytest.approx(
        (0.35 / 0.005 ** 0.5) / (0.35 / 0.005 ** 0.5 + 0.8 / 0.32 ** 0.5), rel=2e-3)


def test_role_token_mean_gives_each_role_an_equal_share_of_the_loss():
    # _iteration with grading mixed in; its trained samples hold one response token each: 5 solver, 5 judge and
    # 2 proposer tokens (token shares 5/12, 5/12, 2/12). With role_token_mean every advantage of role r is
    # multiplied by 12 / (3 * tokens_r): solver and judge by 0.8, proposer by 2.
    scores = score_iteration(_iteration(), SETTINGS)
    plain, metrics = build_train_batch(scores)
    assert metrics["learner/token_share_solver"] == pytest.approx(5 / 12)
    assert metrics["learner/token_share_proposer"] == pytest.approx(2 / 12)
    balanced, _ = build_train_batch(scores, BatchSettings(role_token_mean=True))
    factors = {"solver": 0.8, "judge": 0.8, "proposer": 2.0}
    assert [s.advantage for s in balanced.samples] == pytest.approx([s.advantage * factors[s.role]
                                                                     for s in plain.samples])
