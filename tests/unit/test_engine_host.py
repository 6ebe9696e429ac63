"""rollout.host without vLLM: generate calls that arrive while a batch runs are merged into bounded batches, and
`status` times the running batch from its start (the pool's hang deadline), not from when a call arrived."""

from __future__ import annotations

import queue
import threading
import time

from rollout.engine import EngineSpec
from rollout.host import EngineHost, EngineStatus, batch_length
from rollout.records import Completion, GenerationRequest, Sample, SamplingSpec


def test_a_batch_takes_the_oldest_calls_that_fit_and_at_least_one():
    assert batch_length([3, 3, 3], max_sequences=8) == 2  # 6 fit, 9 do not
    assert batch_length([4, 4, 1], max_sequences=8) == 2
    assert batch_length([8, 1], max_sequences=8) == 1
    assert batch_length([10, 1], max_sequences=8) == 1  # a call above the cap runs alone
    assert batch_length([1, 9, 1], max_sequences=8) == 1  # oldest first: nothing overtakes the 9
    assert batch_length([], max_sequences=8) == 0


class GatedEngine:
    """Stands for `Engine`: each batch reports its sequence count on `started`, then waits for one `release`."""

    def __init__(self, spec: EngineSpec) -> None:
        self.weight_version = 0
        self.started: queue.Queue[int] = queue.Queue()
        self.release = threading.Semaphore(0)

    def generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        self.started.put(sum(request.sampling.n for request in requests))
        assert self.release.acquire(timeout=10)
        return [Completion(prompt_token_ids=(int(request.messages[0]["content"]),),
                           samples=(Sample("", (), (), "stop"),) * request.sampling.n, weight_version=0)
                for request in requests]


def requests(first: int, count: int = 2) -> list[GenerationRequest]:
    return [GenerationRequest(({"role": "user", "content": str(first + index)},), SamplingSpec(n=1))
            for index in range(count)]


def wait_until(condition, seconds: float = 5.0) -> None:
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_calls_queued_behind_a_batch_run_in_batches_of_at_most_max_num_seqs_timed_from_their_start():
    host = EngineHost(EngineSpec(model_path="unused", max_num_seqs=4), engine_class=GatedEngine)
    engine = host.engine
    results: dict[int, list[Completion]] = {}

    def call(first: int) -> None:
        results[first] = host.generate(requests(first))

    threads = [threading.Thread(target=call, args=(first,)) for first in (0, 10, 20, 30)]
    threads[0].start()
    assert engine.started.get(timeout=5) == 2  # the first call's batch runs alone
    for queued, thread in enumerate(threads[1:], start=1):
        thread.start()
        wait_until(lambda: host.status().queued_requests == 2 * queued)
    time.sleep(0.3)
    status = host.status()
    assert status.busy and status.queued_requests == 6 and status.running_s >= 0.3
    submitted = time.monotonic()
    time.sleep(0.5)
    engine.release.release()
    assert engine.started.get(timeout=5) == 4  # calls 10 and 20 fit in 4 sequences; call 30 does not
    assert host.status().running_s < 0.5  # counted from this batch's start, not from the calls' arrival
    assert time.monotonic() - submitted >= 0.5
    engine.release.release()
    assert engine.started.get(timeout=5) == 2
    engine.release.release()
    for thread in threads:
        thread.join(timeout=5)
    assert {first: [c.prompt_token_ids[0] for c in completions] for first, completions in results.items()} == {
        0: [0, 1], 10: [10, 11], 20: [20, 21], 30: [30, 31]}
    assert engine.started.empty()
    assert host.status() == EngineStatus(weight_version=0, busy=False, queued_requests=0, running_s=0.0)
    assert host.resident_gb() > 0.01  # this process, with no vLLM child in this test
