"""Run checkpoints, written atomically: a crash mid-write leaves the previous checkpoint as the latest.

Layout: RUN_DIR/checkpoints/iter-000003/{learner/ (DeepSpeed: adapter, optimizer, RNG), state.json (iteration,
weight version, question pool, rubric)} and RUN_DIR/checkpoints/latest naming the newest complete one. The
directory is built under a `.partial` name and renamed; `latest` is replaced through a temporary file.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

LATEST = "latest"
STATE_FILE = "state.json"


def checkpoint_root(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def checkpoint_name(iteration: int) -> str:
    return f"iter-{iteration:06d}"


def save_checkpoint(run_dir: Path, iteration: int, save_learner: Callable[[str], None], state: dict[str, Any],
                    keep: int = 2, protect: frozenset[str] | set[str] = frozenset()) -> Path:
    """Write the checkpoint, then delete all but the newest `keep` and those named in `protect`."""
    root = checkpoint_root(run_dir)
    final = root / checkpoint_name(iteration)
    partial = root / f"{checkpoint_name(iteration)}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_learner(str(partial / "learner"))
    (partial / STATE_FILE).write_text(json.dumps(state))
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)
    pointer = root / f".{LATEST}.tmp"
    pointer.write_text(final.name)
    os.replace(pointer, root / LATEST)
    for old in sorted(root.glob("iter-*"))[:-keep]:
        if old != final and not old.name.endswith(".partial") and old.name not in protect:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = checkpoint_root(run_dir) / LATEST
    if not pointer.is_file():
        return None
    directory = checkpoint_root(run_dir) / pointer.read_text().strip()
    if not (directory / STATE_FILE).is_file():
        raise FileNotFoundError(f"checkpoint {directory} named by {pointer} is incomplete or missing")
    return directory


def load_state(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / STATE_FILE).read_text())


@dataclass(frozen=True)
class StartPoint:
    """Where a run (new or resumed) starts, from the checkpoints in its directory."""

    checkpoint: Path | None  # restored when set
    next_iteration: int
    fresh: bool  # no checkpoint: the base-model evaluation and the SFT cold start run, as in a new run
    last_kept_step: int  # metrics rows of later steps are the killed process's and are logged again


def start_point(run_dir: Path) -> StartPoint:
    """The latest complete checkpoint's next iteration; none (a run killed before checkpoint 0, which the SFT cold
    start writes, or before the first checkpoint without SFT) starts over."""
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        return StartPoint(None, 1, True, -1)
    iteration = load_state(checkpoint)["iteration"]
    return StartPoint(checkpoint, iteration + 1, False, iteration)
