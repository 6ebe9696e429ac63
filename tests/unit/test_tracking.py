"""The W&B mode choice, the JSONL tracker's files (NaN written as null), fan-out, plots and the report script."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from selfplay.config import TrackingConfig
from selfplay.plots import MetricsNotFoundError, read_metrics, write_plots
from selfplay.tracking import (
    JsonlTracker,
    MultiTracker,
    NullTracker,
    WandbChoice,
    build_tracker,
    choose_wandb_mode,
    drop_metrics_after,
    write_text_atomically,
)

ROOT = Path(__file__).parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("value", "environ", "expected"), [
    ("auto", {}, "offline"),
    ("auto", {"WANDB_API_KEY": "k" * 40}, "online"),
    ("auto", {"WANDB_API_KEY": "  "}, "offline"),
    ("auto", {"WANDB_API_KEY": "k" * 40, "WANDB_MODE": "offline"}, "offline"),
    ("auto", {"WANDB_MODE": "dryrun"}, "offline"),
    ("auto", {"WANDB_MODE": "disabled"}, "disabled"),
    ("offline", {"WANDB_API_KEY": "k" * 40}, "offline"),
    ("online", {}, "online"),
    ("online", {"WANDB_MODE": "offline"}, "online"),
    ("disabled", {"WANDB_API_KEY": "k" * 40}, "disabled"),
])
def test_choose_wandb_mode(value, environ, expected, tmp_path):
    assert choose_wandb_mode(value, {"HOME": str(tmp_path)} | environ).mode == expected


def test_wandb_login_in_netrc_goes_online_and_every_choice_says_why(tmp_path):
    home = {"HOME": str(tmp_path)}
    offline = choose_wandb_mode("auto", home)
    assert offline.mode == "offline" and "no WANDB_API_KEY" in offline.reason and "README" in offline.reason
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "p" * 40 + "\n")
    assert choose_wandb_mode("auto", home) == WandbChoice("online", "a `wandb login` key is in this machine's "
                                                                    "netrc file")
    assert choose_wandb_mode("auto", home | {"WANDB_BASE_URL": "https://wandb.example.org"}).mode == "offline"
    assert choose_wandb_mode("auto", home | {"WANDB_MODE": "offline"}).reason == "WANDB_MODE=offline"
    assert choose_wandb_mode("offline", home).reason == "tracking.wandb=offline"
    assert "WANDB_API_KEY is set" in choose_wandb_mode("auto", home | {"WANDB_API_KEY": "k" * 40}).reason
    (tmp_path / ".netrc").write_text("machine api.wandb.ai login")  # unparseable: no key, offline
    assert choose_wandb_mode("auto", home).mode == "offline"


def test_choose_wandb_mode_rejects_unknown_values():
    with pytest.raises(ValueError, match="tracking.wandb"):
        choose_wandb_mode("sometimes", {})
    with pytest.raises(ValueError, match="WANDB_MODE"):
        choose_wandb_mode("auto", {"WANDB_MODE": "loud"})


def test_jsonl_tracker_writes_metrics_tables_and_texts(tmp_path):
    tracker = JsonlTracker(tmp_path)
    tracker.log({"proposer/reward_mean": 0.25, "pool/size": 12, "learner/loss": float("nan")}, step=0)
    tracker.log({"learner/grad_norm": float("inf"), "sync/probe_gap": -float("inf"), "eval/accuracy": 0.5}, step=1)
    tracker.log_table("samples/solver", ["question", "answer", "score"],
                      [["1+1?", "2", 10.0], ["2+2?", "5", float("nan")]], step=1)
    tracker.log_text("judge/rubric", "strict v2\nScore 1-10.", step=1)
    tracker.finish()

    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    # json.loads with a hook that refuses NaN/Infinity tokens: the file is strict JSON.
    strict = [json.loads(line, parse_constant=lambda token: pytest.fail(f"non-JSON token {token}")) for line in lines]
    assert strict == [
        {"step": 0, "proposer/reward_mean": 0.25, "pool/size": 12, "learner/loss": None},
        {"step": 1, "learner/grad_norm": None, "sync/probe_gap": None, "eval/accuracy": 0.5},
    ]
    table = json.loads((tmp_path / "tables" / "samples.solver-1.json").read_text())
    assert table == {"name": "samples/solver", "step": 1, "columns": ["question", "answer", "score"],
                     "rows": [["1+1?", "2", 10.0], ["2+2?", "5", None]]}
    assert (tmp_path / "texts" / "judge.rubric-1.txt").read_text() == "strict v2\nScore 1-10."
    assert tracker.summary() == {"metrics_file": str(tmp_path / "metrics.jsonl")}


def test_jsonl_tracker_rejects_bad_input(tmp_path):
    tracker = JsonlTracker(tmp_path)
    with pytest.raises(TypeError, match="solver/reward_mean"):
        tracker.log({"solver/reward_mean": "high"}, step=0)
    with pytest.raises(ValueError, match="reserved"):
        tracker.log({"step": 3.0}, step=0)
    with pytest.raises(ValueError, match="2 values for 3 columns"):
        tracker.log_table("samples", ["a", "b", "c"], [[1, 2]], step=0)
    with pytest.raises(ValueError, match="tracker name"):
        tracker.log_text("judge rubric", "x", step=0)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_drop_metrics_after_keeps_the_rows_up_to_the_resumed_checkpoint(tmp_path):
    assert drop_metrics_after(tmp_path, 2) == 0  # no metrics file yet: nothing to do
    (tmp_path / "metrics.jsonl").write_text(
        '{"step": 0, "eval/accuracy": 0.1}\n{"step": 1, "pool/size": 5}\n{"step": 2, "pool/size": 6}\n'
        '{"step": 3, "pool/size": 7}\n{"step": 2, "eval/accuracy": 0.2}\n{"step": 4, "pool/si')
    assert drop_metrics_after(tmp_path, 2) == 2  # step 3 and the line cut off by the crash
    assert (tmp_path / "metrics.jsonl").read_text() == (
        '{"step": 0, "eval/accuracy": 0.1}\n{"step": 1, "pool/size": 5}\n{"step": 2, "pool/size": 6}\n'
        '{"step": 2, "eval/accuracy": 0.2}\n')
    assert drop_metrics_after(tmp_path, -1) == 4 and (tmp_path / "metrics.jsonl").read_text() == ""
    (tmp_path / "metrics.jsonl").write_text('{"step": 0}\nnot json\n{"step": 1}\n')
    with pytest.raises(ValueError, match="metrics.jsonl:2: not a metrics row"):
        drop_metrics_after(tmp_path, 0)


def test_write_text_atomically_leaves_the_old_text_when_the_write_fails(tmp_path):
    path = tmp_path / "wandb-run-id"
    write_text_atomically(path, "first\n")
    (tmp_path / ".wandb-run-id.tmp").mkdir()  # the temporary file cannot be written
    with pytest.raises(OSError):
        write_text_atomically(path, "second\n")
    assert path.read_text() == "first\n"
    (tmp_path / ".wandb-run-id.tmp").rmdir()
    write_text_atomically(path, "second\n")
    assert path.read_text() == "second\n" and sorted(p.name for p in tmp_path.iterdir()) == ["wandb-run-id"]


def test_multi_tracker_fans_out_and_merges_summaries(tmp_path):
    first, second = JsonlTracker(tmp_path / "a"), JsonlTracker(tmp_path / "b")
    tracker = MultiTracker([first, NullTracker(), second])
    tracker.log({"judge/reward_mean": 1.0}, step=4)
    tracker.finish()
    for directory in ("a", "b"):
        assert json.loads((tmp_path / directory / "metrics.jsonl").read_text()) == {"step": 4, "judge/reward_mean": 1.0}
    assert tracker.summary() == {"metrics_file": str(tmp_path / "b" / "metrics.jsonl")}


def test_build_tracker_disabled_is_jsonl_only(tmp_path):
    tracker = build_tracker(tmp_path, TrackingConfig(wandb="disabled"), "run", {"run": {"name": "run"}},
                            run_id=None, environ={"WANDB_API_KEY": "k" * 40})
    assert [type(each).__name__ for each in tracker.trackers] == ["JsonlTracker"]
    tracker.finish()
    assert not (tmp_path / "wandb").exists()


def _synthetic_run(run_dir: Path, steps: int = 6) -> None:
    tracker = JsonlTracker(run_dir)
    for step in range(steps):
        tracker.log({
            "proposer/reward_mean": 0.3 + 0.05 * step, "solver/reward_mean": 0.5, "judge/reward_mean": 0.9,
            "judge/question_score_mean": 6.0 + step / 10, "judge/answer_score_mean": 5.0,
            "solver/format_failure_rate": 0.2 / (step + 1), "judge/format_failure_rate": 0.0,
            "pool/size": 10 + 3 * step, "pool/accepted": 3,
            "learner/loss": 0.1 - 0.01 * step, "learner/grad_norm": float("nan") if step == 2 else 1.5,
            "learner/kl": 0.001 * step, "learner/clip_fraction": 0.05,
            "time/rollout": 12.0, "time/train": 30.0,
        }, step=step)
        if step % 3 == 2:
            tracker.log({"eval/accuracy": 0.1 * step}, step=step)


def test_write_plots_makes_one_png_per_present_group(tmp_path):
    _synthetic_run(tmp_path)
    paths = write_plots(tmp_path)
    assert [path.name for path in paths] == ["rewards.png", "judge_scores.png", "format_failures.png", "pool.png",
                                             "learner.png", "time.png", "eval.png"]  # no sync/* keys: no sync.png
    for path in paths:
        assert path.parent == tmp_path / "plots"
        assert path.read_bytes()[:8] == PNG_SIGNATURE and path.stat().st_size > 5000


def test_read_metrics_merges_steps_and_tolerates_a_truncated_last_line(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        '{"step": 1, "solver/reward_mean": 0.4}\n'
        '{"step": 0, "solver/reward_mean": 0.1}\n'
        '{"step": 1, "eval/accuracy": 0.3}\n'
        '{"step": 1, "solver/reward_mean": 0.5}\n'  # a resumed run re-logged step 1: the later value wins
        '{"step": 2, "solver/rew')
    rows = read_metrics(tmp_path)
    assert rows == [{"step": 0, "solver/reward_mean": 0.1},
                    {"step": 1, "solver/reward_mean": 0.5, "eval/accuracy": 0.3}]


def test_read_metrics_rejects_a_broken_middle_line(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 0}\nnot json\n{"step": 1}\n')
    with pytest.raises(ValueError, match="metrics.jsonl:2"):
        read_metrics(tmp_path)


def test_write_plots_without_metrics_is_a_clear_error(tmp_path):
    with pytest.raises(MetricsNotFoundError, match="metrics.jsonl: not found"):
        write_plots(tmp_path)


def _report(run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "launch" / "report.py"), str(run_dir)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_report_prints_plots_and_last_values(tmp_path):
    _synthetic_run(tmp_path)
    result = _report(tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert str(tmp_path / "plots" / "rewards.png") in lines
    last = {line.split()[0]: line.split()[1:] for line in lines if "/" in line and not line.endswith(".png")}
    assert last["proposer/reward_mean"] == ["5", "0.55"]
    assert last["learner/grad_norm"] == ["5", "1.5"]
    assert last["eval/accuracy"] == ["5", "0.5"]
    assert last["solver/format_failure_rate"][0] == "5"
    assert math.isclose(float(last["solver/format_failure_rate"][1]), 0.2 / 6, rel_tol=1e-3)


def test_report_on_a_directory_without_metrics_exits_with_one_line(tmp_path):
    result = _report(tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "metrics.jsonl: not found" in result.stderr and "Traceback" not in result.stderr
