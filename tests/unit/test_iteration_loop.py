"""One iteration of the loop on in-process stand-ins for the Protocols of selfplay.components: the stages run in
order, every role's samples reach the learner, the weights are synced once, and dynamic sampling refills from
questions not yet drawn. The real roles, learner and engines have their own integration tests."""

from __future__ import annotations

import dataclasses
import re
from concurrent.futures import Future
from pathlib import Path

import pytest

from agents.parsing import parse_answer, parse_score
from agents.players import Turn
from agents.roles import Role
from agents.tasks import task_family
from learner.weights import SyncMode, SyncProbe, WeightUpdate
from rewards.grading_pool import Grade
from rewards.rubric import load_rubric
from rollout.records import Sample
from selfplay.components import Components
from selfplay.config import load_config
from selfplay.iteration import RunState, run_iteration
from selfplay.question_pool import PoolQuestion, QuestionPool, QuestionSource

ROOT = Path(__file__).resolve().parents[2]
SUM = re.compile(r"What is (\d+) \+ (\d+)\?")


def done(value) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


def turn(role: Role, text: str, parse, sampling) -> Turn:
    return Turn(role, (1, 2, 3), Sample(text, (7, 8), (-0.5, -0.5), "stop"), parse(text), sampling.temperature, 0)


class Proposer:
    """Tags its first question; the others lack the tag (format failures, never solved). In the arithmetic family
    each question comes with the expression that solves it."""

    def __init__(self, family: str = "math", tag_all: bool = False) -> None:
        self.family, self.tag_all = task_family(family), tag_all

    def propose(self, references, sampling):
        expression = "<expression>{} + {}</expression>" if self.family.name == "arithmetic" else ""
        return done([turn(Role.PROPOSER, (f"<question>What is {10 + i} + {i}?</question>" if i == 0 or self.tag_all else
                                          f"What is {10 + i} + {i}?") + expression.format(10 + i, i),
                          self.family.parse_proposal, sampling) for i, _ in enumerate(references)])


class Solver:
    """Answers 'What is a + b?' right with its first answer (unless `all_wrong`) and wrong with the others."""

    def __init__(self, all_wrong: bool = False) -> None:
        self.asked: list[list[str]] = []
        self.all_wrong = all_wrong

    def solve(self, questions, sampling):
        self.asked.append(list(questions))
        rows = []
        for question in questions:
            a, b = map(int, SUM.search(question).groups())
            rows.append([turn(Role.SOLVER, f"<answer>{a + b + (k > 0 or self.all_wrong)}</answer>", parse_answer,
                              sampling)
                         for k in range(sampling.n)])
        return done(rows)


class Judge:
    def __init__(self) -> None:
        self.judged_answers_of: list[str] = []  # the question of each judge_answers call

    def judge_questions(self, rubric, questions, sampling):
        return done([turn(Role.JUDGE, "<score>8</score>", parse_score, sampling) for _ in questions])

    def judge_answers(self, rubric, items, sampling):
        self.judged_answers_of.append(items[0].question)
        return done([turn(Role.JUDGE, f"<score>{3 + index}</score>", parse_score, sampling)
                     for index, _ in enumerate(items)])


class Grader:
    def submit(self, pairs):
        return done([Grade(correct=answer == reference, timed_out=False) for answer, reference in pairs])


class Learner:
    def __init__(self) -> None:
        self.batches = []

    def train(self, batch):
        self.batches.append(batch)
        return {"learner/loss": 0.25, "learner/tokens": float(sum(len(s.response_token_ids) for s in batch.samples))}

    def drift_from_base(self, samples):
        return 0.125 * len(samples)

    def export(self, version, mode, directory, probe=None):
        path = Path(directory) / f"{mode.value}-v{version}"
        path.mkdir()
        return WeightUpdate(version, mode, str(path), probe.advanced((-1.0 - version, -2.0)))


class Engines:
    def __init__(self) -> None:
        self.updates: list[WeightUpdate] = []

    def apply_update(self, update):
        self.updates.append(update)
        return {"sync/version": float(update.version), "sync/probe_gap": 0.0}

    def metrics(self):
        return {"rollout/tokens_per_second": 100.0}


