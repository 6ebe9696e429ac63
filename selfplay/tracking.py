"""The logger seam: a small `Tracker` protocol with JSONL, W&B, null and fan-out implementations.

Only the driver logs. Callers namespace their keys (`proposer/*`, `solver/*`, `judge/*`, `pool/*`, `rollout/*`,
`learner/*`, `sync/*`, `time/*`, `eval/*`); trackers never rename. Callers key everything by the iteration; the JSONL
tracker writes it as `step`, W&B as the metric `iteration` (its x-axis) beside a W&B step that only grows, so the
iterations a resumed run re-runs are kept, not dropped. The JSONL tracker is always on (plots and
`launch/report.py` read it) and writes strictly valid JSON: NaN and infinities become null there, while W&B
receives them as they are. W&B is imported lazily, so the pure packages that import this module's types stay free
of it. Left out: computing metrics (pure functions return them) and reading the W&B transaction log back
(`tests/wandb_reader.py`).
"""

from __future__ import annotations

import json
import math
import netrc
import numbers
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from selfplay.config import TrackingConfig

METRICS_FILE = "metrics.jsonl"
TABLES_DIRECTORY = "tables"
TEXTS_DIRECTORY = "texts"
RUN_ID_FILE = "wandb-run-id"
"""Holds the W&B run id inside the run directory, so a resumed run continues the same W&B run."""
STEP_FILE = "wandb-next-step"
"""The first W&B step no process of this run has used (offline, W&B itself restarts a resumed run at step 0)."""
ITERATION_KEY = "iteration"
WANDB_MODES = ("online", "offline", "disabled")
_CONFIG_MODES = ("auto", *WANDB_MODES)
_ENVIRONMENT_MODE_ALIASES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline",
                             "disabled": "disabled"}
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


class Tracker(Protocol):
    """Where the driver sends metrics, sample tables and texts (the judge rubric), keyed by the iteration."""

    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def log_table(self, name: str, columns: list[str], rows: list[list], step: int) -> None: ...

    def log_text(self, name: str, text: str, step: int) -> None: ...

    def summary(self) -> dict[str, Any]:
        """Where the data went (files, W&B run id, offline directory, sync command), for the driver to print."""
        ...

    def finish(self) -> None: ...


@dataclass(frozen=True)
class WandbChoice:
    """The W&B mode of a run and, in words, why (the driver prints both: a run never goes offline silently)."""

    mode: str  # 'online', 'offline' or 'disabled' (no W&B tracker at all)
    reason: str


def wandb_login_exists(environ: Mapping[str, str]) -> bool:
    """Whether `wandb login` left a key for the W&B host in the netrc file ($NETRC, else ~/.netrc)."""
    host = urlparse(environ.get("WANDB_BASE_URL", "").strip() or "https://api.wandb.ai").hostname
    path = Path(environ.get("NETRC") or Path(environ.get("HOME") or Path.home()) / ".netrc")
    try:
        entry = netrc.netrc(str(path)).authenticators(host) if path.is_file() else None
    except (netrc.NetrcParseError, OSError):
        return False
    return bool(entry and entry[2])


def choose_wandb_mode(config_value: str, environ: Mapping[str, str]) -> WandbChoice:
    """The W&B mode for a `tracking.wandb` value, with the reason.

    'auto' follows an explicit WANDB_MODE in the environment (so `WANDB_MODE=offline` always keeps a run off the
    network), else goes online when a key is at hand (WANDB_API_KEY, or a `wandb login` in the netrc file) and
    offline otherwise. Other values pass through. The key itself is never read into the run's records.
    """
    if config_value not in _CONFIG_MODES:
        raise ValueError(f"tracking.wandb: {config_value!r} is not one of {', '.join(_CONFIG_MODES)}")
    if config_value != "auto":
        return WandbChoice(config_value, f"tracking.wandb={config_value}")
    environment_mode = environ.get("WANDB_MODE", "").strip().lower()
    if environment_mode:
        if environment_mode not in _ENVIRONMENT_MODE_ALIASES:
            raise ValueError(f"WANDB_MODE={environment_mode!r} is not one of {', '.join(_ENVIRONMENT_MODE_ALIASES)}")
        return WandbChoice(_ENVIRONMENT_MODE_ALIASES[environment_mode], f"WANDB_MODE={environment_mode}")
    if environ.get("WANDB_API_KEY", "").strip():
        return WandbChoice("online", "WANDB_API_KEY is set in the driver's environment")
    if wandb_login_exists(environ):
        return WandbChoice("online", "a `wandb login` key is in this machine's netrc file")
    return WandbChoice("offline", "no WANDB_API_KEY in the driver's environment and no `wandb login` on this "
                                  "machine (a key set in the shell that runs `ray job submit` does not reach the "
                                  "job: see the README)")


