"""One self-play iteration, top to bottom: propose, judge questions, solve, judge answers, grade, score, train,
sync, with each phase timed.

Generation calls that do not depend on each other run at the same time on the engine pool (proposals and the
pool questions' answers first; then question judging, answers to new questions, and judging of pool answers),
so no engine idles while the driver waits on one role. The components come in through the Protocols of
`selfplay.components` (Ray actors behind them in production, plain objects in a unit test); the driver owns
logging and checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections import Counter
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from statistics import fmean
from typing import Callable, Iterator

from agents.players import AnswerToJudge, Turn
from rewards.grading_pool import Grade
from rewards.rubric import Rubric
from rewards.scores import LOW_QUALITY, SEEN, UNLEARNABLE, RewardSettings
from rollout.records import SamplingSpec, stream_seed
from selfplay.components import Components, JudgeRole
from selfplay.anchors import draw_anchors
from selfplay.config import Config
from selfplay.cost import role_time_shares
from selfplay.curriculum import curriculum_metrics
from selfplay.diversity import diversity_metrics
from selfplay.preflight import trained_roles
from selfplay.progress import phase_line
from selfplay.question_pool import RECENT_ITERATIONS, AddOutcome, PoolQuestion, QuestionPool, QuestionSource
from selfplay.scoring import (BatchSettings, IterationScores, IterationTurns, SolveItem, build_train_batch,
                              score_iteration)
from selfplay.verdicts import VerdictBudget, graded_verdict_budget


@dataclass
class RunState:
    """What changes from one iteration to the next (and is checkpointed)."""

    iteration: int
    weight_version: int
    questions: QuestionPool
    rubric: Rubric
    diversity_start: float | None = None  # the proposals' first distinct-bigram share (the diversity alert's base)


@dataclass
class IterationResult:
    metrics: dict[str, float]
    turns: IterationTurns
    scores: IterationScores


class PhaseTimer:
    """Wall seconds per phase; `progress` (if given) hears about each phase as it ends, and the iteration's
    details; `alert` hears what a user must see (default: `progress`)."""

    def __init__(self, progress: Callable[[str], None] | None = None,
                 alert: Callable[[str], None] | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self.progress = progress or (lambda message: None)
        self.alert = alert or self.progress

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            self.seconds[phase] = self.seconds.get(phase, 0.0) + elapsed
            self.progress(phase_line(phase, elapsed))


def iteration_seed(config: Config, iteration: int) -> int:
    """The base of an iteration's seeded draws: reproducible, different every iteration."""
    return config.run.seed * 1_000_003 + iteration * 101


def sampling_specs(config: Config, iteration: int) -> dict[str, SamplingSpec]:
    """Each role's sampling in `iteration`. Seeds are hashes of (run seed, iteration, role), hashed again per call
    (`for_call`); players add a request's index and the engine hashes in the prompt and the sample's index
    (rollout.records.sample_seeds), so roles, iterations, calls, requests and samples draw from streams of their
    own."""
    def seed(role: str) -> int:
        return stream_seed(config.run.seed, iteration, role)

    return {
        "proposer": SamplingSpec(n=1, temperature=config.proposer.temperature, top_p=config.proposer.top_p,
                                 max_tokens=config.proposer.max_tokens, seed=seed("proposer")),
        "solver": SamplingSpec(n=config.solver.num_answers, temperature=config.solver.temperature,
                               top_p=config.solver.top_p, max_tokens=config.solver.max_tokens, seed=seed("solver")),
        "judge": SamplingSpec(n=1, temperature=config.judge.temperature, top_p=config.judge.top_p,
                              max_tokens=config.judge.max_tokens, seed=seed("judge")),
    }


def for_call(spec: SamplingSpec, *call: object) -> SamplingSpec:
    """`spec` with a seed of its own for one call of a role (`call` names it): two calls of one role in one
    iteration can hold the same prompt at the same position, which would otherwise draw the same samples."""
    return spec if spec.seed is None else dataclasses.replace(spec, seed=stream_seed(spec.seed, *call))