def setup(tmp_path, *overrides: str, solver: Solver | None = None, proposer: Proposer | None = None):
    config = load_config(ROOT / "configs/tiny-cpu.yaml",
                         ["proposer.batch_size=2", "proposer.rewrite_ratio=0.5", "solver.batch_size=3",
                          "solver.num_answers=2", *overrides])
    questions = QuestionPool(capacity=50, duplicate_threshold=0.8, solved_threshold=0.9, solved_min_attempts=2,
                             replay_ratio=0.3, seed=0)
    for index in range(8):
        questions.add(PoolQuestion(id=f"seed-{index}", text=f"What is {index} + {index * 3}?", answer=str(index * 4),
                                   source=QuestionSource.SEED, added_iteration=0))
    state = RunState(iteration=1, weight_version=0, questions=questions,
                     rubric=load_rubric("strict", ROOT / "configs/rubrics"))
    solver, learner, engines = solver or Solver(), Learner(), Engines()
    components = Components(proposer=proposer or Proposer(), solver=solver, judge=Judge(), learner=learner,
                            grader=Grader(), engine_pools=[engines], sync_mode=SyncMode.MERGED, export_dir=tmp_path,
                            probe=SyncProbe((1, 2, 3), (-1.0, -2.0), noise=0.01))
    return config, components, state


def test_one_iteration_runs_every_stage_in_order(tmp_path):
    config, components, state = setup(tmp_path)
    phases = []
    result = run_iteration(config, components, state, progress=phases.append)
    solver, learner, engines = components.solver, components.learner, components.engine_pools[0]
    # wave 1 answers 3 pool questions, wave 2 the one proposal that parsed
    assert [len(asked) for asked in solver.asked] == [3, 1]
    assert solver.asked[1] == ["What is 10 + 0?"]
    assert [line.split(":")[0].strip() for line in phases if line.endswith(" s")] == [
        "proposing, and answering pool questions", "judging, and answering the new questions",
        "waiting for answer grading", "scoring", "training", "syncing weights to the engines"]
    # one batch with every role: 4 questions x 2 answers with distinct rewards, 2 proposals, the verdicts
    assert len(learner.batches) == 1
    assert {sample.role for sample in learner.batches[0].samples} == {"proposer", "solver", "judge"}
    metrics = result.metrics
    assert metrics["solver/samples"] == 8.0 and metrics["proposer/samples"] == 2.0
    assert metrics["solver/verifiable_accuracy"] == 0.5  # first of two answers right on the 3 pool questions
    assert metrics["solver/all_equal_group_share"] == 0.0
    assert metrics["pool/accepted"] == 1.0 and len(state.questions) == 9  # judged 8 >= threshold 6
    assert metrics["pool/replay_share"] == 0.0  # iteration 1: the seeds (added at 0) are still recent
    assert "learner/drift_kl" not in metrics  # no drift exchanges given
    # the generation phases' time split by generated tokens (2 per stand-in sample), training's by trained tokens
    generation = {role: metrics[f"cost/generation_share_{role}"] for role in ("proposer", "solver", "judge")}
    seconds = metrics["time/wave1_propose_solve"] + metrics["time/wave2_judge_solve"]
    assert sum(generation.values()) == pytest.approx(seconds / metrics["time/iteration"])
    assert generation["solver"] == pytest.approx(4 * generation["proposer"])  # 8 answers against 2 proposals
    assert sum(metrics[f"cost/training_share_{role}"] for role in ("proposer", "solver", "judge")) == \
        pytest.approx(metrics["time/train"] / metrics["time/iteration"])
    # synced once: version 1 served, the probe advanced from the previous version's logprobs
    assert [update.version for update in engines.updates] == [1] and state.weight_version == 1
    assert components.probe.previous == (-1.0, -2.0) and components.probe.expected == (-2.0, -2.0)
    assert metrics["sync/probe_separation"] == pytest.approx(1.0 / 0.01)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["merged-v1"]


