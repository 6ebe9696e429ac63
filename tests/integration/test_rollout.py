"""The engine pool with real Ray: spreading, ordering and restarts on stand-in engines (seconds), then real vLLM
engines on the tiny model: sampling parameters, concurrent callers, killing an engine mid-generation, and weight
sync in both modes against a real DeepSpeed learner (one learner; one pool at a time, since engine starts are the
slow part on CPU)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

ray = pytest.importorskip("ray")
torch = pytest.importorskip("torch")

from learner.memory import resident_gb  # noqa: E402
from learner.weights import SyncMode, SyncProbe, WeightUpdate  # noqa: E402
from rollout.config import RolloutConfig  # noqa: E402
from rollout.engine import EngineDied, EngineSpec, SyncError  # noqa: E402
from rollout.engine_pool import EnginePool, RemoteEnginePool  # noqa: E402
from rollout.host import EngineHost, EngineStatus  # noqa: E402
from rollout.probe import ProbeReading  # noqa: E402
from rollout.records import PROMPT_TOO_LONG, Completion, GenerationRequest, Sample, SamplingSpec  # noqa: E402
from rollout.shm_segments import mapped_segments  # noqa: E402

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TOLERANCE = 0.05  # the default rollout.sync_tolerance
SYNCED_GAP = 0.02  # measured gaps after a sync are ~0.001-0.002


@pytest.fixture(scope="module")
def ray_session():
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    ray.init(num_cpus=4, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield
    ray.shutdown()


def chat(text: str) -> tuple[dict[str, str], ...]:
    return ({"role": "user", "content": text},)


# -- stand-in engines: the pool's own logic, in seconds -----------------------------------------------------------
class FakeHost:
    """Answers with the request's number as its only prompt token. A host that finds the 'hang-once' file in
    its state directory (the spec's model_path) deletes it and hangs on its next generate call; one that finds
    'die-once' deletes it and raises EngineDied from the call, as a host whose vLLM core died does."""

    def __init__(self, spec: EngineSpec, cpu_share=None) -> None:
        self.state = Path(spec.model_path)
        self.version = 0
        self.identity = f"{os.getpid()}-{time.monotonic_ns()}"
        self.hung_since: float | None = None

    def ready(self) -> int:
        return self.version

    def status(self) -> EngineStatus:
        hung_since = self.hung_since
        return EngineStatus(self.version, hung_since is not None, 0,
                            0.0 if hung_since is None else time.monotonic() - hung_since)

    def resident_gb(self) -> float:
        return resident_gb()

    def generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        try:
            (self.state / "hang-once").unlink()
            self.hung_since = time.monotonic()
            time.sleep(3600)
        except FileNotFoundError:
            pass
        self._die_once()
        time.sleep(0.05)
        return [Completion(prompt_token_ids=(int(request.messages[0]["content"]),),
                           samples=tuple(Sample(self.identity, (1, 2), (-0.5, -0.5), "length")
                                         for _ in range(request.sampling.n)),
                           weight_version=self.version) for request in requests]

    def apply_update(self, update: WeightUpdate) -> dict[str, float]:
        self._die_once()
        self.version = update.version
        return {"load_seconds": 0.0, "version": float(update.version)}

    def read_probe(self, probe: SyncProbe, through: WeightUpdate | None = None) -> ProbeReading:
        self._die_once()
        return ProbeReading(gap=float(self.version), distance=0.0, position=math.nan, problem="")

    def _die_once(self) -> None:
        if (self.state / "die-once").exists():
            (self.state / "die-once").unlink()
            raise EngineDied("vLLM's engine core died")

    def close(self) -> None:
        (self.state / f"closed-{self.identity}").touch()


def fake_pool(state: Path, **rollout) -> EnginePool:
    config = RolloutConfig(cpus_per_engine=0.1, **{"num_engines": 2, "request_timeout_s": 5.0, **rollout})
    return EnginePool(EngineSpec(model_path=str(state), max_num_seqs=8), config, host_class=FakeHost)


def numbered(count: int, n: int = 1) -> list[GenerationRequest]:
    return [GenerationRequest(chat(str(index)), SamplingSpec(n=n)) for index in range(count)]


def test_fake_pool_orders_and_spreads_concurrent_calls(ray_session, tmp_path):
    with fake_pool(tmp_path) as pool:
        results: dict[int, list[Completion]] = {}

        def call(thread: int) -> None:
            results[thread] = pool.generate(numbered(7 + thread, n=2))

        threads = [threading.Thread(target=call, args=(thread,)) for thread in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for thread, completions in results.items():
            assert [completion.prompt_token_ids[0] for completion in completions] == list(range(7 + thread))
            assert all(len(completion.samples) == 2 for completion in completions)
        hosts = {sample.text for completions in results.values() for c in completions for sample in c.samples}
        assert len(hosts) == 2  # both engines served
        metrics = pool.metrics()
        assert metrics["rollout/requests"] == sum(7 + thread for thread in range(4))
        assert metrics["rollout/generated_tokens"] == 2 * 2 * metrics["rollout/requests"]
        assert metrics["rollout/engine_restarts"] == 0


def test_fake_pool_replaces_a_hung_engine_and_resyncs_it(ray_session, tmp_path):
    with fake_pool(tmp_path, num_engines=1, max_restarts=1) as pool:
        pool.apply_update(WeightUpdate(version=3, mode=SyncMode.MERGED, path="unused"))
        (tmp_path / "hang-once").touch()
        started = time.monotonic()
        completions = pool.generate(numbered(5))
        assert time.monotonic() - started >= 5.0  # waited out request_timeout_s
        assert [completion.prompt_token_ids[0] for completion in completions] == list(range(5))
        assert {completion.weight_version for completion in completions} == {3}  # re-synced before serving
        assert pool.metrics()["rollout/engine_restarts"] == 1
        with pytest.raises(SyncError, match="not newer"):
            pool.apply_update(WeightUpdate(version=3, mode=SyncMode.MERGED, path="unused"))
    assert len(list(tmp_path.glob("closed-*"))) == 2  # the hung engine when it was replaced, the new one at exit


def test_fake_pool_replaces_an_engine_whose_core_died(ray_session, tmp_path):
    with fake_pool(tmp_path, num_engines=1, max_restarts=3) as pool:
        (tmp_path / "die-once").touch()
        completions = pool.generate(numbered(4))
        assert [completion.prompt_token_ids[0] for completion in completions] == list(range(4))
        assert pool.metrics()["rollout/engine_restarts"] == 1
        # found dead by a sync: the replacement is synced instead; by a probe reading: the replacement is read
        (tmp_path / "die-once").touch()
        pool.apply_update(WeightUpdate(version=2, mode=SyncMode.MERGED, path="unused"))
        assert pool.metrics()["rollout/engine_restarts"] == 2
        (tmp_path / "die-once").touch()
        assert [reading.gap for reading in pool.read_probe(SyncProbe((1, 2), (0.0,)))] == [2.0]  # serves version 2
        assert pool.metrics()["rollout/engine_restarts"] == 3
        assert len(list(tmp_path.glob("closed-*"))) == 3
    with fake_pool(tmp_path, num_engines=1, max_restarts=0) as pool:
        (tmp_path / "die-once").touch()
        with pytest.raises(RuntimeError, match=r"rollout engine 0 died \(EngineDied: vLLM's engine core died\); "
                                               r"the restart limit \(rollout.max_restarts=0\) is used up"):
            pool.generate(numbered(3))


def test_fake_pool_gives_up_after_max_restarts_naming_the_engine(ray_session, tmp_path):
    with fake_pool(tmp_path, num_engines=1, max_restarts=0) as pool:
        (tmp_path / "hang-once").touch()
        with pytest.raises(RuntimeError, match=r"rollout engine 0 hung \(a vLLM call ran \d+ s, over request_"
                                               r"timeout_s=5 s\); the restart limit \(rollout.max_restarts=0\)"):
            pool.generate(numbered(3))


class SlowEngine:
    """Stands for `Engine` inside a real `EngineHost`: every batch takes BATCH_S."""

    BATCH_S = 4.0

    def __init__(self, spec: EngineSpec) -> None:
        self.weight_version = 0

    def generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        time.sleep(self.BATCH_S)
        return [Completion(prompt_token_ids=(int(request.messages[0]["content"]),),
                           samples=(Sample("", (1,), (-0.5,), "length"),) * request.sampling.n, weight_version=0)
                for request in requests]

    def shutdown(self) -> None:
        pass


class SlowHost(EngineHost):
    def __init__(self, spec: EngineSpec, cpu_share=None) -> None:
        super().__init__(spec, cpu_share, engine_class=SlowEngine)


def test_a_call_queued_behind_a_long_batch_is_not_taken_for_a_hang(ray_session, tmp_path):
    """One engine, 4 s batches, request_timeout_s=5 and no restart to spare: B, submitted 2 s into A's batch, runs
    from 4 s to 8 s, 6 s after it was submitted. Its deadline moves to 5 s after its own batch started (9 s), so the
    engine is not replaced."""
    config = RolloutConfig(cpus_per_engine=0.1, num_engines=1, request_timeout_s=5.0, max_restarts=0)
    with EnginePool(EngineSpec(model_path=str(tmp_path), max_num_seqs=8), config, host_class=SlowHost) as pool:
        results, seconds = {}, {}

        def call(name: str, first: int) -> None:
            started = time.monotonic()
            results[name] = [c.prompt_token_ids[0] for c in pool.generate(numbered(first + 2)[first:])]
            seconds[name] = time.monotonic() - started

        first = threading.Thread(target=call, args=("A", 0))
        first.start()
        time.sleep(2.0)
        call("B", 10)
        first.join()
        assert results == {"A": [0, 1], "B": [10, 11]}
        assert seconds["B"] > config.request_timeout_s  # waited longer than the timeout since it was submitted
        assert pool.metrics()["rollout/engine_restarts"] == 0


# -- real vLLM engines on the tiny model ----------------------------------------------------------------------------
def perturb(learner, seed: int, scale: float = 0.1) -> None:
    """Set the LoRA B matrices to seeded noise, so each seed is one clearly different set of weights."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in learner.model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)


class PoolSession:
    """One learner and one engine pool at a time; versions only increase across pools."""

    def __init__(self, learner, model_dir: Path, export_dir: Path, probe: list[int]) -> None:
        self.learner, self.model_dir, self.export_dir = learner, model_dir, export_dir
        self.probe = SyncProbe(tuple(probe), (), tolerance=TOLERANCE)  # advanced by every export
        self.pool: RemoteEnginePool | None = None
        self.mode: SyncMode | None = None
        self.version = 0

    def pool_for(self, mode: SyncMode) -> RemoteEnginePool:
        if self.mode is not mode:
            self.close()
            spec = EngineSpec(model_path=str(self.model_dir), max_model_len=1024, kv_cache_gb=0.25,
                              sync_mode=mode, max_lora_rank=16, seed=0)
            self.pool = RemoteEnginePool.launch(spec, RolloutConfig(max_restarts=4, request_timeout_s=600))
            self.mode = mode
        return self.pool

    def export(self, seed: int) -> WeightUpdate:
        perturb(self.learner, seed)
        self.version += 1
        update = self.learner.export(self.version, self.mode, str(self.export_dir), self.probe)
        self.probe = update.probe
        return update

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            self.pool, self.mode = None, None


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def rendered(tokenizer, messages) -> list[int]:
    ids = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


@pytest.fixture(scope="module")
def session(ray_session, tiny_model_dir, tokenizer, tmp_path_factory):
    from learner.config import LearnerConfig
    from learner.trainer import Learner, LearnerSetup

    # float32 like the driver on this CPU: a bf16 export would round away a real step at the default lr
    learner = Learner(LearnerConfig(),
                      LearnerSetup(model_path=str(tiny_model_dir), dtype="float32", max_model_len=1024))
    probe = rendered(tokenizer, chat("What is 2 + 3?")) + tokenizer.encode("The answer is 5.")
    session = PoolSession(learner, tiny_model_dir, tmp_path_factory.mktemp("exports"), probe)
    yield session
    session.close()


def test_generation_respects_order_and_sampling(session, tokenizer):
    pool = session.pool_for(SyncMode.MERGED)
    specs = [SamplingSpec(n=1, max_tokens=5, ignore_eos=True, seed=7),
             SamplingSpec(n=3, max_tokens=17, ignore_eos=True),
             SamplingSpec(n=1, max_tokens=16, ignore_eos=True, seed=7),
             SamplingSpec(n=1, max_tokens=16, ignore_eos=True, seed=7),
             SamplingSpec(n=1, max_tokens=16, ignore_eos=True, seed=8),
             SamplingSpec(n=2, max_tokens=9, ignore_eos=True, temperature=0.7)]
    texts = ["Question one.", "Question two: why? why?", "Same prompt.", "Same prompt.", "Same prompt.",
             "Question six: " + "why? " * 20]
    requests = [GenerationRequest(chat(text), spec) for text, spec in zip(texts, specs)]
    completions = pool.generate(requests)
    assert len(completions) == len(requests)
    for request, completion in zip(requests, completions):
        assert list(completion.prompt_token_ids) == rendered(tokenizer, request.messages)
        assert len(completion.samples) == request.sampling.n
        assert completion.weight_version == 0
        for sample in completion.samples:
            assert len(sample.token_ids) == len(sample.logprobs) == request.sampling.max_tokens
            assert sample.finish_reason == "length"
            assert all(logprob <= 0.0 for logprob in sample.logprobs)
    assert completions[2].samples[0].token_ids == completions[3].samples[0].token_ids  # same seed, same tokens
    assert completions[2].samples[0].token_ids != completions[4].samples[0].token_ids  # another seed
    assert len({sample.token_ids for sample in completions[1].samples}) == 3  # n samples, not n copies


def test_a_prompt_that_fills_the_context_fails_alone_not_the_batch(session, tokenizer):
    pool = session.pool_for(SyncMode.MERGED)
    spec = SamplingSpec(n=2, max_tokens=8, ignore_eos=True, seed=3)
    requests = [GenerationRequest(chat("Short question."), spec), GenerationRequest(chat("why? " * 3000), spec)]
    short, huge = pool.generate(requests)
    assert [len(sample.token_ids) for sample in short.samples] == [8, 8]
    assert [(sample.text, sample.token_ids, sample.finish_reason) for sample in huge.samples] == [
        ("", (), PROMPT_TOO_LONG)] * 2
    assert list(huge.prompt_token_ids) == rendered(tokenizer, requests[1].messages)


def test_seeded_prompts_beyond_one_steps_token_budget_are_generated(session):
    # 48 prompts of about 280 tokens, 4 seeded samples each: more prompt tokens than one scheduler step takes.
    # With chunked prefill vLLM splits a prompt across steps and rewinds its seeded sampler, which a CPU torch
    # Generator cannot do ("CPU Generator does not use offset": the engine died in a 16 x 8 solver batch).
    pool = session.pool_for(SyncMode.MERGED)
    spec = SamplingSpec(n=4, max_tokens=3, ignore_eos=True, temperature=1.0, seed=11)
    requests = [GenerationRequest(chat(f"Question {index}: " + "how many apples are left? " * 40), spec)
                for index in range(48)]
    completions = pool.generate(requests)
    assert sum(len(c.prompt_token_ids) * len(c.samples) for c in completions) > 4 * 8192
    assert [[len(sample.token_ids) for sample in c.samples] for c in completions] == [[3] * 4] * 48


@ray.remote(num_cpus=0)
def role_call(pool: RemoteEnginePool, count: int) -> list[tuple[int, ...]]:
    """What a role actor does: call the shared pool through its handle."""
    completions = pool.generate([GenerationRequest(chat(f"role {index}"), SamplingSpec(max_tokens=8, ignore_eos=True))
                                 for index in range(count)])
    return [completion.prompt_token_ids for completion in completions]


def test_concurrent_callers_share_the_pool(session, tokenizer):
    pool = session.pool_for(SyncMode.MERGED)
    pool.metrics()  # start a fresh window
    remote = [role_call.remote(pool, 6), role_call.remote(pool, 9)]
    requests = [GenerationRequest(chat(f"driver {index}"), SamplingSpec(max_tokens=12, ignore_eos=True))
                for index in range(10)]
    completions = pool.generate(requests)
    role_prompts = ray.get(remote)
    assert [list(c.prompt_token_ids) for c in completions] == [rendered(tokenizer, r.messages) for r in requests]
    for count, prompts in zip((6, 9), role_prompts):
        assert [list(ids) for ids in prompts] == [rendered(tokenizer, chat(f"role {i}")) for i in range(count)]
    metrics = pool.metrics()
    assert metrics["rollout/generated_tokens"] == 6 * 8 + 9 * 8 + 10 * 12
    assert metrics["rollout/tokens_per_second"] > 0
    assert 0.2 < metrics["memory/engine_rss_gb"] < 20  # the host and its vLLM engine core, with the tiny model


def test_killed_engine_is_restarted_resynced_and_retried(session):
    pool = session.pool_for(SyncMode.MERGED)
    update = session.export(seed=100)
    pool.apply_update(update)
    restarts_before = pool.metrics()["rollout/engine_restarts"]
    victim = pool.engine_handles()[0]

    def kill_when_busy() -> None:
        deadline = time.monotonic() + 300
        while not pool.status()[0].busy and time.monotonic() < deadline:
            time.sleep(0.05)
        ray.kill(victim)

    killer = threading.Thread(target=kill_when_busy)
    killer.start()
    requests = [GenerationRequest(chat(f"long story {index}"), SamplingSpec(max_tokens=128, ignore_eos=True))
                for index in range(32)]
    completions = pool.generate(requests)
    killer.join()
    assert len(completions) == 32
    assert all(len(completion.samples[0].token_ids) == 128 for completion in completions)
    assert pool.metrics()["rollout/engine_restarts"] == restarts_before + 1
    assert pool.engine_handles()[0]._actor_id != victim._actor_id
    assert {completion.weight_version for completion in completions} == {update.version}
    assert pool.status()[0].weight_version == update.version
    assert served_gap(pool, update) < SYNCED_GAP  # the new engine serves the learner's weights, not the base model


def test_an_engine_whose_vllm_core_was_killed_is_replaced(session):
    # what the OOM killer does to an idle engine while the learner trains: vLLM's engine-core processes die, the
    # Ray actor hosting them lives, and the next generate call finds the core dead
    pool = session.pool_for(SyncMode.MERGED)
    restarts_before = pool.metrics()["rollout/engine_restarts"]
    victim = pool.engine_handles()[0]
    host = psutil.Process(ray.get(victim.__ray_call__.remote(lambda host: os.getpid())))
    children = host.children(recursive=True)
    segments = mapped_segments(child.pid for child in children)
    assert segments  # vLLM's engine processes map shared memory
    for child in children:
        child.kill()
    psutil.wait_procs(children, timeout=30)
    time.sleep(2)  # vLLM's monitor thread marks the engine dead
    started = time.monotonic()
    completions = pool.generate([GenerationRequest(chat(f"after the kill {index}"),
                                                   SamplingSpec(max_tokens=4, ignore_eos=True)) for index in range(3)])
    assert [len(completion.samples[0].token_ids) for completion in completions] == [4, 4, 4]
    assert pool.metrics()["rollout/engine_restarts"] == restarts_before + 1
    assert pool.engine_handles()[0]._actor_id != victim._actor_id
    assert time.monotonic() - started < 300  # found dead at once (a restart takes about a minute), not hung (600 s)
    assert [segment for segment in segments if segment.exists()] == []  # removed when the host was closed


def test_a_call_running_when_the_vllm_core_dies_is_served_by_a_new_engine(session):
    # the core dies in the middle of a batch: the waiting call gets vLLM's engine-dead error from the host's
    # watchdog, and the pool retries it on a replacement instead of waiting out request_timeout_s (600 s here)
    pool = session.pool_for(SyncMode.MERGED)
    restarts_before = pool.metrics()["rollout/engine_restarts"]
    victim = pool.engine_handles()[0]
    host = psutil.Process(ray.get(victim.__ray_call__.remote(lambda host: os.getpid())))
    # long enough that the call still runs when the core is killed, also on a fast CPU (4 x 200 tokens took under
    # a second on an AVX-512 one)
    requests = [GenerationRequest(chat(f"a long answer {index}"), SamplingSpec(max_tokens=960, ignore_eos=True))
                for index in range(16)]
    result: dict = {}
    caller = threading.Thread(target=lambda: result.update(completions=pool.generate(requests)))
    started = time.monotonic()
    caller.start()
    while not ray.get(victim.status.remote()).busy:
        assert time.monotonic() - started < 120 and caller.is_alive()
        time.sleep(0.1)
    children = host.children(recursive=True)
    for child in children:
        child.kill()
    assert caller.is_alive(), "the call ended before the core was killed: nothing was tested"
    caller.join(timeout=300)
    assert not caller.is_alive(), "the call waited on a dead core"
    assert [len(completion.samples[0].token_ids) for completion in result["completions"]] == [960] * 16
    assert pool.metrics()["rollout/engine_restarts"] == restarts_before + 1
    assert pool.engine_handles()[0]._actor_id != victim._actor_id


def served_gap(pool, update: WeightUpdate) -> float:
    """Largest probe gap over the pool's engines; fails the test if any engine does not serve `update`."""
    readings = pool.read_probe(update.probe)
    assert [reading.problem for reading in readings] == [""] * len(readings)
    return max(reading.gap for reading in readings)


def learner_response_logprobs(learner, completion: Completion, sample: Sample) -> list[float]:
    logprobs = learner.sequence_logprobs(list(completion.prompt_token_ids) + list(sample.token_ids))
    return logprobs[-len(sample.token_ids):]


def mean_gap(first, second) -> float:
    return sum(abs(a - b) for a, b in zip(first, second)) / len(first)


@pytest.mark.parametrize("mode", [SyncMode.MERGED, SyncMode.ADAPTER], ids=lambda mode: mode.value)
def test_weight_sync_round_trip(session, mode):
    pool = session.pool_for(mode)
    first = session.export(seed=1)
    # a skipped sync is caught: the engines still serve older weights
    assert all(reading.problem for reading in pool.read_probe(first.probe))

    metrics = pool.apply_update(first)
    assert metrics["sync/version"] == first.version
    assert metrics["sync/probe_gap"] < SYNCED_GAP
    assert metrics["sync/seconds"] > 0

    second = session.export(seed=2)  # exported, not applied
    assert mean_gap(first.probe.expected, second.probe.expected) > 4 * TOLERANCE  # the oracle can tell them apart
    # serving the previous version is caught
    assert all("still serves the previous version" in reading.problem for reading in pool.read_probe(second.probe))
    with pytest.raises(SyncError, match="not newer"):
        pool.apply_update(first)
    with pytest.raises(SyncError, match="not newer"):
        pool.apply_update(dataclasses.replace(second, version=first.version - 1))
    other = SyncMode.ADAPTER if mode is SyncMode.MERGED else SyncMode.MERGED
    with pytest.raises(SyncError, match="sync got a"):
        pool.apply_update(dataclasses.replace(second, mode=other, version=second.version + 5))

    assert pool.apply_update(second)["sync/probe_gap"] < SYNCED_GAP
    if mode is SyncMode.ADAPTER:  # an adapter vLLM refuses leaves the served one in place
        absent = dataclasses.replace(second, version=second.version + 1, path=str(session.export_dir / "absent"))
        with pytest.raises(SyncError, match=f"refused adapter version {absent.version}"):
            pool.apply_update(absent)
        assert not any(reading.problem for reading in pool.read_probe(second.probe))
        # a calibration reads through the adapter it is given, loaded for that reading alone: through the previous
        # version's adapter the probe sits at the previous version, through this one's it matches, and the engines
        # go on serving this version
        assert all("previous version" in reading.problem for reading in pool.read_probe(second.probe, first))
        assert all(reading.gap < SYNCED_GAP and not reading.problem
                   for reading in pool.read_probe(second.probe, dataclasses.replace(second, version=0)))
        assert not any(reading.problem for reading in pool.read_probe(second.probe))
    completions = pool.generate([GenerationRequest(chat(f"Tell me about {topic}."), SamplingSpec(n=2, max_tokens=24))
                                 for topic in ("cats", "rivers", "prime numbers")])
    engine, learner, base = [], [], []
    for completion in completions:
        assert completion.weight_version == second.version
        for sample in completion.samples:
            engine += sample.logprobs
            learner += learner_response_logprobs(session.learner, completion, sample)
            with session.learner.model.disable_adapter():
                base += learner_response_logprobs(session.learner, completion, sample)
    assert mean_gap(engine, learner) < TOLERANCE  # generation uses the synced weights
    assert mean_gap(engine, base) > 2 * TOLERANCE  # ... which differ clearly from the base model's

    if mode is SyncMode.MERGED:  # an adapter the worker cannot merge is refused, the served weights stay
        absent = dataclasses.replace(second, version=second.version + 1, path=str(session.export_dir / "absent"))
        with pytest.raises(SyncError, match=f"merging weight version {absent.version} from .*absent failed"):
            pool.apply_update(absent)
        assert not any(reading.problem for reading in pool.read_probe(second.probe))


# -- an engine left behind after one real training step -------------------------------------------------------------
class LaggingHost(EngineHost):
    """A real engine whose next `times` loads, while a 'lag' file names its index, silently load the weights at
    `path` (the previous version) instead of the update's: what a sync that did not take effect looks like."""

    def __init__(self, spec: EngineSpec, cpu_share=None) -> None:
        super().__init__(spec, cpu_share)
        self.index = cpu_share[0] if cpu_share else 0
        self.lag_file = Path(spec.model_path).parent / f"lag-{self.index}.json"

    def apply_update(self, update: WeightUpdate) -> dict[str, float]:
        if self.lag_file.exists():
            lag = json.loads(self.lag_file.read_text())
            if lag["times"] > 0:
                self.lag_file.write_text(json.dumps({**lag, "times": lag["times"] - 1}))
                update = dataclasses.replace(update, path=lag["path"])
        return super().apply_update(update)


def one_grpo_step(learner, pool, tokenizer) -> None:
    """One real optimizer step at the learner's own (default) learning rate on the pool's samples."""
    from learner.grpo import group_advantages
    from learner.records import TrainBatch, TrainSample
    from learner.trainer import plan_step

    requests = [GenerationRequest(chat(text), SamplingSpec(n=4, max_tokens=24, seed=index))
                for index, text in enumerate(("What is 7 * 8?", "Name a prime above 20.", "What is 15 - 9?"))]
    samples, rewards, groups = [], [], []
    for group, completion in enumerate(pool.generate(requests)):
        for rank, sample in enumerate(completion.samples):
            samples.append(TrainSample(completion.prompt_token_ids, sample.token_ids, sample.logprobs, 0.0))
            rewards.append(float(rank % 2))
            groups.append(group)
    advantages, _ = group_advantages(torch.tensor(rewards), torch.tensor(groups))
    batch = TrainBatch(tuple(dataclasses.replace(sample, advantage=float(advantage))
                             for sample, advantage in zip(samples, advantages)))
    plan, _ = plan_step(batch, learner.config.micro_batch_tokens, world_size=1)
    metrics = learner.train_step(plan[0], batch.response_tokens)
    assert metrics["learner/skipped_nonfinite"] == 0.0


def test_an_engine_left_on_the_previous_version_is_found_and_replaced(session, tokenizer, tiny_model_dir, tmp_path):
    """float32 engines as the driver runs them on this CPU; a fresh learner at its default lr (1e-5), since the
    session's was perturbed behind its optimizer's back (its master weights would undo that at the first step)."""
    from learner.config import LearnerConfig
    from learner.trainer import Learner, LearnerSetup

    session.close()
    learner = Learner(LearnerConfig(), LearnerSetup(model_path=str(tiny_model_dir), dtype="float32",
                                                    max_model_len=1024, seed=5))
    assert learner.config.lr == 1e-5
    model_dir = tmp_path / "model"
    model_dir.symlink_to(tiny_model_dir, target_is_directory=True)  # lag files go beside it, in tmp_path
    spec = EngineSpec(model_path=str(model_dir), dtype="float32", max_model_len=1024, kv_cache_gb=0.25,
                      sync_mode=SyncMode.MERGED, seed=0)
    pool = EnginePool(spec, RolloutConfig(num_engines=2, max_restarts=2, request_timeout_s=600),
                      host_class=LaggingHost)
    try:
        with learner.model.disable_adapter():  # the engines serve the base model: calibrate on it
            base = SyncProbe(session.probe.token_ids, tuple(learner.sequence_logprobs(list(session.probe.token_ids))),
                             tolerance=TOLERANCE)
        noise = max(reading.distance for reading in pool.read_probe(base))
        current = learner.export(1, SyncMode.MERGED, str(tmp_path),
                                 dataclasses.replace(base, noise=noise))
        pool.apply_update(current)  # both engines serve the learner's weights before the step

        one_grpo_step(learner, pool, tokenizer)
        update = learner.export(current.version + 1, SyncMode.MERGED, str(tmp_path), current.probe)
        # The step is far below what the gap tolerance could see, yet many noise norms wide:
        assert mean_gap(update.probe.expected, update.probe.previous) < TOLERANCE / 10
        assert update.probe.separation() > 10
        (tmp_path / "lag-1.json").write_text(json.dumps({"path": current.path, "times": 1}))
        metrics = pool.apply_update(update)  # engine 1 loads the previous weights, fails the check, is replaced
        assert pool.metrics()["rollout/engine_restarts"] == 1
        assert metrics["sync/probe_position"] == pytest.approx(1.0, abs=0.1)
        readings = pool.read_probe(update.probe)
        assert [reading.problem for reading in readings] == ["", ""]
        assert all(reading.position == pytest.approx(1.0, abs=0.1) for reading in readings)

        one_grpo_step(learner, pool, tokenizer)
        stuck = learner.export(update.version + 1, SyncMode.MERGED, str(tmp_path), update.probe)
        (tmp_path / "lag-1.json").write_text(json.dumps({"path": update.path, "times": 2}))  # the repair lags too
        with pytest.raises(RuntimeError, match=r"rollout engine 1 failed the weight check .*still serves the "
                                               r"previous version.*and its restart failed: ProbeMismatch"):
            pool.apply_update(stuck)
    finally:
        pool.shutdown()


def test_shutdown_removes_the_shared_memory_of_the_engines(session):
    """vLLM's engine processes leave their message queues in /dev/shm when they are killed (rollout.shm_segments);
    closing the pool removes them."""
    session.close()
    before = shm_segments()
    pool = session.pool_for(SyncMode.MERGED)
    pool.generate([GenerationRequest(chat("hello"), SamplingSpec(max_tokens=4, ignore_eos=True))])
    created = shm_segments() - before
    assert created, "the engine made no shared memory segment: the premise of this test changed"
    session.close()
    assert not shm_segments() & created, f"left in /dev/shm: {sorted(shm_segments() & created)}"


def shm_segments() -> set[str]:
    from rollout.shm_segments import PREFIXES, SHM_DIR

    return {entry.name for entry in SHM_DIR.iterdir() if entry.name.startswith(PREFIXES)}