def reward_settings(config: Config) -> RewardSettings:
    from rewards.scores import GradingMode

    return RewardSettings(quality_threshold=config.judge.quality_threshold,
                          difficulty_variant=config.rewards.proposer_variant,
                          solver_judge_weight=config.solver.judge_weight,
                          judge_agreement_weight=config.judge.truth_weight,
                          grading_mode=GradingMode(config.solver.verifiable),
                          grading_weight=config.solver.verifiable_weight,
                          reference_agreement=config.pool.reference_agreement,
                          strict_gate=config.pool.gate == "strict")


def verdict_budget(config: Config, reserved: int, spent: int = 0) -> VerdictBudget:
    """The iteration's budget of verdicts on graded answers (selfplay.verdicts), `spent` of it already used."""
    budget = graded_verdict_budget(config.solver.verifiable, "judge" in trained_roles(config),
                                   config.judge.train_samples, reserved)
    return VerdictBudget(None if budget is None else max(budget - spent, 0))


def judge_each(judge: JudgeRole, rubric: Rubric, items: list[SolveItem], attempts: list[list[Turn]],
               sampling: SamplingSpec, budget: VerdictBudget,
               rng: random.Random) -> tuple[list[tuple[bool, ...]], list[Future[list[Turn]] | None]]:
    """The answers `budget` chooses (`VerdictBudget.choose`), and one judge call per question over its chosen
    answers (None, and no call, where it has none); `_align_verdicts` puts the verdicts back in place."""
    chosen = budget.choose([item.reference_answer for item in items],
                           [[attempt.parsed.failure is None for attempt in row] for row in attempts], rng)
    return chosen, [judge.judge_answers(rubric, [AnswerToJudge(item.question, attempt.sample.text,
                                                               item.reference_answer)
                                                 for attempt, judged in zip(row, mask) if judged],
                                        for_call(sampling, position))
                    if any(mask) else None
                    for position, (item, row, mask) in enumerate(zip(items, attempts, chosen))]


def _align_verdicts(chosen: tuple[bool, ...], judging: Future[list[Turn]] | None) -> tuple[Turn | None, ...]:
    """Verdicts were requested only for the chosen answers; None where an answer was not judged."""
    remaining = iter(judging.result() if judging is not None else ())
    return tuple(next(remaining) if judged else None for judged in chosen)


def generated_tokens(turns: IterationTurns) -> Counter:
    """Tokens each role generated this iteration."""
    generated = [*turns.proposals, *turns.quality_verdicts, *turns.anchor_verdicts,
                 *(turn for row in turns.attempts for turn in row),
                 *(turn for row in turns.answer_verdicts for turn in row)]
    counts: Counter = Counter()
    for turn in generated:
        if turn is not None:
            counts[turn.role.value] += len(turn.sample.token_ids)
    return counts


def graded_verdicts(turns: IterationTurns) -> int:
    """Verdicts generated on answers to questions with a reference answer."""
    return sum(verdict is not None for item, row in zip(turns.solve_items, turns.answer_verdicts)
               if item.reference_answer is not None for verdict in row)


def _grading_pairs(items: list[SolveItem], attempts: list[list[Turn]]) -> list[tuple[str, str]]:
    """(answer, reference) for every parsed answer to a question with a reference answer, item by item."""
    return [(str(attempt.parsed.value), item.reference_answer) for item, row in zip(items, attempts)
            if item.reference_answer is not None for attempt in row if attempt.parsed.failure is None]


def _place_grades(items: list[SolveItem], attempts: list[list[Turn]],
                  grades: list[Grade]) -> list[tuple[bool | None, ...]]:
    """Grades back in [question][N] shape (the order of `_grading_pairs`): None where the question has no reference
    answer, False for an answer that did not parse."""
    remaining = iter(grades)
    return [tuple(None if item.reference_answer is None else
                  (attempt.parsed.failure is None and next(remaining).correct) for attempt in row)
            for item, row in zip(items, attempts)]