def test_dynamic_sampling_refills_from_questions_not_yet_drawn(tmp_path):
    config, components, state = setup(tmp_path, "filter_groups.enabled=true", "filter_groups.max_rounds=2",
                                      solver=Solver(all_wrong=True))
    # Every answer is wrong: the 3 pool groups are all-equal on their grades, while the proposed question (no
    # reference answer) keeps signal through its judge scores 3 and 4. The rollout solved 4 questions, 1 with
    # signal: a first round asks for 3 more, a second for the 2 pool questions still undrawn.
    result = run_iteration(config, components, state)
    asked = components.solver.asked
    assert [len(questions) for questions in asked] == [3, 1, 3, 2]
    assert len(set(asked[0]) | set(asked[2]) | set(asked[3])) == 8  # never a question twice in one iteration
    metrics = result.metrics
    assert metrics["filter/refill_rounds"] == 2.0 and metrics["filter/refill_questions"] == 5.0
    assert metrics["filter/solver_groups_with_signal"] == 1.0 and metrics["filter/solver_groups_target"] == 4.0
    assert metrics["solver/all_equal_group_share"] == pytest.approx(8 / 9)
    assert metrics["learner/dropped_all_equal_groups"] == 8.0
    assert sum(sample.role == "solver" for sample in components.learner.batches[0].samples) == 2


def test_grounded_proposals_are_graded_against_their_computed_answer_and_keep_it_in_the_pool(tmp_path):
    config, components, state = setup(tmp_path, "task.family=arithmetic", proposer=Proposer("arithmetic"))
    result = run_iteration(config, components, state)
    # the proposal 'What is 10 + 0?' with expression '10 + 0' has reference 10: the solver's first answer (10) is
    # right, the second (11) wrong, so 4 questions x 2 answers are graded, half of them right
    assert result.turns.solve_items[-1].reference_answer == "10"
    assert result.turns.grades[-1] == (True, False)
    assert result.metrics["solver/verifiable_accuracy"] == 0.5
    assert result.metrics["judge/accuracy_vs_truth"] is not None
    accepted = [question for question in state.questions.questions() if question.id == "it1-q0"]
    assert [(question.text, question.answer, question.checkable) for question in accepted] == [
        ("What is 10 + 0?", "10", "10 + 0")]
    # the accepted question: 1 operation, largest number 10, 1 of 2 answers right
    assert result.metrics["curriculum/accepted_operations_mean"] == 1.0
    assert result.metrics["curriculum/accepted_largest_number_mean"] == 10.0
    assert result.metrics["curriculum/accepted_solve_rate_mean"] == 0.5


def test_a_question_proposed_again_is_seen_and_the_strict_gate_keeps_it_out(tmp_path):
    # The stand-in proposer writes 'What is 10 + 0?' (expression 10 + 0): judged 8, 1 of 2 answers right (p = 1/2,
    # inside the band). Alone it is accepted; once the run has seen it (an earlier iteration's proposal), refused.
    for gate, seen_before in (("strict", False), ("strict", True), ("standard", True)):
        (tmp_path / f"{gate}-{seen_before}").mkdir()
        config, components, state = setup(tmp_path / f"{gate}-{seen_before}", f"pool.gate={gate}",
                                          "task.family=arithmetic", proposer=Proposer("arithmetic"))
        if seen_before:
            state.questions.remember("What is 10 + 0?")
        metrics = run_iteration(config, components, state).metrics
        assert metrics["pool/seen_before"] == float(seen_before)
        refused = gate == "strict" and seen_before
        assert metrics["pool/rejected_seen"] == float(refused) and metrics["pool/accepted"] == float(not refused)


def test_diversity_is_measured_and_a_fall_is_said_in_one_line(tmp_path):
    config, components, state = setup(tmp_path, "pool.diversity_alert=0.9", proposer=Proposer(tag_all=True))
    state.diversity_start = 1.0
    lines, alerts = [], []
    metrics = run_iteration(config, components, state, progress=lines.append, alert=alerts.append).metrics
    # 'What is 10 + 0?' and 'What is 11 + 1?': bigrams what-is twice, is-10, 10-0, is-11, 11-1: 5 of 6 distinct
    assert metrics["proposer/distinct_2"] == pytest.approx(5 / 6)
    assert {"pool/distinct_2", "pool/pairwise_similarity", "pool/near_duplicate_share"} <= metrics.keys()
    assert alerts == [
        "  diversity alert: the proposals' distinct-bigram share is 0.83, below 0.9 of its first value 1.00"]
    assert not any("alert" in line for line in lines)  # alerts go to `alert` alone: a compact console shows them


