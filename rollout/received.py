"""Weights received from another node, on this engine's node: exports written on the learner's node arrive as a
Ray object and are written to this process's scratch directory. The copy the engine serves is kept until the next
version is served (an adapter engine may read its files again), and a copy the engine failed on is removed."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from learner.weights import export_place, write_files

logger = logging.getLogger(__name__)


class ReceivedCopies:
    def __init__(self, make_directory: Callable[[], Path], free: Callable[[Path], int], disk: Path) -> None:
        self._make_directory, self._free, self._disk = make_directory, free, disk
        self._directory: Path | None = None  # where the next copy is written
        self.served: Path | None = None

    def write(self, files: dict[str, bytes], name: str) -> Path:
        """`files` written as the copy `name`, beside the served copy (another disk where this one lacks room)."""
        if self._directory is None:
            self._directory = self._make_directory()
        place, moved = export_place(self._directory, sum(map(len, files.values())), self._free, self._disk)
        if moved:
            logger.warning(moved)
            if self.served is None or self.served.parent != self._directory:
                shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = place
        return write_files(files, self._directory / name)

    def now_served(self, copy: Path) -> None:
        """The engine serves `copy`: the copy served before it is removed."""
        previous, self.served = self.served, copy
        if previous is not None and previous != copy:
            self._remove(previous)

    def failed(self, copy: Path) -> None:
        """The engine could not serve `copy`: it is removed; the served copy stays."""
        if copy != self.served:
            shutil.rmtree(copy, ignore_errors=True)

    def close(self) -> None:
        if self.served is not None:
            self._remove(self.served)
            self.served = None
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)

    def _remove(self, copy: Path) -> None:
        shutil.rmtree(copy, ignore_errors=True)
        if copy.parent != self._directory:  # a directory the copies have since moved out of
            shutil.rmtree(copy.parent, ignore_errors=True)