def roll_out(config: Config, components: Components, state: RunState, timer: PhaseTimer) -> IterationTurns:
    """All generation of one iteration, overlapped in two waves."""
    specs = sampling_specs(config, state.iteration)
    rewrite_count = round(config.proposer.batch_size * config.proposer.rewrite_ratio)
    references = [q.text for q in state.questions.sample_references(rewrite_count, state.iteration)]
    references += [None] * (config.proposer.batch_size - len(references))
    drawn = state.questions.sample_references(config.solver.batch_size, state.iteration)
    pool_items = [SolveItem(q.text, q.id, q.answer, None) for q in drawn]
    with timer("wave1_propose_solve"):  # proposals, and answers to pool questions
        proposing = components.proposer.propose(references, specs["proposer"])
        pool_solving = components.solver.solve([item.question for item in pool_items],
                                               for_call(specs["solver"], "pool"))
        proposals = proposing.result()
        new_items = [SolveItem(p.parsed.value.text, f"it{state.iteration}-q{i}", p.parsed.value.reference, i,
                               p.parsed.value.reference_by_form)
                     for i, p in enumerate(proposals) if p.parsed.failure is None]
        anchors = draw_anchors(state.questions.questions(), config.judge.anchor_questions,
                               random.Random(iteration_seed(config, state.iteration) + 5))
        quality_judging = components.judge.judge_questions(
            state.rubric, [item.question for item in new_items] + [anchor.text for anchor in anchors],
            for_call(specs["judge"], "quality"))
        new_solving = components.solver.solve([item.question for item in new_items], for_call(specs["solver"], "new"))
        pool_attempts = pool_solving.result()
        grading = components.grader.submit(_grading_pairs(pool_items, pool_attempts))  # runs while judges work
    with timer("wave2_judge_solve"):  # judging of questions and answers, and answers to the new questions
        budget = verdict_budget(config, reserved=len(new_items) + len(anchors))
        rng = random.Random(iteration_seed(config, state.iteration) + 6)
        pool_chosen, pool_judging = judge_each(components.judge, state.rubric, pool_items, pool_attempts,
                                               for_call(specs["judge"], "pool"), budget, rng)
        new_attempts = new_solving.result()
        new_grading = components.grader.submit(_grading_pairs(new_items, new_attempts))  # grounded proposals
        new_chosen, new_judging = judge_each(components.judge, state.rubric, new_items, new_attempts,
                                             for_call(specs["judge"], "new"), budget, rng)
        quality_results = quality_judging.result()
        quality_verdicts, anchor_verdicts = iter(quality_results[:len(new_items)]), quality_results[len(new_items):]
        answer_verdicts = [_align_verdicts(chosen, judging)
                           for chosen, judging in zip(pool_chosen + new_chosen, pool_judging + new_judging)]
    with timer("grade_wait"):  # grading ran during wave 2: only what that did not hide
        grades = grading.result() + new_grading.result()
    items, attempts = pool_items + new_items, pool_attempts + new_attempts
    check_served_version(state.weight_version, proposals, *attempts)
    return IterationTurns(
        proposals=tuple(proposals),
        quality_verdicts=tuple(next(quality_verdicts) if p.parsed.failure is None else None for p in proposals),
        solve_items=tuple(items),
        attempts=tuple(tuple(a) for a in attempts),
        answer_verdicts=tuple(answer_verdicts),
        grades=tuple(_place_grades(items, attempts, grades)),  # None where a question has no reference
        grade_timeouts=sum(grade.timed_out for grade in grades),
        replay_share=sum(q.added_iteration < state.iteration - RECENT_ITERATIONS for q in drawn)
        / max(len(drawn), 1),
        anchors=tuple(anchors), anchor_verdicts=tuple(anchor_verdicts))


