"""Shared memory that vLLM's engine processes leave in /dev/shm when they end.

vLLM's engine core creates its message queues as `multiprocessing.shared_memory` segments (`/dev/shm/psm_*`,
160-240 MiB each). Only a clean exit of the creating process removes them, and it rarely gets one: vLLM's own
shutdown SIGKILLs the engine core after 5 s, while it still waits for its worker, and Ray kills an engine actor's
processes. One run left five; this machine had gathered 434.

So whoever ends engine processes first notes the segments they map (`mapped_segments`), ends them, then removes
each noted segment that no process maps any more (`remove_unmapped`). Linux only (/proc); elsewhere both do nothing.

No one ends the processes of an engine whose host is killed (SIGKILL, the OOM killer, `ray.kill`): Ray and the
kernel end them without a word, and their segments stay. So each engine notes its processes' segments in a small
file named after its host process (`note_segments`), and every engine start removes the unmapped segments of notes
whose host has ended (`sweep_dead_hosts`).

A segment's creator also registered it with multiprocessing's resource tracker, which engine processes share with
the process that started them. That tracker unlinks what is still registered when its process exits, and warns
"leaked shared_memory objects" and "No such file or directory" for segments removed here, so `remove_unmapped`
tells this process's tracker, where it runs one, to forget each segment it removes.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from learner.weights import of_ended_processes

SHM_DIR = Path("/dev/shm")
# shared_memory segments. Not multiprocessing's named semaphores (sem.mp-*, 32 bytes): their creator's finalizer
# unlinks them at exit and raises when they are already gone.
PREFIXES = ("psm_",)
NOTE_PREFIX = "selfplay-engine-segments-"  # + the host process's pid + "-" + a unique tail


def segments_in_maps(maps: str) -> set[Path]:
    """The /dev/shm segments named in one /proc/PID/maps text (the path is the last field; a deleted file's
    line ends with "(deleted)" and names nothing left to remove)."""
    found = set()
    for line in maps.splitlines():
        path = Path(line.rsplit(None, 1)[-1]) if line.strip() else None
        if path is not None and path.parent == SHM_DIR and path.name.startswith(PREFIXES):
            found.add(path)
    return found


def mapped_segments(pids: Iterable[int]) -> set[Path]:
    """The segments these processes map now (processes that are gone or unreadable add nothing)."""
    found = set()
    for pid in pids:
        try:
            found |= segments_in_maps(Path(f"/proc/{pid}/maps").read_text())
        except OSError:
            continue
    return found


def remove_unmapped(segments: Iterable[Path]) -> int:
    """Remove each of `segments` that no process on this machine maps; returns how many were removed."""
    segments = {Path(segment) for segment in segments}
    if not segments:
        return 0
    pids = [int(entry) for entry in os.listdir("/proc") if entry.isdigit()] if os.path.isdir("/proc") else []
    still_used = mapped_segments(pids)
    removed = 0
    for segment in segments - still_used:
        try:
            segment.unlink()
            removed += 1
        except OSError:  # already removed (its creator exited cleanly), or not ours to remove
            continue
        _forget_in_resource_tracker(segment)
    return removed


def note_segments(host: int, pids: Iterable[int]) -> Path | None:
    """Write the segments `pids` map now to a new `SHM_DIR/NOTE_PREFIX<host>-*` (one per engine: a process may host
    several); None where there is nothing to note or no note can be written."""
    segments = mapped_segments(pids)
    if not segments:
        return None
    try:
        descriptor, name = tempfile.mkstemp(prefix=f"{NOTE_PREFIX}{host}-", dir=SHM_DIR)
    except OSError:  # a /dev/shm this user cannot write to: the engine runs on, only without a later sweep
        return None
    with os.fdopen(descriptor, "w") as note:
        note.write("".join(f"{segment.name}\n" for segment in sorted(segments)))
    return Path(name)


def noted_segments(note: Path | None) -> set[Path]:
    """The segments a note names (none for None or a note that is gone)."""
    try:
        names = note.read_text().split() if note is not None else []
    except FileNotFoundError:
        return set()
    return {SHM_DIR / name for name in names if name.startswith(PREFIXES)}


def sweep_dead_hosts() -> int:
    """Remove the unmapped segments noted by hosts that have ended, and their notes; returns the segments removed.
    A note of a live host (or of a pid reused since) is left alone."""
    removed = 0
    for note in of_ended_processes(SHM_DIR, NOTE_PREFIX) if SHM_DIR.is_dir() else []:
        try:
            removed += remove_unmapped(noted_segments(note))
            note.unlink()
        except OSError:  # another user's note, or removed by a concurrent sweep
            continue
    return removed


def _forget_in_resource_tracker(segment: Path) -> None:
    """Drop `segment` from the resource tracker this process runs or inherited; never starts one. The tracker
    prints a traceback for an unregister of a name it does not hold, so register first (its cache is a set)."""
    from multiprocessing import resource_tracker

    if getattr(resource_tracker._resource_tracker, "_fd", None) is None:
        return
    name = "/" + segment.name  # SharedMemory registers its POSIX name
    resource_tracker.register(name, "shared_memory")
    resource_tracker.unregister(name, "shared_memory")
