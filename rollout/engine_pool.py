"""The engine pool: engine actors (`rollout.host`) behind one thread-safe `generate`, weight sync to all of them,
restarts.

`EnginePool` (plain class; the driver may use it in-process) spreads requests over the hosts least-loaded first,
in chunks, and returns completions in request order; several threads may call it at once. It pushes each weight
update to every host and keeps the latest, so that a dead or hung host is killed, restarted, re-synced to the
latest weights and given its unfinished requests again (up to `max_restarts` per pool). A host is hung when the
vLLM call it runs has run `request_timeout_s` (or it stops answering `status`): a chunk queued behind other
callers' batches waits as long as they take. `RemoteEnginePool` runs
an `EnginePool` in its own threaded actor and is a picklable handle to it, so role actors can share one pool.

Placement: given `nodes` (the run's placement plan, selfplay.placement), each engine reserves a placement group of
one bundle pinned to its planned node (a tensor-parallel engine's GPUs in that bundle), and a restarted engine
starts in the same reservation; without a plan engines are spread over the least-loaded nodes.

Leaves out: prompting and parsing (agents/), making the weights (learner/), and CPU pinning across nodes (engines
sharing a single CPU node get disjoint cores).
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from learner.hardware import alive_nodes, pinned_placement_group, resource_bundle
from learner.weights import SyncProbe, WeightUpdate
from rollout.config import RolloutConfig
from rollout.engine import EngineDied, EngineSpec, ProbeMismatch, SyncError
from rollout.host import HOST_CONCURRENCY, EngineHost, EngineStatus
from rollout.probe import ProbeReading
from rollout.records import Completion, GenerationRequest

logger = logging.getLogger(__name__)

POOL_CONCURRENCY = 64  # threads of a RemoteEnginePool actor: concurrent role calls
POLL_SECONDS = 1.0  # how often a waiting call re-checks deadlines and restarts
MIN_START_SECONDS = 600.0  # engine start-up may take longer than a request (compiling, loading a large model)
CLOSE_SECONDS = 15.0  # an engine's own shutdown before it is killed (vLLM takes about 5 s)
STATUS_SECONDS = 30.0  # a host that does not answer `status` within this is hung
RESERVE_SECONDS = 120.0  # planned reservations on a cluster that has the room are ready in seconds
HEALTH_GROUP = "health"  # hosts answer `status` on a thread of their own, free while generate calls fill the rest


# -- the pool -----------------------------------------------------------------------------------------------------
class SlotState(Enum):
    SERVING = "serving"
    RESTARTING = "restarting"
    FAILED = "failed"


@dataclass
class _Slot:
    """One engine position in the pool; its actor changes on restart (`incarnation` counts them)."""

    index: int
    handle: Any
    state: SlotState = SlotState.SERVING
    incarnation: int = 0
    load: int = 0  # sampled sequences in flight


@dataclass(frozen=True)
class _Flight:
    """One chunk of a generate call submitted to one engine."""

    indices: tuple[int, ...]
    slot: int
    incarnation: int
    handle: Any
    sequences: int
    deadline: float  # when to ask the engine whether it is hung (time.monotonic())


def _cause(error: BaseException) -> BaseException:
    """The exception raised inside the actor (SyncError, ValueError, ...), unwrapped from Ray's wrappers; any other
    error as it is."""
    while isinstance(error, RayTaskError) and getattr(error, "cause", None) is not None:
        error = error.cause
    return error


def _engine_death(error: BaseException) -> BaseException:
    """The cause of a failed engine call when the engine is gone (its actor or its vLLM core died), for the pool to
    replace it; any other cause is raised."""
    cause = _cause(error)
    if not isinstance(cause, (RayActorError, EngineDied)):
        raise cause from None
    return cause


def _extreme(pick, engine_metrics: list[dict[str, float]], key: str) -> float:
    """max or min of one sync metric over the engines that report it (nan where none does)."""
    values = [metrics[key] for metrics in engine_metrics if not math.isnan(metrics.get(key, math.nan))]
    return pick(values) if values else math.nan


def _summary(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


class EnginePool:
    def __init__(self, spec: EngineSpec, rollout: RolloutConfig, name: str = "rollout",
                 host_class: type = EngineHost, nodes: list[str] | None = None) -> None:
        """Start `rollout.num_engines` engine actors (blocks until they serve), engine i on node `nodes[i]` where
        given. `host_class` is the actor body: `EngineHost`, or a stand-in with the same methods in tests."""
        self.spec, self.rollout, self.name = spec, rollout, name
        self._reservations = self._reserve(nodes) if nodes is not None else None
        self._remote_host = ray.remote(concurrency_groups={HEALTH_GROUP: 1})(host_class)
        self._start_timeout = max(rollout.request_timeout_s, MIN_START_SECONDS)
        self._lock = threading.Condition()  # guards slots, the latest update and the counters
        self._sync_lock = threading.Lock()  # one weight update at a time
        self._latest: WeightUpdate | None = None
        self._restarts = 0
        self._failure: str | None = None
        self._active_calls, self._busy_since, self._busy_seconds = 0, 0.0, 0.0
        self._tokens, self._requests = 0, 0
        # CPU engines on one node split its cores; a single engine takes them all (vLLM's default reserves one
        # core for its scheduler: 96 vs 146 tokens/s at batch 64 on 2 cores). Learner and engines take turns.
        shared_node = rollout.gpus_per_engine == 0 and len(alive_nodes()) == 1
        self._cpu_shares = [(index, rollout.num_engines) if shared_node else None
                            for index in range(rollout.num_engines)]
        handles = [self._start_host(index) for index in range(rollout.num_engines)]
        try:
            ray.get([handle.ready.remote() for handle in handles], timeout=self._start_timeout)
        except (RayActorError, RayTaskError, GetTimeoutError) as error:
            for handle in handles:
                ray.kill(handle)
            raise RuntimeError(f"{name}: engines for {spec.model_path} did not start: {_summary(error)}") from error
        self._slots = [_Slot(index, handle) for index, handle in enumerate(handles)]

    def _reserve(self, nodes: list[str]) -> list[Any]:
        """One placement group per engine, pinned to its node; ready before any engine starts."""
        if len(nodes) != self.rollout.num_engines:
            raise ValueError(f"{self.name}: a plan for {len(nodes)} engines, but rollout.num_engines is "
                             f"{self.rollout.num_engines}")
        bundle = resource_bundle(self.rollout.cpus_per_engine, self.rollout.gpus_per_engine)
        groups = [pinned_placement_group([bundle], [node], "STRICT_PACK") for node in nodes]
        waits = [group.ready() for group in groups]
        _, pending = ray.wait(waits, num_returns=len(waits), timeout=RESERVE_SECONDS)
        if pending:
            _remove_groups(groups)
            late = [index for index, wait in enumerate(waits) if wait in pending]
            raise RuntimeError(f"{self.name}: the reservations of engines {late} on their planned nodes were not "
                               f"ready within {RESERVE_SECONDS:g} s (another job holds those resources?)")
        return groups

    def _start_host(self, index: int) -> Any:
        # A tensor-parallel engine is one actor holding tensor_parallel_size GPUs of one node (vLLM runs its shards
        # as processes). Without a plan, SPREAD: engines go to the least-loaded nodes.
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        strategy = ("SPREAD" if self._reservations is None else
                    PlacementGroupSchedulingStrategy(self._reservations[index], placement_group_bundle_index=0))
        options = {"num_cpus": self.rollout.cpus_per_engine, "num_gpus": self.rollout.gpus_per_engine,
                   "max_concurrency": HOST_CONCURRENCY, "scheduling_strategy": strategy}
        return self._remote_host.options(**options).remote(self.spec, self._cpu_shares[index])

    # -- generation ---------------------------------------------------------------------------------------------
    def generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        """Completions for `requests`, in order. Retries the chunks of engines that die or hang."""
        requests = list(requests)
        results: list[Completion | None] = [None] * len(requests)
        waiting = deque(self._chunks(requests))
        flights: dict[Any, _Flight] = {}
        self._call_started()
        try:
            while waiting or flights:
                while waiting:
                    ref, flight = self._submit(waiting.popleft(), requests)
                    flights[ref] = flight
                self._collect(flights, waiting, results)
        finally:
            for flight in flights.values():
                self._release(flight)
            self._call_finished()
        return results

    def _chunks(self, requests: list[GenerationRequest]) -> list[tuple[int, ...]]:
        """Consecutive requests in about one chunk per serving engine, at most `max_num_seqs` sequences each."""
        with self._lock:
            engines = max(1, sum(slot.state is SlotState.SERVING for slot in self._slots))
        total = sum(request.sampling.n for request in requests)
        target = min(self.spec.max_num_seqs, max(1, -(-total // engines)))
        chunks, current, size = [], [], 0
        for index, request in enumerate(requests):
            current.append(index)
            size += request.sampling.n
            if size >= target:
                chunks.append(tuple(current))
                current, size = [], 0
        return chunks + [tuple(current)] if current else chunks

    def _submit(self, indices: tuple[int, ...], requests: list[GenerationRequest]) -> tuple[Any, _Flight]:
        sequences = sum(requests[index].sampling.n for index in indices)
        with self._lock:
            while True:
                serving = [slot for slot in self._slots if slot.state is SlotState.SERVING]
                if serving:
                    break
                if not any(slot.state is SlotState.RESTARTING for slot in self._slots):
                    raise RuntimeError(f"{self.name}: no engine left to serve: {self._failure}")
                self._lock.wait(POLL_SECONDS)
            slot = min(serving, key=lambda candidate: (candidate.load, candidate.index))
            slot.load += sequences
            handle, incarnation = slot.handle, slot.incarnation
        ref = handle.generate.remote([requests[index] for index in indices])
        return ref, _Flight(indices, slot.index, incarnation, handle, sequences,
                            time.monotonic() + self.rollout.request_timeout_s)

    def _collect(self, flights: dict[Any, _Flight], waiting: deque, results: list[Completion | None]) -> None:
        """Wait for one chunk (or a deadline); store its completions or requeue it after replacing its engine."""
        earliest = min(flight.deadline for flight in flights.values())
        timeout = max(0.0, min(earliest - time.monotonic(), POLL_SECONDS))
        done, _ = ray.wait(list(flights), num_returns=1, timeout=timeout)
        for ref in done:
            flight = flights.pop(ref)
            self._release(flight)
            try:
                completions = ray.get(ref)
            except (RayActorError, RayTaskError) as error:
                cause = _engine_death(error)
                self._replace(flight.slot, flight.incarnation, f"died ({_summary(cause)})")
                waiting.append(flight.indices)
                continue
            for index, completion in zip(flight.indices, completions):
                results[index] = completion
            self._count(completions)
        for ref, flight in list(flights.items()):
            if flight.deadline > time.monotonic() or ray.wait([ref], timeout=0)[0]:  # a finished chunk is not hung
                continue
            deadline = self._hang_deadline(flight.handle)
            if isinstance(deadline, float):
                flights[ref] = replace(flight, deadline=deadline)
                continue
            del flights[ref]
            self._release(flight)
            self._replace(flight.slot, flight.incarnation, deadline)
            waiting.append(flight.indices)

    def _hang_deadline(self, handle: Any) -> float | str:
        """When the engine's running vLLM call will have run request_timeout_s (from now if it is idle), or, when
        it already has or the engine does not answer, why the engine is hung."""
        timeout = self.rollout.request_timeout_s
        try:
            status = ray.get(handle.status.options(concurrency_group=HEALTH_GROUP).remote(), timeout=STATUS_SECONDS)
        except GetTimeoutError:
            return f"hung (no answer to a status call within {STATUS_SECONDS:g} s)"
        except (RayActorError, RayTaskError) as error:
            return f"hung (its status call failed: {_summary(_cause(error))})"
        if status.running_s >= timeout:
            return f"hung (a vLLM call ran {status.running_s:.0f} s, over request_timeout_s={timeout:g} s)"
        return time.monotonic() + timeout - status.running_s

    def _release(self, flight: _Flight) -> None:
        with self._lock:
            self._slots[flight.slot].load -= flight.sequences

    # -- health -------------------------------------------------------------------------------------------------
    def _replace(self, index: int, incarnation: int, cause: str) -> None:
        """Kill engine `index` and start, sync and serve a new one; a no-op if another thread already did."""
        with self._lock:
            slot = self._slots[index]
            if slot.incarnation != incarnation or slot.state is not SlotState.SERVING:
                return
            old_handle = slot.handle
            give_up = self._restarts >= self.rollout.max_restarts
            if give_up:
                slot.state = SlotState.FAILED
                self._failure = (f"{self.name} engine {index} {cause}; the restart limit "
                                 f"(rollout.max_restarts={self.rollout.max_restarts}) is used up")
                self._lock.notify_all()
            else:
                self._restarts += 1
                slot.state, slot.incarnation = SlotState.RESTARTING, slot.incarnation + 1
        _close_and_kill([old_handle])
        if give_up:
            raise RuntimeError(self._failure)
        logger.warning("%s engine %d %s: restarting it (restart %d of %d)", self.name, index, cause,
                       self._restarts, self.rollout.max_restarts)
        handle = self._start_host(index)
        try:
            ray.get(handle.ready.remote(), timeout=self._start_timeout)
            self._resync(slot, handle)
        except (RayActorError, RayTaskError, GetTimeoutError) as error:
            ray.kill(handle)
            with self._lock:
                slot.state = SlotState.FAILED
                reason = _summary(_cause(error))
                self._failure = f"{self.name} engine {index} {cause}, and its restart failed: {reason}"
                self._lock.notify_all()
            raise RuntimeError(self._failure) from error

    def _resync(self, slot: _Slot, handle: Any) -> None:
        """Bring a restarted engine to the latest weights, then let it serve (repeats if a sync lands meanwhile)."""
        synced_version = 0
        while True:
            with self._lock:
                latest = self._latest
                if latest is None or latest.version == synced_version:
                    slot.handle, slot.state = handle, SlotState.SERVING
                    self._lock.notify_all()
                    return
            ray.get(handle.apply_update.remote(latest), timeout=self.rollout.request_timeout_s)
            synced_version = latest.version

    # -- weight sync --------------------------------------------------------------------------------------------
    def apply_update(self, update: WeightUpdate) -> dict[str, float]:
        """Serve `update` on every engine and check its probe there. An engine that loads it but fails the probe
        (it serves other weights, or still the previous version) is replaced and re-synced like a dead one; if
        the replacement fails too, the pool fails naming it. Raises SyncError on a stale version or wrong mode."""
        if update.mode is not self.spec.sync_mode:
            raise SyncError(f"{self.name}: pool built for {self.spec.sync_mode.value} sync got a "
                            f"{update.mode.value} update")
        with self._sync_lock:
            with self._lock:
                if self._latest is not None and update.version <= self._latest.version:
                    raise SyncError(f"{self.name}: weight version {update.version} is not newer than the "
                                    f"served {self._latest.version}")
                previous, self._latest = self._latest, update
                targets = self._serving_targets()
            started = time.perf_counter()
            refs = [(handle.apply_update.remote(update), index, incarnation) for index, incarnation, handle in targets]
            engine_metrics = []
            for ref, index, incarnation in refs:
                try:
                    engine_metrics.append(ray.get(ref, timeout=self.rollout.request_timeout_s))
                except (RayActorError, GetTimeoutError) as error:  # the restart re-syncs it to `update`
                    self._replace(index, incarnation, f"failed during sync ({_summary(error)})")
                except RayTaskError as error:
                    cause = _cause(error)
                    if isinstance(cause, EngineDied):
                        self._replace(index, incarnation, f"died during sync ({_summary(cause)})")
                    elif isinstance(cause, ProbeMismatch):
                        self._replace(index, incarnation, f"failed the weight check ({cause})")
                    else:  # refused (SyncError): the engines still serve `previous`, and a restart loads it
                        with self._lock:
                            self._latest = previous
                        raise cause from None
            seconds = time.perf_counter() - started
        for metrics in engine_metrics:
            if metrics.get("probe_warning"):
                logger.warning("%s: weight version %d: probe logprob gap %.4f exceeds tolerance %.4f; tolerated once "
                               "in %s, a second breach in a row fails the sync", self.name, update.version,
                               metrics["probe_gap"], update.probe.tolerance, self.spec.dtype)
        return {"sync/seconds": seconds, "sync/version": float(update.version),
                "sync/probe_gap": _extreme(max, engine_metrics, "probe_gap"),
                "sync/probe_position": _extreme(min, engine_metrics, "probe_position"),
                "sync/load_seconds": _extreme(max, engine_metrics, "load_seconds"),
                "sync/probe_warnings": float(sum(metrics.get("probe_warning", 0.0) for metrics in engine_metrics))}

    def read_probe(self, probe: SyncProbe, through: WeightUpdate | None = None) -> list[ProbeReading]:
        """Each serving engine's reading of `probe` (rollout.probe; through `through`'s adapter, for a calibration);
        nothing is raised on a mismatch. An engine found dead is replaced (re-synced to the latest weights) and its
        replacement read instead."""
        with self._lock:
            targets = self._serving_targets()
        if not targets:
            raise RuntimeError(f"{self.name}: no engine is serving ({self._failure or 'all are restarting'})")
        refs = [(handle.read_probe.remote(probe, through), index, incarnation)
                for index, incarnation, handle in targets]
        readings = []
        for ref, index, incarnation in refs:
            try:
                readings.append(ray.get(ref))
            except (RayActorError, RayTaskError) as error:
                cause = _engine_death(error)
                self._replace(index, incarnation, f"died ({_summary(cause)})")
                readings.append(_unwrapped(self._serving_handle(index).read_probe.remote(probe, through)))
        return readings

    def _serving_targets(self) -> list[tuple[int, int, Any]]:
        """(index, incarnation, handle) of every serving engine; the caller holds the lock."""
        return [(slot.index, slot.incarnation, slot.handle) for slot in self._slots
                if slot.state is SlotState.SERVING]

    def _serving_handle(self, index: int) -> Any:
        """Engine `index`'s actor once it serves (another thread may be restarting it)."""
        with self._lock:
            while self._slots[index].state is SlotState.RESTARTING:
                self._lock.wait(POLL_SECONDS)
            if self._slots[index].state is SlotState.FAILED:
                raise RuntimeError(f"{self.name}: engine {index} failed: {self._failure}")
            return self._slots[index].handle

    @property
    def weight_version(self) -> int:
        with self._lock:
            return self._latest.version if self._latest else 0

    # -- bookkeeping --------------------------------------------------------------------------------------------
    def _call_started(self) -> None:
        with self._lock:
            if self._active_calls == 0:
                self._busy_since = time.perf_counter()
            self._active_calls += 1

    def _call_finished(self) -> None:
        with self._lock:
            self._active_calls -= 1
            if self._active_calls == 0:
                self._busy_seconds += time.perf_counter() - self._busy_since

    def _count(self, completions: list[Completion]) -> None:
        tokens = sum(len(sample.token_ids) for completion in completions for sample in completion.samples)
        with self._lock:
            self._tokens += tokens
            self._requests += len(completions)

    def sleep(self) -> None:
        """Put every serving engine to sleep while the learner trains (rollout.sleep_while_training); an engine
        that fails to is replaced (and comes back awake)."""
        self._on_every_serving("sleep")

    def wake_up(self) -> None:
        self._on_every_serving("wake_up")

    def _on_every_serving(self, call: str) -> None:
        with self._lock:
            targets = self._serving_targets()
        refs = [(getattr(handle, call).remote(), index, incarnation) for index, incarnation, handle in targets]
        for ref, index, incarnation in refs:
            try:
                ray.get(ref, timeout=self.rollout.request_timeout_s)
            except (RayActorError, RayTaskError, GetTimeoutError) as error:
                self._replace(index, incarnation, f"failed to {call.replace('_', ' ')} ({_summary(error)})")

    def metrics(self) -> dict[str, float]:
        """Generation since the previous call (tokens per second of wall time with any call running) and the
        pool's restart count so far."""
        with self._lock:
            now = time.perf_counter()
            busy = self._busy_seconds + (now - self._busy_since if self._active_calls else 0.0)
            tokens, requests = self._tokens, self._requests
            self._tokens, self._requests, self._busy_seconds = 0, 0, 0.0
            self._busy_since = now
            serving = [slot.handle for slot in self._slots if slot.state is SlotState.SERVING]
            metrics = {f"{self.name}/generated_tokens": float(tokens),
                       f"{self.name}/tokens_per_second": tokens / busy if busy > 0 else 0.0,
                       f"{self.name}/busy_seconds": busy, f"{self.name}/requests": float(requests),
                       f"{self.name}/engine_restarts": float(self._restarts),
                       f"{self.name}/engines_serving": float(len(serving))}
        return metrics | self._memory(serving)

    def _memory(self, handles: list[Any]) -> dict[str, float]:
        """The largest resident memory among the serving engines (host and vLLM processes); none where no engine
        answers (the health checks restart those)."""
        readings = []
        for pending in [handle.resident_gb.options(concurrency_group=HEALTH_GROUP).remote() for handle in handles]:
            try:
                readings.append(ray.get(pending, timeout=STATUS_SECONDS))
            except (GetTimeoutError, RayActorError, RayTaskError):
                continue
        key = "memory/engine_rss_gb" if self.name == "rollout" else f"memory/{self.name}_engine_rss_gb"
        return {key: max(readings)} if readings else {}

    def status(self) -> list[EngineStatus]:
        with self._lock:
            handles = [slot.handle for slot in self._slots]
        return ray.get([handle.status.options(concurrency_group=HEALTH_GROUP).remote() for handle in handles],
                       timeout=self.rollout.request_timeout_s)

    def engine_handles(self) -> list[Any]:
        with self._lock:
            return [slot.handle for slot in self._slots]

    def shutdown(self) -> None:
        """Close and kill every engine actor."""
        with self._lock:
            handles = [slot.handle for slot in self._slots if slot.state is SlotState.SERVING]
            for slot in self._slots:
                slot.state = SlotState.FAILED
            self._failure = "the pool was shut down"
            self._lock.notify_all()
        try:
            _close_and_kill(handles)
        finally:
            _remove_groups(self._reservations or [])

    def __enter__(self) -> EnginePool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.shutdown()


