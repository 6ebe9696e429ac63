"""Bounded verifiable grading: grades run in worker processes, in parallel, each under a hard time limit.

In a worker each grade runs in the process's main thread, so math-verify's own timeouts (signal.alarm) work there;
a grade that still overruns (sympy busy inside one C call does not see the alarm) has its worker killed and
replaced. A timed-out or crashed grade counts as wrong and is reported as such, never retried, never a hang.
`submit` returns at once, so grading overlaps with generation. Leaves out what a grade means (rewards/grading.py).
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Callable, Protocol, Sequence

KILL_GRACE_S = 1.0  # past math-verify's own timeout, before the worker is killed
START_TIMEOUT_S = 120.0  # a worker imports math-verify and sympy before it says it is ready


GradeFunction = Callable[..., bool]  # (predicted, reference, timeout_s=...) -> correct


@dataclass(frozen=True)
class Grade:
    correct: bool
    timed_out: bool = False  # the grade overran its limit (or its worker died): counted wrong


class Grader(Protocol):
    """Grades (predicted answer, reference answer) pairs; `submit` must not block on the grading itself."""

    def submit(self, pairs: Sequence[tuple[str, str]]) -> Future[list[Grade]]: ...


def _serve(connection: Connection, timeout_s: int, grade_function: GradeFunction | None) -> None:
    """A worker: say it is ready, then grade each pair it receives until the pipe closes. Sends (correct,
    timed_out); math-verify gives up at `timeout_s` and answers False, so a grade that took that long timed out."""
    from rewards.grading import grade

    grade = grade_function or grade
    connection.send("ready")
    while True:
        try:
            predicted, reference = connection.recv()
        except (EOFError, KeyboardInterrupt):
            return
        started = time.monotonic()
        try:
            correct = grade(predicted, reference, timeout_s=timeout_s)
        except Exception:  # noqa: BLE001 - any failure to grade model output is a wrong answer, not a crash
            correct = False
        connection.send((correct, not correct and time.monotonic() - started >= timeout_s))


class _Worker:
    def __init__(self, context: multiprocessing.context.BaseContext, timeout_s: int,
                 grade_function: GradeFunction | None) -> None:
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, timeout_s, grade_function), daemon=True,
                                       name="selfplay-grader")
        self.process.start()
        child.close()

    def wait_ready(self) -> None:
        if not self.connection.poll(START_TIMEOUT_S) or self.connection.recv() != "ready":
            self.stop()
            raise RuntimeError(f"a grading worker did not start within {START_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        self.connection.close()
        self.process.kill()
        self.process.join(timeout=5)


class GradingPool:
    """`workers` grading processes (spawned, so safe beside threads), each grade limited to `timeout_s` seconds.
    `grade_function` (a module-level function, default rewards.grading.grade) is for tests of the limits."""

    def __init__(self, workers: int = 2, timeout_s: int = 5, grade_function: GradeFunction | None = None) -> None:
        if workers < 1 or timeout_s < 1:
            raise ValueError(f"GradingPool needs workers >= 1 and timeout_s >= 1, got {workers}, {timeout_s}")
        self.timeout_s = timeout_s
        self._grade_function = grade_function
        self._context = multiprocessing.get_context("spawn")
        self._size = workers
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()  # one batch at a time through the workers
        self._dispatcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="selfplay-grading")

    def submit(self, pairs: Sequence[tuple[str, str]]) -> Future[list[Grade]]:
        return self._dispatcher.submit(self.grade, list(pairs))

    def grade(self, pairs: Sequence[tuple[str, str]]) -> list[Grade]:
        """Grades in input order; blocks for at most about len(pairs) / workers * (timeout_s + 1) seconds."""
        with self._lock:
            if not self._workers:
                self._workers = [_Worker(self._context, self.timeout_s, self._grade_function)
                                 for _ in range(self._size)]
                for worker in self._workers:
                    worker.wait_ready()
            return self._grade_locked(list(pairs))

    def _grade_locked(self, pairs: list[tuple[str, str]]) -> list[Grade]:
        results: list[Grade | None] = [None] * len(pairs)
        pending = deque(enumerate(pairs))
        busy: dict[int, tuple[int, float]] = {}  # worker slot -> (pair index, deadline)
        limit = self.timeout_s + KILL_GRACE_S
        while pending or busy:
            for slot in range(len(self._workers)):
                if slot not in busy and pending:
                    index, pair = pending.popleft()
                    self._workers[slot].connection.send(pair)
                    busy[slot] = (index, time.monotonic() + limit)
            next_deadline = min(deadline for _, deadline in busy.values())
            ready = wait([self._workers[slot].connection for slot in busy],
                         timeout=max(next_deadline - time.monotonic(), 0.0))
            for slot in list(busy):
                index, deadline = busy[slot]
                worker = self._workers[slot]
                if worker.connection in ready:
                    try:
                        correct, timed_out = worker.connection.recv()
                        results[index] = Grade(bool(correct), bool(timed_out))
                    except (EOFError, OSError):  # the worker died on this input
                        results[index] = Grade(False, timed_out=True)
                        self._replace(slot)
                    del busy[slot]
                elif time.monotonic() >= deadline:
                    results[index] = Grade(False, timed_out=True)
                    self._replace(slot)
                    del busy[slot]
        return [result for result in results if result is not None]

    def _replace(self, slot: int) -> None:
        self._workers[slot].stop()
        self._workers[slot] = _Worker(self._context, self.timeout_s, self._grade_function)
        self._workers[slot].wait_ready()

    def close(self) -> None:
        self._dispatcher.shutdown(wait=True)
        with self._lock:
            for worker in self._workers:
                worker.stop()
            self._workers = []

    def __enter__(self) -> GradingPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