def refill_groups(config: Config, components: Components, state: RunState, turns: IterationTurns,
                  timer: PhaseTimer) -> tuple[IterationTurns, dict[str, float]]:
    """Dynamic sampling (`filter_groups`): while fewer solver groups carry signal (not all-equal, see
    selfplay.scoring) than the rollout solved questions, solve that many more pool questions not yet drawn this
    iteration, for at most `max_rounds` rounds."""
    settings, specs = reward_settings(config), sampling_specs(config, state.iteration)
    target, rounds, added = len(turns.solve_items), 0, 0
    while True:
        all_equal = score_iteration(turns, settings).all_equal_groups
        with_signal = sum(f"solver:{index}" not in all_equal for index in range(len(turns.solve_items)))
        used = frozenset(item.question_id for item in turns.solve_items)
        available = sum(question.id not in used for question in state.questions.questions())
        count = min(target - with_signal, available)
        if rounds == config.filter_groups.max_rounds or count <= 0:
            break
        rounds += 1
        with timer("refill"):
            items = [SolveItem(q.text, q.id, q.answer, None)
                     for q in state.questions.sample_references(count, state.iteration, exclude=used)]
            attempts = components.solver.solve([item.question for item in items],
                                               for_call(specs["solver"], "refill", rounds)).result()
            check_served_version(state.weight_version, *attempts)
            grading = components.grader.submit(_grading_pairs(items, attempts))
            budget = verdict_budget(config, reserved=len(turns.anchors) + sum(
                verdict is not None for verdict in turns.quality_verdicts), spent=graded_verdicts(turns))
            chosen, judging = judge_each(components.judge, state.rubric, items, attempts,
                                         for_call(specs["judge"], "refill", rounds), budget,
                                         random.Random(iteration_seed(config, state.iteration) + 6 + rounds))
            verdicts = [_align_verdicts(c, j) for c, j in zip(chosen, judging)]
            grades = grading.result()
        added += len(items)
        turns = dataclasses.replace(
            turns, solve_items=turns.solve_items + tuple(items),
            attempts=turns.attempts + tuple(tuple(row) for row in attempts),
            answer_verdicts=turns.answer_verdicts + tuple(verdicts),
            grades=turns.grades + tuple(_place_grades(items, attempts, grades)),
            grade_timeouts=turns.grade_timeouts + sum(grade.timed_out for grade in grades))
    timer.progress(f"  dynamic sampling: {with_signal} of {target} solver groups carry signal after {rounds} refill "
                   f"round(s) ({added} more questions)")
    return turns, {"filter/refill_rounds": float(rounds), "filter/refill_questions": float(added),
                   "filter/solver_groups_with_signal": float(with_signal), "filter/solver_groups_target": float(target)}


def track_diversity(config: Config, state: RunState, turns: IterationTurns, timer: PhaseTimer) -> dict[str, float]:
    """Diversity of this iteration's proposals and of the pool (selfplay.diversity), and one line when the
    proposals' distinct-bigram share fell below `pool.diversity_alert` of its first value."""
    threshold = config.pool.duplicate_threshold
    # a proposal that does not parse still shows what the proposer writes: its raw text counts (an early run
    # parses one proposal in ten, which would leave nothing to measure)
    proposals = [turn.parsed.value.text if turn.parsed.failure is None else turn.sample.text
                 for turn in turns.proposals]
    metrics = (diversity_metrics("proposer", proposals, threshold)
               | diversity_metrics("pool", [question.text for question in state.questions.questions()], threshold))
    current = metrics.get("proposer/distinct_2")
    if current is not None and current == current:
        if state.diversity_start is None:
            state.diversity_start = current
        elif current < config.pool.diversity_alert * state.diversity_start:
            timer.alert(f"  diversity alert: the proposals' distinct-bigram share is {current:.2f}, below "
                           f"{config.pool.diversity_alert:g} of its first value {state.diversity_start:.2f}")
    return metrics


def watch_judge_drift(config: Config, metrics: dict[str, float], timer: PhaseTimer) -> None:
    """One line when the judge scores this iteration's proposals far above the known-good anchors."""
    drift = metrics.get("judge/question_score_drift")
    if drift is not None and drift > config.judge.drift_alert:
        timer.alert(f"  judge drift alert: proposals scored {drift:.1f} points above known-good seed questions "
                       f"(judge.drift_alert {config.judge.drift_alert:g}); anchor accuracy "
                       f"{metrics.get('judge/anchor_accuracy', float('nan')):.2f}")