def _remove_groups(groups: list[Any]) -> None:
    from ray.util.placement_group import remove_placement_group

    for group in groups:
        remove_placement_group(group)


def _close_and_kill(handles: list[Any]) -> None:
    """Let each engine shut down and remove what it leaves (received weights, shared memory), for CLOSE_SECONDS at
    most (a hung or dead one cannot), then kill it (Ray also ends vLLM's engine-core processes under it)."""
    closing = [handle.close.remote() for handle in handles]
    ray.wait(closing, num_returns=len(closing), timeout=CLOSE_SECONDS)
    for handle in handles:
        ray.kill(handle)


# -- a pool other actors can call ---------------------------------------------------------------------------------
def _unwrapped(ref: Any, timeout: float | None = None) -> Any:
    try:
        return ray.get(ref, timeout=timeout)
    except RayTaskError as error:
        raise _cause(error) from None


def _pool_by_name(actor_name: str) -> RemoteEnginePool:
    return RemoteEnginePool(ray.get_actor(actor_name), actor_name)


class RemoteEnginePool:
    """A picklable handle to an `EnginePool` in its own threaded, named actor: the driver syncs it, role actors
    call `generate` on it concurrently. Methods mirror `EnginePool` and raise the pool's own exceptions.

    It pickles as the actor's name: a restartable role actor built with a raw actor handle gets its constructor
    arguments pinned in the object store (Ray warns that a restart fails once they are released)."""

    def __init__(self, handle: Any, actor_name: str) -> None:
        self.handle, self.actor_name = handle, actor_name

    def __reduce__(self) -> tuple:
        return _pool_by_name, (self.actor_name,)

    @classmethod
    def launch(cls, spec: EngineSpec, rollout: RolloutConfig, name: str = "rollout",
               nodes: list[str] | None = None) -> RemoteEnginePool:
        actor_name = f"{name}-pool-{uuid.uuid4().hex[:8]}"
        actor = ray.remote(EnginePool).options(num_cpus=0, max_concurrency=POOL_CONCURRENCY,
                                               name=actor_name).remote(spec, rollout, name, nodes=nodes)
        pool = cls(actor, actor_name)
        pool.engine_handles()  # waits until the engines serve; raises the start-up error if they do not
        return pool

    def generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        return _unwrapped(self.handle.generate.remote(list(requests)))

    def apply_update(self, update: WeightUpdate) -> dict[str, float]:
        return _unwrapped(self.handle.apply_update.remote(update))

    def read_probe(self, probe: SyncProbe, through: WeightUpdate | None = None) -> list[ProbeReading]:
        return _unwrapped(self.handle.read_probe.remote(probe, through))

    def sleep(self) -> None:
        _unwrapped(self.handle.sleep.remote())

    def wake_up(self) -> None:
        _unwrapped(self.handle.wake_up.remote())

    def metrics(self) -> dict[str, float]:
        return _unwrapped(self.handle.metrics.remote())

    def status(self) -> list[EngineStatus]:
        return _unwrapped(self.handle.status.remote())

    def engine_handles(self) -> list[Any]:
        return _unwrapped(self.handle.engine_handles.remote())

    def shutdown(self) -> None:
        try:
            _unwrapped(self.handle.shutdown.remote())
        finally:
            ray.kill(self.handle)

    def __enter__(self) -> RemoteEnginePool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.shutdown()
