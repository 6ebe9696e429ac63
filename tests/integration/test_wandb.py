"""A real offline W&B run: what the tracker logs is in the `.wandb` transaction log, and a resume continues the
same run id. Offline only; nothing reaches the network."""

import json
import math

import pytest

from selfplay.config import TrackingConfig
from selfplay.tracking import RUN_ID_FILE, WandbTracker, build_tracker, drop_metrics_after, read_saved_run_id
from tests.wandb_reader import offline_run_files, read_offline_config, read_offline_history, read_offline_run_ids

pytestmark = pytest.mark.integration

CONFIG = {"run": {"name": "tiny", "iterations": 2}, "learner": {"lr": 1e-5}}


@pytest.fixture(autouse=True)
def offline_environment(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")


def _metric_steps(history: list[dict]) -> dict[int, dict]:
    """Merge history rows by `_step` (W&B may split one step into several records)."""
    merged: dict[int, dict] = {}
    for row in history:
        merged.setdefault(row["_step"], {}).update(row)
    return merged


def test_offline_run_records_metrics_tables_text_and_config(tmp_path):
    tracker = WandbTracker(tmp_path, "selfplay-test", "tiny", CONFIG, mode="offline")
    for step in range(2):
        tracker.log({"proposer/reward_mean": 0.25 + step, "pool/size": 10 + step, "learner/loss": float("nan")},
                    step=step)
        tracker.log_table("samples/solver", ["question", "answer", "score"], [["1+1?", "2", 9.0 + step]], step=step)
        tracker.log_text("judge/rubric", f"strict v{step + 1}", step=step)
    summary = tracker.summary()
    tracker.finish()
    tracker.finish()  # idempotent

    assert tracker.offline_directory is not None and tracker.offline_directory.is_dir()
    assert tracker.offline_directory.parent == tmp_path / "wandb"
    assert summary["wandb_mode"] == "offline" and summary["wandb_run_id"] == tracker.run_id
    assert summary["wandb_sync_command"] == f"wandb sync {tracker.offline_directory}"
    assert offline_run_files(tmp_path) == [tracker.offline_directory / f"run-{tracker.run_id}.wandb"]
    assert read_offline_run_ids(tmp_path) == [tracker.run_id]

    steps = _metric_steps(read_offline_history(tmp_path))
    assert sorted(steps) == [0, 1]
    for step in (0, 1):
        assert steps[step]["proposer/reward_mean"] == 0.25 + step
        assert steps[step]["pool/size"] == 10 + step
        assert math.isnan(steps[step]["learner/loss"])  # NaN reaches W&B as NaN
        assert steps[step]["samples/solver"]["_type"] == "table-file"
        assert steps[step]["samples/solver"]["nrows"] == 1
        assert steps[step]["judge/rubric"]["nrows"] == step + 1  # each rubric version adds a row

    table_files = sorted((tracker.offline_directory / "files" / "media" / "table").rglob("*.table.json"))
    tables = [json.loads(path.read_text()) for path in table_files]
    solver_rows = sorted(table["data"] for table in tables if table["columns"] == ["question", "answer", "score"])
    assert solver_rows == [[["1+1?", "2", 9.0]], [["1+1?", "2", 10.0]]]
    assert {"columns": ["step", "text"], "data": [[0, "strict v1"], [1, "strict v2"]]} in [
        {"columns": table["columns"], "data": table["data"]} for table in tables]

    config = read_offline_config(tmp_path)
    assert config["run"] == CONFIG["run"] and config["learner"] == CONFIG["learner"]


def test_resume_continues_the_same_run(tmp_path):
    first = build_tracker(tmp_path, TrackingConfig(wandb="auto"), "tiny", CONFIG, run_id=None)
    first.log({"solver/reward_mean": 0.1}, step=0)
    first.log({"solver/reward_mean": 0.2}, step=1)
    run_id = first.summary()["wandb_run_id"]
    first.finish()
    assert read_saved_run_id(tmp_path) == run_id
    assert (tmp_path / RUN_ID_FILE).read_text().strip() == run_id

    # A new process after a crash: no run id passed, the saved one is picked up.
    second = build_tracker(tmp_path, TrackingConfig(wandb="auto"), "tiny", CONFIG, run_id=None)
    assert second.summary()["wandb_run_id"] == run_id
    second.log({"solver/reward_mean": 0.3}, step=2)
    sync_command = second.summary()["wandb_sync_command"]
    second.finish()

    pieces = offline_run_files(tmp_path, run_id)
    assert len(pieces) == 2
    assert sync_command == "wandb sync " + " ".join(str(piece.parent) for piece in pieces)
    assert read_offline_run_ids(tmp_path) == [run_id, run_id]
    steps = _metric_steps(read_offline_history(tmp_path, run_id))
    assert {step: row["solver/reward_mean"] for step, row in steps.items()} == {0: 0.1, 1: 0.2, 2: 0.3}
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in metrics] == [0, 1, 2]


def test_iterations_rerun_after_a_resume_are_kept_by_wandb_and_logged_once_in_jsonl(tmp_path):
    # The killed process logged the rubric at iteration 1, then the base evaluation (iteration 0), iterations 1-3;
    # its last checkpoint was iteration 2, so the resumed process re-runs iteration 3 and goes on to 4.
    first = build_tracker(tmp_path, TrackingConfig(wandb="offline"), "tiny", CONFIG)
    first.log_text("judge/rubric", "strict v1", step=1)
    first.log({"eval/accuracy": 0.1}, step=0)
    for iteration in (1, 2, 3):
        first.log({"solver/reward_mean": iteration / 10}, step=iteration)
        first.log_table("samples", ["question"], [[f"q{iteration}"]], step=iteration)
    run_id = first.summary()["wandb_run_id"]
    first.finish()

    assert drop_metrics_after(tmp_path, 2) == 1
    second = build_tracker(tmp_path, TrackingConfig(wandb="offline"), "tiny", CONFIG)
    for iteration in (3, 4):
        second.log({"solver/reward_mean": iteration / 10 + 0.05}, step=iteration)
    second.finish()

    history = read_offline_history(tmp_path, run_id)
    assert [row["_step"] for row in history] == [0, 1, 2, 3, 4, 5, 6]  # none at or below an earlier one
    assert [row["iteration"] for row in history] == [1, 0, 1, 2, 3, 3, 4]
    assert [row.get("solver/reward_mean") for row in history] == [None, None, 0.1, 0.2, 0.3, 0.35, 0.45]
    assert history[1]["eval/accuracy"] == 0.1 and history[4]["samples"]["nrows"] == 1
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(row["step"], row.get("solver/reward_mean")) for row in metrics] == [
        (0, None), (1, 0.1), (2, 0.2), (3, 0.35), (4, 0.45)]
    assert sorted(path.name for path in tmp_path.iterdir() if path.is_file()) == [
        "metrics.jsonl", "wandb-next-step", RUN_ID_FILE]  # no temporary file left behind
    assert (tmp_path / "wandb-next-step").read_text() == "7\n"


def test_explicit_run_id_is_used_and_saved(tmp_path):
    tracker = WandbTracker(tmp_path, "selfplay-test", "tiny", CONFIG, mode="offline", run_id="fixedid1")
    tracker.log({"eval/accuracy": 0.5}, step=0)
    tracker.finish()
    assert tracker.run_id == "fixedid1" and read_saved_run_id(tmp_path) == "fixedid1"
    assert read_offline_run_ids(tmp_path) == ["fixedid1"]
