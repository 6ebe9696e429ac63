"""From one iteration's role turns to rewards, per-role advantages and the learner's batch. Pure code.

Groups (Multi-Agent Evolve): the N solver answers to one question form a group; all proposer turns form one
group and all judge turns another (per-role baselines). A turn whose reward is None (the judge's verdict did not
parse and no verifiable grade stands in) is masked: counted, never trained on, never a neutral 0.5.

A group whose raw outcome is the same for every sample teaches nothing about what works: a solver group whose
answers are all right or all wrong (graded against a reference answer) can still differ in shaped reward, by
format and judge score alone. Those groups are counted per role, and dynamic sampling leaves them out.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from statistics import fmean

import torch

from agents.parsing import failure_counts
from agents.players import Turn
from agents.roles import Role
from learner.grpo import group_advantages
from learner.records import TrainBatch, TrainSample
from rewards.scores import (SEEN, UNLEARNABLE, GradingMode, ProposerReward, RewardSettings, answer_outcome,
                            answer_score, judge_reward, normalise_score, proposer_reward, reference_verified,
                            solver_reward)
from rollout.records import PROMPT_TOO_LONG
from selfplay.anchors import Anchor


@dataclass(frozen=True)
class SolveItem:
    """A question the solver answers this iteration: a fresh proposal or a pool question."""

    question: str
    question_id: str
    reference_answer: str | None
    proposal_index: int | None  # index into the proposals when the question was proposed this iteration
    reference_by_form: bool = False  # the question is its checkable form: its reference needs no verifying


@dataclass(frozen=True)
class IterationTurns:
    """Everything the roles produced in one iteration, aligned by index."""

    proposals: tuple[Turn, ...]
    quality_verdicts: tuple[Turn | None, ...]  # per proposal; None where no question parsed
    solve_items: tuple[SolveItem, ...]
    attempts: tuple[tuple[Turn, ...], ...]  # [question][N]
    answer_verdicts: tuple[tuple[Turn | None, ...], ...]  # [question][N]; None where no answer parsed
    grades: tuple[tuple[bool | None, ...], ...]  # [question][N]; None where no reference answer
    grade_timeouts: int = 0  # grades that overran their time limit (counted wrong in `grades`)
    replay_share: float = 0.0  # of the pool questions drawn first, the share of older ones (pool.replay_ratio)
    anchors: tuple[Anchor, ...] = ()  # known-good and known-bad questions judged beside the proposals
    anchor_verdicts: tuple[Turn, ...] = ()  # per anchor


@dataclass(frozen=True)
class ScoredTurn:
    turn: Turn
    reward: float | None
    group: str
    trains_only: bool = False  # a verdict that enters no other role's reward: a sample cap keeps it first


@dataclass(frozen=True)
class IterationScores:
    turns: tuple[ScoredTurn, ...]
    proposer_results: tuple[ProposerReward, ...]  # per proposal
    answer_scores: tuple[tuple[float | None, ...], ...]  # [question][N]
    metrics: dict[str, float]
    all_equal_groups: frozenset[str] = frozenset()  # groups whose raw outcome (group_outcomes) is one value or none


def _score_of(verdict: Turn | None) -> int | None:
    return verdict.parsed.value if verdict is not None and verdict.parsed.failure is None else None


def trusted_grades(turns: IterationTurns, settings: RewardSettings) -> tuple[tuple[bool | None, ...], ...]:
    """`turns.grades` where the reference can be trusted: a seed's or a pool question's, a new proposal's that is
    its own checkable form, or one that its answers verified (rewards.scores.reference_verified). An unverified
    reference grades nothing (None)."""
    return tuple(tuple(None for _ in grades)
                 if item.proposal_index is not None and item.reference_answer is not None
                 and not item.reference_by_form
                 and not reference_verified(grades, settings.reference_agreement) else grades
                 for item, grades in zip(turns.solve_items, turns.grades))


def score_iteration(turns: IterationTurns, settings: RewardSettings,
                    seen: Sequence[bool] = ()) -> IterationScores:
    """Rewards of every turn; `seen[i]`: proposal i repeats a question seen earlier in the run. The answers to a
    new question whose computed reference was not verified train nothing (their reward is None: the reference may
    answer another question, and the judge's opinion is no better evidence), and the judge's verdicts on them earn
    their format score only. Under the strict gate the answers to a new question it refuses as seen or
    unlearnable train nothing either."""
    scored: list[ScoredTurn] = []
    solver_positions: dict[int, list[int]] = {}  # item index -> its answers' positions in `scored`
    answer_scores: list[tuple[float | None, ...]] = []
    outcomes_by_item: list[tuple[bool | None, ...]] = []
    trusted = trusted_grades(turns, settings)
    for item_index, (item, attempts, verdicts, grades) in enumerate(zip(turns.solve_items, turns.attempts,
                                                                        turns.answer_verdicts, trusted)):
        unverified = item.reference_answer is not None and all(grade is None for grade in grades)
        scores, outcomes = [], []
        for attempt, verdict, grade in zip(attempts, verdicts, grades):
            answered = attempt.parsed.failure is None
            score = answer_score(_score_of(verdict), grade, settings) if answered else 0.0
            scores.append(score)
            outcomes.append(answer_outcome(_score_of(verdict), grade) if answered else None)
            reward = None if unverified else solver_reward(score, attempt.parsed.format_score, settings)
            solver_positions.setdefault(item_index, []).append(len(scored))
            scored.append(ScoredTurn(attempt, reward, f"solver:{item_index}"))
            if verdict is not None:
                reward = judge_reward(verdict.parsed.format_score, _score_of(verdict), grade, settings)
                enters_no_reward = unverified or (grade is not None and settings.grading_mode is GradingMode.REPLACE)
                scored.append(ScoredTurn(verdict, reward, "judge", enters_no_reward))
        answer_scores.append(tuple(scores))
        outcomes_by_item.append(tuple(outcomes))
    by_proposal = {item.proposal_index: index for index, item in enumerate(turns.solve_items)
                   if item.proposal_index is not None}
    proposer_results = []
    for index, (proposal, verdict) in enumerate(zip(turns.proposals, turns.quality_verdicts)):
        item_index = by_proposal.get(index)
        outcomes = () if item_index is None else outcomes_by_item[item_index]
        verified = (None if item_index is None or turns.solve_items[item_index].reference_answer is None
                    else any(grade is not None for grade in trusted[item_index]))
        result = proposer_reward(proposal.parsed.failure is None, proposal.parsed.format_score, _score_of(verdict),
                                 outcomes, settings, verified, index < len(seen) and seen[index])
        proposer_results.append(result)
        if result.refused in (SEEN, UNLEARNABLE) and item_index is not None:
            for position in solver_positions[item_index]:
                scored[position] = replace(scored[position], reward=None)
        scored.append(ScoredTurn(proposal, result.reward, "proposer"))
        if verdict is not None:
            scored.append(ScoredTurn(verdict, judge_reward(verdict.parsed.format_score, _score_of(verdict), None,
                                                           settings), "judge"))
    for anchor, verdict in zip(turns.anchors, turns.anchor_verdicts):  # the label is the truth its score meets
        scored.append(ScoredTurn(verdict, judge_reward(verdict.parsed.format_score, _score_of(verdict), anchor.good,
                                                       settings), "judge", trains_only=True))
    all_equal = frozenset(group for group, outcomes in group_outcomes(turns, scored, trusted).items()
                          if len(set(outcomes)) <= 1)
    metrics = _metrics(turns, scored, proposer_results, settings.difficulty_variant, all_equal, trusted)
    metrics |= _anchor_metrics(turns, settings.quality_threshold, metrics.get("judge/question_score_mean"))
    return IterationScores(tuple(scored), tuple(proposer_results), tuple(answer_scores), metrics, all_equal)


def group_outcomes(turns: IterationTurns, scored: list[ScoredTurn],
                   grades: tuple[tuple[bool | None, ...], ...]) -> dict[str, tuple]:
    """Each group's raw outcomes: a solver group's `grades` (the trusted ones) where its question has a trusted
    reference (an answer that did not parse is wrong), otherwise the rewards of its unmasked samples."""
    outcomes: dict[str, list] = {}
    for turn in scored:
        outcomes.setdefault(turn.group, [])
        if turn.reward is not None:
            outcomes[turn.group].append(turn.reward)
    for index, row in enumerate(grades):
        if row and all(grade is not None for grade in row):
            outcomes[f"solver:{index}"] = list(row)
    return {group: tuple(values) for group, values in outcomes.items()}


def role_of_group(group: str) -> str:
    return group.partition(":")[0]


def _rate_metrics(prefix: str, turns: list[Turn]) -> dict[str, float]:
    if not turns:
        return {}
    counts = failure_counts(turn.parsed for turn in turns)
    metrics = {f"{prefix}/format_failure_rate/{reason.value.lower()}": count / len(turns)
               for reason, count in counts.items() if count}  # a reason is logged where it occurs
    metrics[f"{prefix}/format_failure_rate"] = sum(counts.values()) / len(turns)
    metrics[f"{prefix}/response_tokens_mean"] = fmean(len(turn.sample.token_ids) for turn in turns)
    metrics[f"{prefix}/truncated_rate"] = fmean(turn.sample.finish_reason == "length" for turn in turns)
    metrics[f"{prefix}/prompt_too_long_rate"] = fmean(turn.sample.finish_reason == PROMPT_TOO_LONG
                                                      for turn in turns)
    return metrics


def _metrics(turns: IterationTurns, scored: list[ScoredTurn], proposer_results: list[ProposerReward],
             challenge_name: str, all_equal: frozenset[str], grades: tuple[tuple[bool | None, ...], ...]) -> dict:
    metrics: dict[str, float] = {}
    groups = dict.fromkeys(s.group for s in scored)
    for role in Role:
        role_groups = [group for group in groups if role_of_group(group) == role.value]
        if role_groups:
            metrics[f"{role.value}/all_equal_group_share"] = (sum(group in all_equal for group in role_groups)
                                                              / len(role_groups))
        role_turns = [s for s in scored if s.turn.role is role]
        rewards = [s.reward for s in role_turns if s.reward is not None]
        metrics[f"{role.value}/samples"] = float(len(role_turns))
        metrics[f"{role.value}/masked"] = float(len(role_turns) - len(rewards))
        if rewards:
            metrics[f"{role.value}/reward_mean"] = fmean(rewards)
        metrics |= _rate_metrics(role.value, [s.turn for s in role_turns])
    question_scores = [_score_of(v) for v in turns.quality_verdicts if v is not None]
    answer_scores = [_score_of(v) for row in turns.answer_verdicts for v in row if v is not None]
    for name, values in (("question_score_mean", question_scores), ("answer_score_mean", answer_scores)):
        valid = [v for v in values if v is not None]
        if valid:
            metrics[f"judge/{name}"] = fmean(valid)
    agreements = [(normalise_score(s) >= 0.5) == grade
                  for row_v, row_g in zip(turns.answer_verdicts, grades)
                  for v, grade in zip(row_v, row_g) if grade is not None and (s := _score_of(v)) is not None]
    if agreements:
        metrics["judge/accuracy_vs_truth"] = fmean(agreements)
    graded = [g for row in grades for g in row if g is not None]
    if graded:
        metrics["solver/verifiable_accuracy"] = fmean(graded)
        metrics["solver/grade_timeouts"] = float(turns.grade_timeouts)
    accepted = sum(r.accepted for r in proposer_results)
    metrics["proposer/accepted_rate"] = accepted / len(proposer_results) if proposer_results else 0.0
    checked = [r.verified for r in proposer_results if r.verified is not None]
    if checked:  # of the new questions with a computed reference, the share whose answers verified it
        metrics["proposer/verified_rate"] = fmean(checked)
    rates = [r.solve_rate for r in proposer_results if r.solve_rate is not None]
    if rates:
        metrics["proposer/solve_rate_mean"] = fmean(rates)
    difficulties = [r.difficulty for r in proposer_results if r.difficulty is not None]
    if difficulties:
        metrics[f"proposer/{challenge_name}_mean"] = fmean(difficulties)  # the variant the reward used
    return metrics


def _anchor_metrics(turns: IterationTurns, threshold: int, question_score_mean: float | None) -> dict[str, float]:
    """The judge against its anchors: the share on the right side of the quality threshold, its mean score on each
    kind, and how far its mean score on the proposals lies above its mean on known-good questions (drift)."""
    judged = [(anchor, score) for anchor, verdict in zip(turns.anchors, turns.anchor_verdicts)
              if (score := _score_of(verdict)) is not None]
    if not judged:
        return {}
    metrics = {"judge/anchor_accuracy": fmean((score >= threshold) == anchor.good for anchor, score in judged)}
    for name, good in (("good", True), ("bad", False)):
        scores = [score for anchor, score in judged if anchor.good is good]
        if scores:
            metrics[f"judge/anchor_{name}_score_mean"] = fmean(scores)
    if question_score_mean is not None and "judge/anchor_good_score_mean" in metrics:
        metrics["judge/question_score_drift"] = question_score_mean - metrics["judge/anchor_good_score_mean"]
    return metrics


@dataclass(frozen=True)
class BatchSettings:
    """How the iteration's scored turns become the learner's batch."""

    normalize_std: bool = False
    """Divide each group's advantages by its std (GRPO); off, reward minus the group mean (Dr. GRPO)."""
    trained_roles: tuple[str, ...] = ("proposer", "solver", "judge")
    drop_all_equal: bool = False
    """Dynamic sampling: leave out every group whose raw outcome is all-equal."""
    sample_caps: dict[str, int] = field(default_factory=dict)
    """Role -> most samples trained (a random subset)."""
    role_token_mean: bool = False
    """Weight each role's advantages so every role present gets an equal share of the loss (a token mean per role,
    averaged over roles) instead of its share of the batch's tokens."""


def build_train_batch(scores: IterationScores, settings: BatchSettings = BatchSettings(),
                      seed: int = 0) -> tuple[TrainBatch, dict]:
    """Advantages per group; zero-variance groups contribute nothing (counted) and are left out of the batch, and
    so are roles outside `trained_roles` (a frozen judge's verdicts come from another model) and, with
    `drop_all_equal`, every group whose raw outcome is all-equal. A role in `sample_caps` trains at most that many
    samples: a uniform random subset (`seed`), drawn after the advantages were computed from all of its turns, so
    they keep their baselines. The learner's loss is one token mean over the batch, so each role's share of the
    gradient is its share of the response tokens (logged as learner/token_share_ROLE) unless `role_token_mean`."""
    dropped = frozenset(group for group in scores.all_equal_groups
                        if settings.drop_all_equal and role_of_group(group) in settings.trained_roles)
    trainable = [s for s in scores.turns if s.reward is not None and s.turn.role.value in settings.trained_roles
                 and s.group not in dropped]
    if not trainable:
        return TrainBatch(()), {"learner/zero_variance_groups": 0.0, "learner/samples": 0.0,
                                "learner/dropped_all_equal_groups": float(len(dropped))}
    group_index = {name: index for index, name in enumerate(dict.fromkeys(s.group for s in trainable))}
    rewards = torch.tensor([s.reward for s in trainable], dtype=torch.float64)  # [N]
    groups = torch.tensor([group_index[s.group] for s in trainable])  # [N]
    advantages, stats = group_advantages(rewards, groups, normalize_std=settings.normalize_std)
    pairs = [(s, TrainSample(prompt_token_ids=s.turn.prompt_token_ids, response_token_ids=s.turn.sample.token_ids,
                             rollout_logprobs=s.turn.sample.logprobs, advantage=float(advantage),
                             temperature=s.turn.temperature, role=s.turn.role.value))
             for s, advantage in zip(trainable, advantages.tolist()) if advantage != 0.0 and s.turn.sample.token_ids]
    pairs, capped = _capped(pairs, settings.sample_caps, random.Random(seed))
    samples = tuple(sample for _, sample in pairs)
    tokens = Counter()
    for sample in samples:
        tokens[sample.role] += len(sample.response_token_ids)
    if settings.role_token_mean and samples:
        weights = {role: sum(tokens.values()) / (len(tokens) * count) for role, count in tokens.items()}
        samples = tuple(replace(sample, advantage=sample.advantage * weights[sample.role]) for sample in samples)
    per_role = Counter(sample.role for sample in samples)
    metrics = {"learner/zero_variance_groups": float(stats.zero_variance_groups),
               "learner/groups": float(stats.group_count), "learner/samples": float(len(samples)),
               "learner/dropped_all_equal_groups": float(len(dropped))}
    metrics |= {f"learner/samples_{role}": float(count) for role, count in per_role.items()}
    metrics |= {f"learner/token_share_{role}": count / sum(tokens.values()) for role, count in tokens.items()}
    metrics |= {f"learner/capped_samples_{role}": float(count) for role, count in capped.items()}
    if "judge" in settings.trained_roles:
        generated = sum(s.trains_only for s in scores.turns if s.turn.role is Role.JUDGE)
        trained = sum(s.trains_only for s, _ in pairs if s.turn.role is Role.JUDGE)
        metrics["judge/verdicts_untrained_unrewarded"] = float(generated - trained)
    metrics |= _outcome_free_shares(trainable, rewards, groups, scores.all_equal_groups)
    return TrainBatch(samples), metrics


def _outcome_free_shares(trainable: list[ScoredTurn], rewards: torch.Tensor, groups: torch.Tensor,
                         all_equal: frozenset[str]) -> dict[str, float]:
    """Of the solver's advantage mass (sum of |A|), the share on groups whose outcome is all-equal (rewards that
    differ by format or judge score only), with and without the std division: how much of the solver's update
    is shaped noise under each choice."""
    solver = torch.tensor([s.turn.role is Role.SOLVER for s in trainable])  # [N]
    no_outcome = torch.tensor([s.group in all_equal for s in trainable])  # [N]
    shares = {}
    for name, normalize in (("mean_only", False), ("std", True)):
        magnitude = group_advantages(rewards, groups, normalize_std=normalize)[0].abs()  # [N]
        total = magnitude[solver].sum().item()
        if total > 0:
            shares[f"solver/outcome_free_advantage_share_{name}"] = magnitude[solver & no_outcome].sum().item() / total
    return shares


def _capped(pairs: list[tuple[ScoredTurn, TrainSample]], caps: dict[str, int],
            rng: random.Random) -> tuple[list[tuple[ScoredTurn, TrainSample]], dict[str, int]]:
    """`pairs` with each capped role cut to its cap (order kept), and how many each lost. The turns that enter no
    other reward (`ScoredTurn.trains_only`) are kept first, a random subset where they alone exceed the cap; the
    rest of the cap is a random subset of the others."""
    left_out: set[int] = set()
    capped = {}
    for role, cap in caps.items():
        positions = [index for index, (_, sample) in enumerate(pairs) if sample.role == role]
        if len(positions) > cap:
            first = [index for index in positions if pairs[index][0].trains_only]
            others = [index for index in positions if not pairs[index][0].trains_only]
            kept = set(rng.sample(first, min(cap, len(first))) if first else ())
            kept |= set(rng.sample(others, cap - len(kept)))
            left_out |= set(positions) - kept
            capped[role] = len(positions) - cap
    return [pair for index, pair in enumerate(pairs) if index not in left_out], capped

