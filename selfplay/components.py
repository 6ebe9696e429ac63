"""What one iteration works with, as Protocols: the three roles, the grader, the learner and the engines that
follow its weights. The driver fills them with Ray actors (selfplay.remote); a unit test fills them with plain
in-process objects. Role calls return futures, so the iteration can overlap them without knowing about Ray."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

from agents.players import AnswerToJudge, Turn
from learner.records import TrainBatch, TrainSample
from learner.weights import SyncMode, SyncProbe, WeightUpdate
from rewards.grading_pool import Grader
from rewards.rubric import Rubric
from rollout.records import SamplingSpec


class ProposerRole(Protocol):
    def propose(self, references: Sequence[str | None], sampling: SamplingSpec) -> Future[list[Turn]]: ...


class SolverRole(Protocol):
    def solve(self, questions: Sequence[str], sampling: SamplingSpec) -> Future[list[list[Turn]]]: ...


class JudgeRole(Protocol):
    def judge_questions(self, rubric: Rubric, questions: Sequence[str],
                        sampling: SamplingSpec) -> Future[list[Turn]]: ...

    def judge_answers(self, rubric: Rubric, items: Sequence[AnswerToJudge],
                      sampling: SamplingSpec) -> Future[list[Turn]]: ...


class PolicyLearner(Protocol):
    def train(self, batch: TrainBatch) -> dict[str, float]: ...

    def drift_from_base(self, samples: list[TrainSample]) -> float: ...

    def export(self, version: int, mode: SyncMode, directory: str,
               probe: SyncProbe | dict[str, SyncProbe] | None = None) -> WeightUpdate: ...


class FollowingEngines(Protocol):
    """Engines that serve the learner's latest weights (rollout.engine_pool.RemoteEnginePool)."""

    def apply_update(self, update: WeightUpdate) -> dict[str, float]: ...

    def metrics(self) -> dict[str, float]: ...

    def sleep(self) -> None: ...

    def wake_up(self) -> None: ...


@dataclass
class Components:
    proposer: ProposerRole
    solver: SolverRole
    judge: JudgeRole
    learner: PolicyLearner
    grader: Grader  # bounded grading off the driver's thread (rewards.grading_pool.GradingPool)
    engine_pools: list[FollowingEngines]  # the first one also answers the held-out evaluation
    sync_mode: SyncMode
    export_dir: Path
    # the weights the engines serve, as the learner computes them (selfplay.wiring): one probe, or one per role's
    # adapter (learner.adapters per_role)
    probe: SyncProbe | dict[str, SyncProbe]
    drift_samples: tuple[TrainSample, ...] = ()  # general exchanges the adapter's drift from the base is measured on
    sleep_while_training: bool = False  # the engines sleep while the learner trains (rollout.sleep_while_training)