def _check_name(name: str) -> None:
    if not _NAME_PATTERN.match(name):
        raise ValueError(f"tracker name {name!r}: use letters, digits, '_', '.', '-' and '/' between parts")


def _check_metrics(metrics: Mapping[str, Any]) -> None:
    for key, value in metrics.items():
        _check_name(key)
        if not isinstance(value, numbers.Real):
            raise TypeError(f"metric {key!r}: expected a number, got {type(value).__name__} {value!r}")


def json_safe(value: Any) -> Any:
    """`value` with NaN and infinities replaced by None (recursively), numbers as plain Python numbers."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, Sequence):
        return [json_safe(item) for item in value]
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as JSON")


def write_text_atomically(path: Path, text: str) -> None:
    """A crash mid-write leaves the old file whole: write a temporary file beside it, then rename it over."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def _file_stem(name: str, step: int) -> str:
    return f"{name.replace('/', '.')}-{step}"


class JsonlTracker:
    """Appends `{"step": s, **metrics}` lines to RUN_DIR/metrics.jsonl; tables and texts go to files per step.

    Tables: RUN_DIR/tables/<name>-<step>.json with `columns` and `rows`; texts: RUN_DIR/texts/<name>-<step>.txt
    ('/' in a name becomes '.'). Each call opens, writes and closes, so a crash loses at most the line in flight.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / METRICS_FILE

    def log(self, metrics: dict[str, float], step: int) -> None:
        _check_metrics(metrics)
        if "step" in metrics:
            raise ValueError("metric key 'step' is reserved for the iteration; namespace it, e.g. 'learner/step'")
        line = json.dumps({"step": int(step), **json_safe(metrics)}, allow_nan=False)
        with self.metrics_path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def log_table(self, name: str, columns: list[str], rows: list[list], step: int) -> None:
        _check_name(name)
        for index, row in enumerate(rows):
            if len(row) != len(columns):
                raise ValueError(f"table {name!r} row {index}: {len(row)} values for {len(columns)} columns")
        directory = self.run_dir / TABLES_DIRECTORY
        directory.mkdir(exist_ok=True)
        record = {"name": name, "step": int(step), "columns": list(columns), "rows": json_safe(rows)}
        (directory / f"{_file_stem(name, step)}.json").write_text(json.dumps(record, allow_nan=False) + "\n")

    def log_text(self, name: str, text: str, step: int) -> None:
        _check_name(name)
        directory = self.run_dir / TEXTS_DIRECTORY
        directory.mkdir(exist_ok=True)
        (directory / f"{_file_stem(name, step)}.txt").write_text(text, encoding="utf-8")

    def summary(self) -> dict[str, Any]:
        return {"metrics_file": str(self.metrics_path)}

    def finish(self) -> None:
        """Nothing to flush: every call already wrote its file."""


def drop_metrics_after(run_dir: str | Path, last_step: int) -> int:
    """Remove the rows of RUN_DIR/metrics.jsonl whose step is above `last_step` (and a truncated last line): a
    resumed run re-runs those iterations and logs them again. Returns how many rows went."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return 0
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = []
    for number, line in enumerate(lines, start=1):
        try:
            step = json.loads(line)["step"]
        except (json.JSONDecodeError, KeyError, TypeError):
            if number == len(lines):  # the line in flight when the process died
                continue
            raise ValueError(f"{path}:{number}: not a metrics row") from None
        if step <= last_step:
            kept.append(line)
    if len(kept) < len(lines):
        write_text_atomically(path, "".join(line + "\n" for line in kept))
    return len(lines) - len(kept)


