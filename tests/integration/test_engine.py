"""A real vLLM engine (CPU, the tiny model): seeded sampling, where a question asked several times in one call gets
different answers, every sample of them its own, and the same call again gets the same answers; and the worker
process's heap trim. Without per-sequence seeds (rollout.seeded_requests=off) the same call draws anew."""

from __future__ import annotations

from dataclasses import replace

import pytest

from agents.players import Solver
from rollout.engine import Engine, EngineSpec
from rollout.records import SamplingSpec

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    engine = Engine(EngineSpec(model_path=str(tiny_model_dir), kv_cache_gb=0.25, max_model_len=256))
    yield engine
    engine.shutdown()


def test_a_repeated_question_gets_different_answers_and_the_same_call_the_same(engine):
    spec = SamplingSpec(n=3, max_tokens=12, ignore_eos=True, seed=5)
    answers = Solver(engine).solve(["What is 2 + 3?"] * 3, spec)
    tokens = [turn.sample.token_ids for row in answers for turn in row]
    # seeds 5 + request + sample (players' numbering, then vLLM's for n > 1) gave these 9 samples 5 streams
    assert len(tokens) == 9 and len(set(tokens)) == 9, "two samples drew from one random stream"
    again = Solver(engine).solve(["What is 2 + 3?"] * 3, spec)
    assert [turn.sample.token_ids for row in again for turn in row] == tokens


def test_the_worker_process_trims_its_heap(engine):
    """The engine builds vLLM's worker with rollout.worker_extension's methods; glibc's malloc_trim answers 1 when it
    returned memory, 0 when there was none to return, so the answer says the call ran in the worker."""
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("malloc_trim is glibc's")
    assert engine.llm.collective_rpc("release_free_heap") in ([True], [False])
    Solver(engine).solve(["What is 2 + 3?"], SamplingSpec(n=2, max_tokens=8, seed=1))  # trims after generating


def test_an_engine_without_per_sequence_seeds_draws_each_call_anew(engine):
    spec = SamplingSpec(n=3, max_tokens=12, ignore_eos=True, seed=5)
    seeded = engine.spec
    engine.spec = replace(seeded, seeded_requests=False)  # what GPU engines do by default: one engine-wide stream
    try:
        first, second = ([turn.sample.token_ids for row in Solver(engine).solve(["What is 2 + 3?"], spec)
                          for turn in row] for _ in range(2))
    finally:
        engine.spec = seeded
    assert len(first) == len(second) == 3 and first != second