def check_served_version(expected: int, *turn_lists: list[Turn]) -> None:
    """Every sample must come from the weights the learner last synced: never silent staleness."""
    for turns in turn_lists:
        for turn in turns:
            if turn.weight_version != expected:
                raise RuntimeError(f"a {turn.role.value} sample was generated with weight version "
                                   f"{turn.weight_version}, but version {expected} is current")


def update_pool(state: RunState, turns: IterationTurns, scores: IterationScores) -> dict[str, float]:
    """Accepted proposals join the pool; pool questions record how well they were solved."""
    accepted, refused = [], {outcome: 0 for outcome in AddOutcome}
    accepted_checkables, accepted_rates = [], []
    for index, (proposal, result) in enumerate(zip(turns.proposals, scores.proposer_results)):
        if not result.accepted:
            continue
        question = PoolQuestion(id=f"it{state.iteration}-q{index}", text=proposal.parsed.value.text,
                                answer=proposal.parsed.value.reference, source=QuestionSource.PROPOSED,
                                added_iteration=state.iteration, checkable=proposal.parsed.value.checkable)
        outcome = state.questions.add(question).outcome
        if outcome is AddOutcome.ACCEPTED:
            accepted.append(question.text)
            accepted_checkables.append(question.checkable)
            accepted_rates.append(result.solve_rate)
        refused[outcome] += 1
    for item, answer_scores in zip(turns.solve_items, scores.answer_scores):
        scored = [score for score in answer_scores if score is not None]
        if item.proposal_index is None and scored:
            state.questions.record_solve(item.question_id, fmean(scored))
    counters = state.questions.counters
    difficulty = curriculum_metrics([question.checkable for question in state.questions.questions()],
                                    accepted_checkables, accepted_rates)
    return difficulty | {"pool/size": float(len(state.questions)), "pool/accepted": float(len(accepted)),
            "pool/replay_share": turns.replay_share,
            "pool/rejected_duplicate_this_iteration": float(refused[AddOutcome.REJECTED_DUPLICATE]),
            "pool/rejected_full_this_iteration": float(refused[AddOutcome.REJECTED_FULL]),
            "pool/rejected_unverified": float(sum(r.verified is False for r in scores.proposer_results)),
            "pool/rejected_seen": float(sum(r.refused == SEEN for r in scores.proposer_results)),
            "pool/rejected_unlearnable": float(sum(r.refused == UNLEARNABLE for r in scores.proposer_results)),
            "pool/accepted_total": float(counters.accepted),
            "pool/rejected_duplicate_total": float(counters.rejected_duplicate),
            "pool/evicted_solved_total": float(counters.evicted_solved),
            "pool/evicted_oldest_total": float(counters.evicted_oldest),
            "pool/rejected_low_quality": float(sum(r.refused == LOW_QUALITY for r in scores.proposer_results))}


@contextmanager
def engines_asleep(components: Components):
    """The engines sleep for the block where `components.sleep_while_training` (one GPU shared with the learner),
    and are awake again after it, before the sync loads the new weights."""
    if not components.sleep_while_training:
        yield
        return
    for pool in components.engine_pools:
        pool.sleep()
    try:
        yield
    finally:
        for pool in components.engine_pools:
            pool.wake_up()


def sync_weights(config: Config, components: Components, state: RunState) -> dict[str, float]:
    """Export the learner's weights as the next version and make every following pool serve them, verified on
    the probe against this version and the one before (rollout.probe)."""
    version = state.weight_version + 1
    update = components.learner.export(version, components.sync_mode, str(components.export_dir), components.probe)
    metrics: dict[str, float] = {}
    for engines in components.engine_pools:
        metrics = engines.apply_update(update)
    state.weight_version = version
    probes = update.probes()  # one for the shared adapter, or one per role
    components.probe = update.probe or probes
    separations = {role: probe.separation() for role, probe in probes.items()}
    metrics["sync/probe_tolerance"] = max(probe.tolerance for probe in probes.values())
    # the adapter that moved most: a role that did not train this iteration keeps its adapter where it was
    metrics["sync/probe_separation"] = max((value for value in separations.values() if not math.isnan(value)),
                                           default=math.nan)
    metrics |= {f"sync/probe_separation_{role}": value for role, value in separations.items() if role}
    return metrics


