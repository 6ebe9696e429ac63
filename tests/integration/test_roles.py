"""Role players as Ray actors over a real engine pool: they parse responses, and a role actor killed mid-call
is restarted by Ray with its work redone (the driver's actor options)."""

from __future__ import annotations

import threading
import time

import pytest
import ray

from agents.players import AnswerToJudge, Judge, Proposer, Solver
from agents.roles import Role
from learner.weights import SyncMode
from rewards.rubric import load_rubric
from rollout.config import RolloutConfig
from rollout.config import engine_spec_from_config
from rollout.engine_pool import RemoteEnginePool
from rollout.records import SamplingSpec
from selfplay.wiring import PROJECT_ROOT, ROLE_ACTOR_OPTIONS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engine_pool(tiny_model_dir):
    ray.init(num_cpus=3, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": str(PROJECT_ROOT)}})
    rollout = RolloutConfig(kv_cache_gb=0.25)
    spec = engine_spec_from_config(str(tiny_model_dir), "bfloat16", 512, rollout, SyncMode.MERGED, 16, 0)
    pool = RemoteEnginePool.launch(spec, rollout)
    yield pool
    pool.shutdown()
    ray.shutdown()


def test_players_return_parsed_turns(engine_pool):
    rubric = load_rubric("strict", PROJECT_ROOT / "configs/rubrics")
    sampling = SamplingSpec(n=2, max_tokens=8, seed=3)
    proposer = ray.remote(**ROLE_ACTOR_OPTIONS)(Proposer).remote(engine_pool)
    solver = ray.remote(**ROLE_ACTOR_OPTIONS)(Solver).remote(engine_pool)
    judge = ray.remote(**ROLE_ACTOR_OPTIONS)(Judge).remote(engine_pool)
    proposals = ray.get(proposer.propose.remote(["What is 2 + 2?", None], SamplingSpec(max_tokens=8)))
    attempts = ray.get(solver.solve.remote(["What is 2 + 2?"], sampling))
    verdicts = ray.get(judge.judge_answers.remote(rubric, [AnswerToJudge("What is 2 + 2?", "4", "4")],
                                                  SamplingSpec(max_tokens=8)))
    assert [turn.role for turn in proposals] == [Role.PROPOSER, Role.PROPOSER]
    assert len(attempts) == 1 and len(attempts[0]) == 2 and attempts[0][0].role is Role.SOLVER
    assert verdicts[0].role is Role.JUDGE
    for turn in proposals + attempts[0] + verdicts:
        # A random tiny model writes no tags: every parse is a counted failure, never a neutral value.
        assert turn.parsed.value is None and turn.parsed.failure is not None
        assert len(turn.sample.token_ids) == len(turn.sample.logprobs) > 0
    assert ray.get(judge.judge_questions.remote(rubric, [], sampling)) == []


def test_killed_role_actor_is_restarted_and_its_work_redone(engine_pool):
    solver = ray.remote(**ROLE_ACTOR_OPTIONS)(Solver).remote(engine_pool)
    ray.get(solver.__ray_ready__.remote())
    long_call = solver.solve.remote([f"question {i}" for i in range(8)],
                                    SamplingSpec(n=2, max_tokens=96, ignore_eos=True, seed=1))
    killer = threading.Timer(2.0, lambda: ray.kill(solver, no_restart=False))
    killer.start()
    started = time.monotonic()
    attempts = ray.get(long_call, timeout=600)
    killer.join()
    assert len(attempts) == 8 and all(len(group) == 2 for group in attempts)
    assert all(len(turn.sample.token_ids) == 96 for group in attempts for turn in group)
    assert time.monotonic() - started > 2.0  # the kill landed while the call was running
