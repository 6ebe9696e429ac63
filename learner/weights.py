"""What the learner hands the engines after an update: where the weights are, in which form, and how an engine
checks that it serves them (a probe sequence with the learner's logprobs; the check itself is rollout.probe).

Export directories are named `{prefix}{host}_{owner}_{pid}-XXXX` (`process_scratch_dir`): the machine and run that
made one, and its process. Only directories of this machine and owner whose process has ended are swept: a pid
means nothing on another node (a learner may write on a node other than the one that named the directory, and
shared storage holds every node's), nor in another container sharing this /dev/shm.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MIN_NOISE = 1e-6  # a noise norm measured as 0 (bit-identical kernels) still admits rounding differences later
MEMORY_ROOT = Path("/dev/shm")
MIB = 1 << 20


class SyncMode(str, Enum):
    ADAPTER = "adapter"  # load the LoRA as a new immutable adapter version
    MERGED = "merged"  # push LoRA-merged full weights into the running engine


@dataclass(frozen=True)
class SyncProbe:
    """What the learner expects an engine to compute on a fixed token sequence after a sync."""

    token_ids: tuple[int, ...]  # [P]
    expected: tuple[float, ...]  # [P - 1] learner logprob of tokens 1..P-1 under this version
    previous: tuple[float, ...] = ()  # [P - 1] the same under the version before; () skips the version test
    tolerance: float = math.inf  # max mean |served - expected|
    noise: float = 0.0  # |served - expected| (L2) measured with identical weights; see selfplay.wiring
    tolerated_breaches: int = 0  # gap breaches in a row that pass as warnings (rollout.probe.tolerated_breaches)

    def advanced(self, expected: tuple[float, ...]) -> SyncProbe:
        """The probe of the next version: the learner's new logprobs, with these as the previous ones."""
        return replace(self, expected=tuple(expected), previous=self.expected)

    def separation(self) -> float:
        """How far this version moved the probe from the previous one, in noise norms (nan: no previous)."""
        if not self.previous:
            return math.nan
        return l2_norm([a - b for a, b in zip(self.expected, self.previous)]) / max(self.noise, MIN_NOISE)


@dataclass(frozen=True)
class WeightUpdate:
    """New weights ready for the engines: a PEFT adapter directory or a merged model directory."""

    version: int
    mode: SyncMode
    path: str
    probe: SyncProbe | None = None  # how each engine checks that it serves these weights (None: unchecked)
    node_id: str = ""  # the node whose disk holds `path` ("" = every node reads it: one node, or shared storage)
    files: Any = None  # for engines on other nodes: a Ray object reference to `read_files(path)`
    role_probes: tuple[tuple[str, SyncProbe | None], ...] = ()
    """One adapter per role (`probe` then None): each role's adapter is in `path`/ROLE, checked on its probe."""

    def adapters(self) -> list[tuple[str, str, SyncProbe | None]]:
        """(role, directory, probe) of each adapter in this version: ("", path, probe) for the one all roles share."""
        if not self.role_probes:
            return [("", self.path, self.probe)]
        return [(role, str(Path(self.path) / role), probe) for role, probe in self.role_probes]

    def probes(self) -> dict[str, SyncProbe]:
        """The probe of each adapter that has one, by role ("" for the shared adapter)."""
        return {role: probe for role, _, probe in self.adapters() if probe is not None}