def test_a_proposal_that_does_not_parse_counts_in_diversity_by_its_raw_text(tmp_path):
    config, components, state = setup(tmp_path)  # the second proposal lacks its tag
    metrics = run_iteration(config, components, state, progress=lambda line: None).metrics
    assert metrics["proposer/format_failure_rate"] == 0.5
    assert metrics["proposer/distinct_2"] == pytest.approx(5 / 6)  # the same two texts as above


@pytest.mark.parametrize("family", ["math", "arithmetic"])
def test_answers_with_a_grade_are_not_judged_when_no_reward_uses_the_verdict(tmp_path, family):
    # solver.verifiable=replace: a graded answer's reward is its grade; the judge is not trained, so its verdicts
    # on graded answers would change nothing. Only the math family's proposal (no reference answer) is judged.
    config, components, state = setup(tmp_path, f"task.family={family}", "solver.verifiable=replace",
                                      "run.train_roles=[proposer,solver]", proposer=Proposer(family))
    result = run_iteration(config, components, state)
    judged = components.judge.judged_answers_of
    assert judged == ([] if family == "arithmetic" else ["What is 10 + 0?"])
    assert sum(verdict is not None for row in result.turns.answer_verdicts for verdict in row) == 2 * len(judged)
    assert "judge/accuracy_vs_truth" not in result.metrics
    assert {sample.role for sample in components.learner.batches[0].samples} == {"proposer", "solver"}
    assert result.metrics["solver/verifiable_accuracy"] == 0.5


def test_with_a_judge_sample_cap_only_the_graded_answers_the_cap_trains_are_judged(tmp_path):
    # 1 proposal parses (1 quality verdict) and the judge scores the anchors: with a cap of those + 3, 3 of the
    # 8 graded answers (3 pool questions and the proposal, 2 answers each) are judged, and all 3 train
    anchors = load_config(ROOT / "configs/tiny-cpu.yaml").judge.anchor_questions
    config, components, state = setup(tmp_path, "task.family=arithmetic", "solver.verifiable=replace",
                                      f"judge.train_samples={1 + anchors + 3}", proposer=Proposer("arithmetic"))
    result = run_iteration(config, components, state)
    assert sum(verdict is not None for row in result.turns.answer_verdicts for verdict in row) == 3
    assert result.metrics["judge/verdicts_untrained_unrewarded"] == 0.0
    judge_samples = [sample for sample in components.learner.batches[0].samples if sample.role == "judge"]
    assert len(judge_samples) == 1 + anchors + 3 and "learner/capped_samples_judge" not in result.metrics


def test_graded_answers_are_judged_when_the_judge_trains_on_its_agreement_with_the_grade(tmp_path):
    config, components, state = setup(tmp_path, "task.family=arithmetic", "solver.verifiable=replace",
                                      proposer=Proposer("arithmetic"))
    result = run_iteration(config, components, state)
    assert len(components.judge.judged_answers_of) == 4  # the 3 pool questions and the proposal
    assert result.metrics["judge/accuracy_vs_truth"] == pytest.approx(0.5)


class SleepyEngines(Engines):
    """Engines that write every call into a log shared with the learner."""

    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    def sleep(self):
        self.log.append("engines sleep")

    def wake_up(self):
        self.log.append("engines wake up")

    def apply_update(self, update):
        self.log.append(f"engines load version {update.version}")
        return super().apply_update(update)


class LoggedLearner(Learner):
    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    def train(self, batch):
        self.log.append("learner trains")
        return super().train(batch)


def test_engines_sleep_only_while_the_learner_trains_where_they_share_its_gpu(tmp_path):
    for asleep, expected in ((True, ["engines sleep", "learner trains", "engines wake up", "engines load version 1"]),
                             (False, ["learner trains", "engines load version 1"])):
        config, components, state = setup(tmp_path / str(asleep))
        log: list[str] = []
        (tmp_path / str(asleep)).mkdir()
        components = dataclasses.replace(components, learner=LoggedLearner(log), engine_pools=[SleepyEngines(log)],
                                         sleep_while_training=asleep)
        run_iteration(config, components, state)
        assert log == expected
