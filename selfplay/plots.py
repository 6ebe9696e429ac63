"""PNG plots of a run's main curves, read from RUN_DIR/metrics.jsonl (written by `tracking.JsonlTracker`).

One PNG per group (rewards per role, judge scores, format failures, pool, learner, sync, timings, eval), one line
per metric key, x = iteration step; groups and keys missing from the file are skipped. Metrics on a common 0-1
scale share one axes; the others get one panel per key. Uses matplotlib's Agg canvas directly (no pyplot state).
Left out: sample tables and texts (W&B shows those) and anything that needs W&B.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfplay.tracking import METRICS_FILE

PLOTS_DIRECTORY = "plots"


class MetricsNotFoundError(FileNotFoundError):
    """The run directory has no metrics.jsonl (wrong directory, or the run never finished an iteration)."""


@dataclass(frozen=True)
class PlotGroup:
    """One PNG: the keys `select` picks, on shared axes or one panel per key."""

    name: str
    title: str
    select: Callable[[str], bool]
    shared_axes: bool


def _keys(*names: str) -> Callable[[str], bool]:
    return lambda key: key in names


def _prefix(prefix: str) -> Callable[[str], bool]:
    return lambda key: key.startswith(prefix)


DIVERSITY_SUFFIXES = ("/distinct_2", "/pairwise_similarity", "/near_duplicate_share")

PLOT_GROUPS = (
    PlotGroup("rewards", "Mean reward per role",
              _keys("proposer/reward_mean", "solver/reward_mean", "judge/reward_mean"), shared_axes=True),
    PlotGroup("judge_scores", "Judge scores", _keys("judge/question_score_mean", "judge/answer_score_mean"),
              shared_axes=True),
    PlotGroup("format_failures", "Format failure rates per role (the reasons are in W&B and metrics.jsonl)",
              lambda key: key.endswith("/format_failure_rate"), shared_axes=True),
    PlotGroup("pool", "Question pool",
              lambda key: key.startswith("pool/") and not key.endswith(DIVERSITY_SUFFIXES), shared_axes=False),
    PlotGroup("curriculum", "Question difficulty: operations, largest number, solve rate of accepted proposals",
              _prefix("curriculum/"), shared_axes=False),
    PlotGroup("diversity", "Diversity of proposals and pool",
              lambda key: key.startswith(("proposer/", "pool/")) and key.endswith(DIVERSITY_SUFFIXES),
              shared_axes=False),
    PlotGroup("learner", "Learner",
              _keys("learner/loss", "learner/grad_norm", "learner/kl", "learner/clip_fraction", "learner/drift_kl"),
              shared_axes=False),
    PlotGroup("sync", "Weight sync", _keys("sync/probe_gap", "sync/seconds"), shared_axes=False),
    PlotGroup("time", "Phase timings (seconds)", _prefix("time/"), shared_axes=False),
    PlotGroup("eval", "Evaluation", _prefix("eval/"), shared_axes=False),
)

SUMMARY_KEYS = ("proposer/reward_mean", "solver/reward_mean", "judge/reward_mean", "judge/question_score_mean",
                "judge/answer_score_mean", "pool/size", "pool/accepted", "learner/loss", "learner/grad_norm",
                "learner/kl", "sync/probe_gap", "eval/accuracy")
"""The metrics `launch/report.py` shows the last value of (format failure rates are added when present)."""


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """One dict per step, sorted by step. Rows of the same step merge, later values winning (a resumed run
    re-logs the iteration that crashed). A truncated last line (a crash mid-write) is skipped."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise MetricsNotFoundError(f"{path}: not found; is {run_dir} a run directory with at least one iteration?")
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    by_step: dict[int, dict[str, Any]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines) and not text.endswith("\n"):
                break
            raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            raise ValueError(f"{path}:{number}: expected an object with an integer 'step'")
        by_step.setdefault(row["step"], {}).update(row)
    return [by_step[step] for step in sorted(by_step)]


def series(rows: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) where `key` has a finite number; nulls (NaN/inf when logged) and gaps are left out."""
    steps, values = [], []
    for row in rows:
        value = row.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            steps.append(row["step"])
            values.append(float(value))
    return steps, values


def last_values(rows: list[dict[str, Any]], keys: list[str]) -> dict[str, tuple[int, float]]:
    """key -> (step, value) of its last finite value, for the keys that have one."""
    result = {}
    for key in keys:
        steps, values = series(rows, key)
        if steps:
            result[key] = (steps[-1], values[-1])
    return result


def all_keys(rows: list[dict[str, Any]]) -> list[str]:
    """Every metric key in first-seen order."""
    return list(dict.fromkeys(key for row in rows for key in row if key != "step"))


def _draw_group(group: PlotGroup, rows: list[dict[str, Any]], keys: list[str], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = 1 if group.shared_axes else len(keys)
    columns = min(panels, 2)
    panel_rows = math.ceil(panels / columns)
    figure = Figure(figsize=(6 * columns, 3.5 * panel_rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes_list = figure.subplots(panel_rows, columns, squeeze=False).flatten()
    for index, key in enumerate(keys):
        axes = axes_list[0 if group.shared_axes else index]
        steps, values = series(rows, key)
        axes.plot(steps, values, marker="o" if len(steps) <= 30 else None, markersize=3, label=key)
        if not group.shared_axes:
            axes.set_title(key, fontsize=10)
    for axes in axes_list[:panels]:
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
        if group.shared_axes:
            axes.legend(fontsize=8)
    for axes in axes_list[panels:]:
        axes.set_visible(False)
    figure.suptitle(group.title)
    figure.savefig(path, dpi=100)


def write_plots(run_dir: str | Path) -> list[Path]:
    """Write RUN_DIR/plots/<group>.png for each group with data; returns the paths written."""
    rows = read_metrics(run_dir)
    keys = all_keys(rows)
    directory = Path(run_dir) / PLOTS_DIRECTORY
    written = []
    for group in PLOT_GROUPS:
        group_keys = [key for key in keys if group.select(key) and series(rows, key)[0]]
        if not group_keys:
            continue
        directory.mkdir(exist_ok=True)
        path = directory / f"{group.name}.png"
        _draw_group(group, rows, group_keys, path)
        written.append(path)
    return written