def read_files(directory: str) -> dict[str, bytes]:
    """An export directory's files by relative name, to ship to another node."""
    root = Path(directory)
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def write_files(files: dict[str, bytes], directory: Path) -> Path:
    """`read_files`'s result written under `directory` (created; names may not leave it)."""
    for name, content in files.items():
        target = (directory / name).resolve()
        if directory.resolve() not in target.parents:
            raise ValueError(f"shipped file name {name!r} leaves {directory}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return directory


def l2_norm(values: list[float]) -> float:
    return math.sqrt(sum(v * v for v in values))


def scratch_dir(prefix: str, root: str | None = None) -> Path:
    """A new directory for weight exports under `root`; by default in /dev/shm where there is one (the engines
    reload from memory)."""
    if root is None:
        root = "/dev/shm" if Path("/dev/shm").is_dir() else tempfile.gettempdir()
    return Path(tempfile.mkdtemp(prefix=prefix, dir=root))


def name_part(text: str) -> str:
    """`text` as one part of a scratch directory's name: no '_' (it separates the parts) nor '/'."""
    return re.sub(r"[^A-Za-z0-9.-]+", "-", text).strip("-") or "unnamed"


def process_scratch_dir(prefix: str, root: str | None = None, owner: str = "") -> Path:
    """`scratch_dir` named after this machine, `owner` (say, the run) and this process
    (`{prefix}{host}_{owner}_{pid}-XXXX`), after removing the directories of the same prefix, machine and owner
    whose process has ended: a killed engine or a crashed run cannot remove its own."""
    own = f"{prefix}{name_part(socket.gethostname())}_{name_part(owner) if owner else ''}_"
    directory = scratch_dir(f"{own}{os.getpid()}-", root)
    for parent in {directory.parent, Path(tempfile.gettempdir())}:  # the temp dir: where exports fall back to
        for other in of_ended_processes(parent, own):
            shutil.rmtree(other, ignore_errors=True)
    return directory


def of_ended_processes(directory: Path, prefix: str) -> list[Path]:
    """The entries of `directory` named `{prefix}{pid}-...` whose process has ended (a pid reused since counts as
    alive)."""
    ended = []
    for entry in directory.glob(f"{prefix}*"):
        pid = entry.name.removeprefix(prefix).split("-")[0]
        if pid.isdigit() and not process_alive(int(pid)):
            ended.append(entry)
    return ended


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def prune_exports(directory: Path, mode: SyncMode, oldest_kept: int) -> None:
    """Delete the exports of `mode` in `directory` older than version `oldest_kept`. The learner calls it on its own
    node before it writes version k, keeping k - 1: engines serve k - 1 until k is synced, and a replacement engine
    loads whichever is the latest."""
    for old in directory.glob(f"{mode.value}-v*"):
        version = old.name.removeprefix(f"{mode.value}-v")
        if version.isdigit() and int(version) < oldest_kept:
            shutil.rmtree(old, ignore_errors=True)


def free_bytes(path: Path) -> int:
    """Free bytes on the filesystem that holds `path`, or will (its nearest existing parent)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def export_place(directory: Path, needed: int, free: Callable[[Path], int], disk: Path) -> tuple[Path, str]:
    """Where an export of `needed` bytes meant for `directory` goes: there if its filesystem has room; else, for a
    directory in memory (/dev/shm: a container's is 64 MiB by default), the directory of the same name under `disk`,
    with the line saying so ("" when it stays). Raises OSError, one line, when there is no room."""
    if free(directory) >= needed:
        return directory, ""
    short = (f"weight export needs {needed / MIB:.0f} MiB, {directory.parent} has {free(directory) / MIB:.0f} MiB "
             f"free")
    if MEMORY_ROOT not in directory.parents:
        raise OSError(f"{short}: make room there or set rollout.weights_path to a disk with room")
    fallback = disk / directory.name
    if free(fallback) < needed:
        raise OSError(f"{short} and {disk} {free(fallback) / MIB:.0f} MiB: make room or set rollout.weights_path "
                      f"to a disk with room")
    return fallback, f"{short}: exporting to {fallback} on disk instead for the rest of the run (slower reloads)"


class ExportDirectories:
    """The directories one learner exports to: each requested one, or its fallback on disk (`export_place`) from
    the first export that did not fit in memory on. `free` and `disk` are the free-space query and the disk root
    (the temp dir), for tests."""

    def __init__(self, free: Callable[[Path], int] = free_bytes, disk: Path | None = None) -> None:
        self.free, self.disk = free, disk or Path(tempfile.gettempdir())
        self.chosen: dict[Path, Path] = {}  # requested -> where its exports go

    def place(self, requested: Path, mode: SyncMode, version: int, needed: int) -> Path:
        """The directory for `version`, after pruning the versions before `version - 1` in it and in `requested`."""
        current = self.chosen.get(requested, requested)
        for directory in {requested, current}:
            prune_exports(directory, mode, oldest_kept=version - 1)
        self.chosen[requested], moved = export_place(current, needed, self.free, self.disk)
        if moved:
            logger.warning(moved)
        return self.chosen[requested]

    def remove(self) -> None:
        for directory in set(self.chosen) | set(self.chosen.values()):
            shutil.rmtree(directory, ignore_errors=True)
        self.chosen.clear()
