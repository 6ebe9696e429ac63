"""Entry points that start engines leave no process behind, also when stopped with SIGTERM or Ctrl-C.

Python's default SIGTERM ends the process at once, skipping every `finally` (and so `Engine.shutdown`), and vLLM's
engine-core process ignores SIGTERM: it kept running at full CPU after `launch/eval.py` was terminated. Inside
`no_orphans()` SIGTERM and Ctrl-C raise SystemExit (143, 130), so the normal cleanup runs; a
watcher remembers every process started below this one (Ray's, vLLM's and their children, which may be re-parented
once their parent is gone). At interpreter exit, after the libraries' own exit handlers (W&B's service and Ray end
their processes there; ours is registered first, so it runs last), it waits `grace_s` for the remembered processes
to exit, then kills the rest and removes the shared memory they leave (rollout.shm_segments).
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from rollout.shm_segments import mapped_segments, remove_unmapped

WATCH_SECONDS = 2.0  # how often the watcher looks for new descendants
KILL_WAIT_S = 2.0  # for killed processes to release their shared memory
STOPPING_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_active_handler = None  # the handler of the running no_orphans block, for claim_signals


def claim_signals() -> None:
    """Put the block's handlers back after a library replaced them: `ray.init` installs its own SIGTERM handler
    and, under it, a C++ one that logs and then aborts the driver (exit status -6 instead of a clean stop)."""
    if _active_handler is not None:
        for signum in STOPPING_SIGNALS:
            signal.signal(signum, _active_handler)


class _Descendants:
    def __init__(self) -> None:
        self.seen: dict[int, psutil.Process] = {}
        self.segments: set[Path] = set()  # shared memory they mapped when the block was stopped or ended
        self.lock = threading.Lock()

    def remember(self) -> None:
        try:
            children = psutil.Process(os.getpid()).children(recursive=True)
        except psutil.Error:
            return
        with self.lock:
            for child in children:
                if child.pid not in self.seen and not _is_resource_tracker(child):
                    self.seen[child.pid] = child

    def remember_segments(self) -> None:
        self.segments |= mapped_segments(process.pid for process in self.alive())

    def alive(self) -> list[psutil.Process]:
        with self.lock:
            processes = list(self.seen.values())
        return [process for process in processes if _running(process)]


def _is_resource_tracker(process: psutil.Process) -> bool:
    """multiprocessing's resource tracker exits after this process, and then removes the semaphores and shared
    memory left registered with it: waiting for it would cost the whole grace period, and killing it leaks them."""
    try:
        return any("multiprocessing.resource_tracker" in part for part in process.cmdline())
    except psutil.Error:
        return False


def _running(process: psutil.Process) -> bool:
    try:  # is_running also tells a reused pid from the process that had it
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@contextmanager
def no_orphans(grace_s: float = 15.0) -> Iterator[None]:
    """Run the block with SIGTERM and SIGINT turned into SystemExit; afterwards end every process it started."""
    descendants, stop = _Descendants(), threading.Event()

    def watch() -> None:
        while not stop.wait(WATCH_SECONDS):
            descendants.remember()

    def on_signal(signum: int, frame) -> None:
        descendants.remember()
        descendants.remember_segments()
        print(f"stopped by {signal.Signals(signum).name}: ending the processes started here", file=sys.stderr,
              flush=True)
        raise SystemExit(128 + signum)  # quiet, unlike KeyboardInterrupt's traceback

    global _active_handler
    previous = {signum: signal.signal(signum, on_signal) for signum in STOPPING_SIGNALS}
    _active_handler = on_signal
    watcher = threading.Thread(target=watch, name="no-orphans", daemon=True)
    watcher.start()
    atexit.register(_end_survivors, descendants, grace_s)
    try:
        yield
    finally:
        stop.set()
        descendants.remember()
        descendants.remember_segments()
        _active_handler = None
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _end_survivors(descendants: _Descendants, grace_s: float) -> None:
    descendants.remember()
    _, survivors = psutil.wait_procs(descendants.alive(), timeout=grace_s)
    segments = descendants.segments | mapped_segments(process.pid for process in survivors)
    for process in survivors:
        try:
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(survivors, timeout=KILL_WAIT_S)
    remove_unmapped(segments)