def read_saved_run_id(run_dir: str | Path) -> str | None:
    """The W&B run id an earlier process of this run saved, or None for a fresh run."""
    path = Path(run_dir) / RUN_ID_FILE
    if not path.exists():
        return None
    run_id = path.read_text().strip()
    return run_id or None


def offline_run_directories(run_dir: str | Path, run_id: str | None = None) -> list[Path]:
    """W&B offline run directories under RUN_DIR/wandb (only `run_id`'s when given), oldest first.

    A resumed run writes one directory per process: `offline-run-<YYYYMMDD_HHMMSS>-<id>[-<n>]`.
    """
    directories = []
    for path in (Path(run_dir) / "wandb").glob("offline-run-*"):
        match = re.fullmatch(r"offline-run-(\d{8}_\d{6})-(.+?)(?:-(\d+))?", path.name)
        if not path.is_dir() or match is None:
            continue
        if run_id is not None and not (path / f"run-{run_id}.wandb").exists():
            continue
        directories.append((match.group(1), int(match.group(3) or 0), path))
    return [path for _, _, path in sorted(directories)]


class WandbTracker:
    """A real W&B run (online or offline) under RUN_DIR/wandb; one global step, the `step=` of `wandb.log`.

    The run id is saved to RUN_DIR/wandb-run-id; a later tracker for the same run directory (after a crash) picks
    it up when no `run_id` is given and resumes the same W&B run. Texts (the judge rubric) are logged as a table
    `<name>` with one row per version seen by this process, so a rubric change shows as a new row in the UI.
    W&B drops a log whose step is below the run's current step, so the W&B step is not the iteration: each change
    of iteration takes the next step, counted on across processes in RUN_DIR/wandb-next-step, and every row carries
    `iteration`, the x-axis of every chart. A resumed run's re-run iterations (and the base model's evaluation,
    logged after the rubric of iteration 1) are thus kept; a re-run iteration has two points, the later one current.
    """

    def __init__(self, run_dir: str | Path, project: str, run_name: str, config_dict: dict[str, Any], mode: str,
                 run_id: str | None = None) -> None:
        import wandb

        if mode not in ("online", "offline"):
            raise ValueError(f"WandbTracker mode must be 'online' or 'offline', got {mode!r}")
        self.run_dir = Path(run_dir).resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.mode = mode
        run_id = run_id or read_saved_run_id(self.run_dir)
        self._wandb = wandb
        # silent: the driver says in one line which mode and why, and where the data went; W&B's own banners
        # are not for this log. W&B also takes this project's `agents` package for the OpenAI Agents SDK and
        # advertises its Weave tracer; turn that integration off.
        os.environ.setdefault("WANDB_DISABLE_WEAVE", "true")
        self._run = wandb.init(project=project, name=run_name, dir=str(self.run_dir), mode=mode, id=run_id,
                               resume="allow", config=config_dict, settings=wandb.Settings(silent=True))
        self.run_id: str = self._run.id
        write_text_atomically(self.run_dir / RUN_ID_FILE, self.run_id + "\n")
        self._run.define_metric(ITERATION_KEY)
        self._run.define_metric("*", step_metric=ITERATION_KEY)
        saved_step = self.run_dir / STEP_FILE
        self._next_step = max(int(saved_step.read_text()) if saved_step.is_file() else 0, self._run.step)
        self._iteration: int | None = None
        self.offline_directory: Path | None = Path(self._run.sync_dir) if mode == "offline" else None
        self.url: str | None = self._run.url if mode == "online" else None
        self._text_rows: dict[str, list[list]] = {}
        self._finished = False

    def _log(self, data: dict[str, Any], iteration: int) -> None:
        if iteration != self._iteration:
            self._iteration = iteration
            self._step = self._next_step
            self._next_step += 1
            write_text_atomically(self.run_dir / STEP_FILE, f"{self._next_step}\n")  # before W&B can keep the step
        self._run.log(data | {ITERATION_KEY: iteration}, step=self._step)

    def log(self, metrics: dict[str, float], step: int) -> None:
        _check_metrics(metrics)
        self._log(dict(metrics), int(step))

    def log_table(self, name: str, columns: list[str], rows: list[list], step: int) -> None:
        _check_name(name)
        self._log({name: self._wandb.Table(columns=list(columns), data=[list(row) for row in rows])}, int(step))

    def log_text(self, name: str, text: str, step: int) -> None:
        _check_name(name)
        rows = self._text_rows.setdefault(name, [])
        rows.append([int(step), text])
        self._log({name: self._wandb.Table(columns=["step", "text"], data=[list(row) for row in rows])}, int(step))

    def sync_command(self) -> str | None:
        """`wandb sync` for every offline piece of this run (one per resumed process); None when online."""
        if self.mode != "offline":
            return None
        directories = offline_run_directories(self.run_dir, self.run_id) or [self.offline_directory]
        return "wandb sync " + " ".join(str(directory) for directory in directories)

    def summary(self) -> dict[str, Any]:
        result: dict[str, Any] = {"wandb_mode": self.mode, "wandb_run_id": self.run_id}
        if self.offline_directory is not None:
            result["wandb_offline_directory"] = str(self.offline_directory)
            result["wandb_sync_command"] = self.sync_command()
        if self.url is not None:
            result["wandb_url"] = self.url
        return result

    def finish(self) -> None:
        if not self._finished:
            self._finished = True
            self._run.finish()


