"""What the learner hands the engines after an update: where the weights are, in which form, and how an engine
checks that it serves them (a probe sequence with the learner's logprobs; the check itself is rollout.probe)."""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

MIN_NOISE = 1e-6  # a noise norm measured as 0 (bit-identical kernels) still admits rounding differences later


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

    def advanced(self, expected: tuple[float, ...]) -> SyncProbe:
        """The probe of the next version: the learner's new logprobs, with these as the previous ones."""
        return SyncProbe(self.token_ids, tuple(expected), self.expected, self.tolerance, self.noise)

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


def process_scratch_dir(prefix: str, root: str | None = None) -> Path:
    """`scratch_dir` named after this process (`{prefix}{pid}-XXXX`), after removing the directories of `prefix`
    whose process has ended: an engine the pool killed (hung, crashed) cannot remove its own copy."""
    directory = scratch_dir(f"{prefix}{os.getpid()}-", root)
    for other in of_ended_processes(directory.parent, prefix):
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
    node when it writes version k, keeping k - 1: engines serve k - 1 until k is synced, and a replacement engine
    loads whichever is the latest."""
    for old in directory.glob(f"{mode.value}-v*"):
        version = old.name.removeprefix(f"{mode.value}-v")
        if version.isdigit() and int(version) < oldest_kept:
            shutil.rmtree(old, ignore_errors=True)