def _rollout_counts(turns: IterationTurns) -> str:
    answers = sum(len(a) for a in turns.attempts)
    verdicts = len(turns.anchor_verdicts) + sum(v is not None for v in turns.quality_verdicts) + sum(
        v is not None for row in turns.answer_verdicts for v in row)
    tokens = sum(len(t.sample.token_ids) for t in turns.proposals) + sum(
        len(t.sample.token_ids) for a in turns.attempts for t in a)
    return (f"  rollout: {len(turns.proposals)} proposals, {len(turns.solve_items)} questions x "
            f"{answers // max(len(turns.solve_items), 1)} answers, {verdicts} verdicts, "
            f"{tokens} proposer+solver tokens")


def run_iteration(config: Config, components: Components, state: RunState,
                  progress: Callable[[str], None] | None = None,
                  alert: Callable[[str], None] | None = None) -> IterationResult:
    timer = PhaseTimer(progress, alert)
    started = time.perf_counter()
    turns = roll_out(config, components, state, timer)
    refill_metrics: dict[str, float] = {}
    if config.filter_groups.enabled:
        turns, refill_metrics = refill_groups(config, components, state, turns, timer)
    timer.progress(_rollout_counts(turns))
    with timer("score"):
        seen = [proposal.parsed.failure is None and state.questions.remember(proposal.parsed.value.text)
                for proposal in turns.proposals]
        scores = score_iteration(turns, reward_settings(config), seen)
        pool_metrics = update_pool(state, turns, scores) | {"pool/seen_before": float(sum(seen))}
        caps = {"judge": config.judge.train_samples} if config.judge.train_samples else {}
        batch_settings = BatchSettings(normalize_std=config.learner.normalize_std,
                                       trained_roles=trained_roles(config),
                                       drop_all_equal=config.filter_groups.enabled, sample_caps=caps,
                                       role_token_mean=config.learner.role_token_mean)
        batch, batch_metrics = build_train_batch(scores, batch_settings, iteration_seed(config, state.iteration) + 4)
    diversity = track_diversity(config, state, turns, timer)
    watch_judge_drift(config, scores.metrics, timer)
    with timer("train"):
        with engines_asleep(components):
            learner_metrics = components.learner.train(batch)
            if components.drift_samples:
                learner_metrics["learner/drift_kl"] = components.learner.drift_from_base(
                    list(components.drift_samples))
    with timer("sync"):
        sync_metrics = sync_weights(config, components, state)
    rollout_metrics = components.engine_pools[0].metrics() if components.engine_pools else {}
    timer.progress(f"  generation: {rollout_metrics.get('rollout/tokens_per_second', 0.0):.0f} tokens/s; "
                   f"trained {learner_metrics.get('learner/tokens', 0.0):.0f} tokens")
    wall = time.perf_counter() - started
    times = {f"time/{phase}": seconds for phase, seconds in timer.seconds.items()}
    times["time/iteration"] = wall
    times["time/other"] = max(wall - sum(timer.seconds.values()), 0.0)
    trained = Counter()
    for sample in batch.samples:
        trained[sample.role] += len(sample.prompt_token_ids) + len(sample.response_token_ids)
    costs = role_time_shares(generated_tokens(turns), trained, timer.seconds, wall)
    metrics = (scores.metrics | refill_metrics | pool_metrics | diversity | batch_metrics | learner_metrics
               | sync_metrics | rollout_metrics | times | costs)
    return IterationResult(metrics=metrics, turns=turns, scores=scores)