class NullTracker:
    """Drops everything; for tests and tools that run the loop without keeping records."""

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_table(self, name: str, columns: list[str], rows: list[list], step: int) -> None:
        pass

    def log_text(self, name: str, text: str, step: int) -> None:
        pass

    def summary(self) -> dict[str, Any]:
        return {}

    def finish(self) -> None:
        pass


class MultiTracker:
    """Sends every call to each tracker in order; `summary` merges theirs."""

    def __init__(self, trackers: Sequence[Tracker], wandb_choice: WandbChoice | None = None) -> None:
        self.trackers = list(trackers)
        self.wandb_choice = wandb_choice

    def log(self, metrics: dict[str, float], step: int) -> None:
        for tracker in self.trackers:
            tracker.log(metrics, step)

    def log_table(self, name: str, columns: list[str], rows: list[list], step: int) -> None:
        for tracker in self.trackers:
            tracker.log_table(name, columns, rows, step)

    def log_text(self, name: str, text: str, step: int) -> None:
        for tracker in self.trackers:
            tracker.log_text(name, text, step)

    def summary(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for tracker in self.trackers:
            merged.update(tracker.summary())
        return merged

    def finish(self) -> None:
        for tracker in self.trackers:
            tracker.finish()


def build_tracker(run_dir: str | Path, tracking_config: TrackingConfig, run_name: str, config_dict: dict[str, Any],
                  run_id: str | None = None, environ: Mapping[str, str] | None = None) -> MultiTracker:
    """The JSONL tracker, plus a W&B tracker unless the chosen mode is 'disabled'.

    `run_id` None resumes the id saved in RUN_DIR (if any); `environ` defaults to `os.environ`.
    """
    choice = choose_wandb_mode(tracking_config.wandb, os.environ if environ is None else environ)
    trackers: list[Tracker] = [JsonlTracker(run_dir)]
    if choice.mode != "disabled":
        trackers.append(WandbTracker(run_dir, tracking_config.project, run_name, config_dict, choice.mode, run_id))
    return MultiTracker(trackers, wandb_choice=choice)
