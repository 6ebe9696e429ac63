"""One engine actor's body: a threaded Ray actor around `rollout.engine.Engine`.

vLLM's `LLM` is not thread-safe, so generate calls run one batch at a time; calls that arrive while a batch runs
are merged into the next batch (one large batch decodes faster than several small ones) up to the engine's
`max_num_seqs` sequences, and `status` answers meanwhile, with how long the running batch has run: the pool's hang
deadline counts from there, not from when a call was submitted. Engines sharing one CPU node get disjoint cores.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import ray

from learner.memory import resident_gb
from learner.weights import SyncProbe, WeightUpdate, free_bytes, process_scratch_dir
from rollout.engine import Engine, EngineSpec
from rollout.probe import ProbeReading
from rollout.received import ReceivedCopies
from rollout.records import Completion, GenerationRequest

HOST_CONCURRENCY = 16  # threads per engine actor: merged generate calls, sync, status pings
RECEIVED_PREFIX = "selfplay-received-"  # weights shipped from another node, in this node's scratch directory
CLOSE_WAIT_S = 2.0  # how long `close` lets a running batch finish


@dataclass(frozen=True)
class EngineStatus:
    """What an engine host reports while it may be busy."""

    weight_version: int
    busy: bool  # a vLLM call (a batch, a weight load, a probe) is running
    queued_requests: int  # requests waiting for the next batch
    running_s: float = 0.0  # how long that call has run (0 when idle)


class _Call:
    """One generate call waiting in a host's queue; filled in by whichever thread runs its batch."""

    def __init__(self, requests: list[GenerationRequest]) -> None:
        self.requests = requests
        self.completions: list[Completion] = []
        self.error: BaseException | None = None
        self.finished = False


def _readable_here(update: WeightUpdate) -> bool:
    """Whether this node reads `update`'s files where the learner wrote them (no copy shipped, or written here)."""
    return update.files is None or update.node_id in ("", ray.get_runtime_context().get_node_id())


def bind_cpu_share(index: int, count: int) -> None:
    """Give this engine the index-th of `count` equal slices of the cores (unless the user set a binding)."""
    if "VLLM_CPU_OMP_THREADS_BIND" in os.environ:
        return
    cpus = sorted(os.sched_getaffinity(0))
    share = len(cpus) // count
    if share >= 1:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(str(cpu) for cpu in cpus[index * share:(index + 1) * share])


def batch_length(sequences: list[int], max_sequences: int) -> int:
    """How many of the queued calls (their sampled sequences, oldest first) the next batch takes: those that fit in
    `max_sequences`, at least one. vLLM runs no more than max_num_seqs at once, and a batch merged without bound
    would run ever longer as the queue grows, until the pool took a healthy engine for a hung one."""
    taken, total = 0, 0
    for count in sequences:
        if taken and total + count > max_sequences:
            break
        taken, total = taken + 1, total + count
    return taken


class EngineHost:
    def __init__(self, spec: EngineSpec, cpu_share: tuple[int, int] | None = None,
                 engine_class: type = Engine) -> None:
        """`engine_class`: `Engine`, or a stand-in with its methods in tests."""
        if cpu_share is not None:
            bind_cpu_share(*cpu_share)
        self.engine = engine_class(spec)
        self._max_sequences = spec.max_num_seqs
        self._engine_lock = threading.Lock()  # one vLLM call at a time
        self._queue_lock = threading.Lock()
        self._queue: list[_Call] = []
        self._call_started: float | None = None  # time.monotonic() when the running vLLM call began
        self._received = ReceivedCopies(lambda: process_scratch_dir(RECEIVED_PREFIX), free_bytes,
                                        Path(tempfile.gettempdir()))

    def ready(self) -> int:
        return self.engine.weight_version

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def status(self) -> EngineStatus:
        with self._queue_lock:
            queued = sum(len(call.requests) for call in self._queue)
        started = self._call_started
        running = 0.0 if started is None else time.monotonic() - started
        return EngineStatus(self.engine.weight_version, started is not None, queued, running)

    def resident_gb(self) -> float:
        """Resident memory of this host and its vLLM processes, GiB (once per iteration, off the health path)."""
        return resident_gb(children=True)

    @contextmanager
    def _timed(self):
        """One vLLM call, under the engine lock: `status` reports how long it has run."""
        self._call_started = time.monotonic()
        try:
            yield
        finally:
            self._call_started = None

    def generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        call = _Call(list(requests))
        with self._queue_lock:
            self._queue.append(call)
        with self._engine_lock:
            while not call.finished:  # else an earlier thread ran it in one of its batches
                with self._queue_lock:
                    taken = batch_length([sum(request.sampling.n for request in queued.requests)
                                          for queued in self._queue], self._max_sequences)
                    batch, self._queue = self._queue[:taken], self._queue[taken:]
                with self._timed():
                    self._run(batch)
        if call.error is not None:
            raise call.error
        return call.completions

    def _run(self, batch: list[_Call]) -> None:
        try:
            completions = self.engine.generate([request for call in batch for request in call.requests])
        except Exception as error:  # handed to every merged caller, which re-raises it
            for call in batch:
                call.error, call.finished = error, True
            return
        offset = 0
        for call in batch:
            call.completions = completions[offset:offset + len(call.requests)]
            call.finished = True
            offset += len(call.requests)

    def apply_update(self, update: WeightUpdate) -> dict[str, float]:
        """Serve `update`; an export written on another node is received first (rollout.received)."""
        with self._engine_lock, self._timed(), self._readable(update, served=True) as local:
            return self.engine.apply_update(local)

    @contextmanager
    def _readable(self, update: WeightUpdate, served: bool):
        """`update` as this node reads it: received into a local copy where it was written on another node. The copy
        becomes the served version when the block succeeds and `served`; otherwise it is removed."""
        if _readable_here(update):
            yield update
            return
        copy = self._received.write(ray.get(update.files), Path(update.path).name)
        succeeded = False
        try:
            yield replace(update, path=str(copy), node_id="", files=None)
            succeeded = True
        finally:
            if succeeded and served:
                self._received.now_served(copy)
            else:
                self._received.failed(copy)

    def sleep(self) -> None:
        with self._engine_lock, self._timed():
            self.engine.sleep()

    def wake_up(self) -> None:
        with self._engine_lock, self._timed():
            self.engine.wake_up()

    def close(self) -> None:
        """End the engine (removing the shared memory its processes leave) and the weights received from other
        nodes; the pool calls it before it kills the actor, which would leave both behind."""
        waited = self._engine_lock.acquire(timeout=CLOSE_WAIT_S)  # a running batch fails, the actor ends anyway
        try:
            self.engine.shutdown()
        finally:
            if waited:
                self._engine_lock.release()
        self._received.close()

    def read_probe(self, probe: SyncProbe, through: WeightUpdate | None = None) -> ProbeReading:
        """The engine's reading of `probe` (through `through`'s adapter, received first where it was written on
        another node, and removed after)."""
        with self._engine_lock, self._timed():
            if through is None:
                return self.engine.read_probe(probe)
            with self._readable(through, served=False) as local:
                return self.engine.read_probe(probe, local)
