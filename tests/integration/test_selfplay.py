"""End to end: a real self-play run through Ray, vLLM and DeepSpeed with the tiny model, stopped mid-iteration
and resumed; the offline W&B run holds the per-role metrics and the sample table."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from rollout.shm_segments import NOTE_PREFIX, SHM_DIR
from selfplay.tracking import read_saved_run_id
from tests.wandb_reader import read_offline_history, read_offline_run_ids

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _overrides(model_dir: Path, output_dir: Path, iterations: int) -> list[str]:
    return [f"model.path={model_dir}", f"run.output_dir={output_dir}", f"run.iterations={iterations}",
            "model.max_model_len=512", "rollout.kv_cache_gb=0.25", "proposer.batch_size=2", "proposer.max_tokens=64",
            "solver.batch_size=4", "solver.num_answers=4", "solver.max_tokens=96", "judge.max_tokens=24",
            "tracking.wandb=offline"]


def _evolve(log_path: Path, *args: str) -> subprocess.Popen:
    """The driver in its own process group, its output in a file (a pipe nobody reads would fill and block it)."""
    environment = os.environ | {"WANDB_MODE": "offline", "RAY_ADDRESS": ""}
    return subprocess.Popen([sys.executable, str(ROOT / "launch/evolve.py"), *args], cwd=ROOT, env=environment,
                            stdout=log_path.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def _finish(process: subprocess.Popen, log_path: Path, timeout: float) -> str:
    process.wait(timeout=timeout)
    return log_path.read_text()


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_run_killed_mid_iteration_resumes_at_next_iteration(tiny_model_dir, tmp_path):
    first_log, resume_log = tmp_path / "first.log", tmp_path / "resume.log"
    output_dir = tmp_path / "runs"
    held_out = tmp_path / "held-out.jsonl"
    held_out.write_text("".join(json.dumps({"question": f"What is {i} + 2?", "answer": str(i + 2)}) + "\n"
                                for i in range(4)))
    evaluation = ["eval.every=2", f"eval.data={held_out}", "eval.limit=4", "eval.max_tokens=16",
                  f"eval.sets.second.data={held_out}", "eval.sets.second.limit=2", "eval.guard.action=rollback"]
    # dynamic sampling: the random tiny model answers every pool question wrong, so each iteration refills once
    refill = ["filter_groups.enabled=true", "filter_groups.max_rounds=1"]
    cold_start = ["sft.steps=2", "sft.batch_size=4"]  # synced as version 1, checkpointed as iteration 0
    verbose = ["tracking.console=verbose"]  # phase lines: "iteration 3/3: propose" says the iteration has begun
    notes_before = set(SHM_DIR.glob(f"{NOTE_PREFIX}*"))
    process = _evolve(first_log, "--config", "configs/tiny-cpu.yaml",
                      *_overrides(tiny_model_dir, output_dir, iterations=3), *evaluation, *refill, *cold_start,
                      *verbose)
    checkpoint_pointer = None
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and process.poll() is None:
        pointers = list(output_dir.glob("*/checkpoints/latest"))
        if pointers and pointers[0].read_text().strip() == "iter-000002" and "iteration 3/3: propose" in (
                first_log.read_text()):
            checkpoint_pointer = pointers[0]
            break
        time.sleep(0.2)
    assert checkpoint_pointer is not None, f"no checkpoint of iteration 2: {first_log.read_text()[-3000:]}"
    os.killpg(process.pid, signal.SIGKILL)  # mid-iteration 3: the driver and everything it started
    process.wait()
    # its engine noted the shared memory of its processes, which no one removed: the resumed run's engine sweeps it
    killed_notes = set(SHM_DIR.glob(f"{NOTE_PREFIX}*")) - notes_before
    killed_segments = {SHM_DIR / name for note in killed_notes for name in note.read_text().split()}
    assert killed_segments and all(segment.exists() for segment in killed_segments)
    hosts = [int(note.name.removeprefix(NOTE_PREFIX).split("-")[0]) for note in killed_notes]
    for pid in hosts:  # an engine's host (a Ray worker) may outlive the driver by a moment
        try:
            psutil.Process(pid).wait(timeout=30)
        except psutil.NoSuchProcess:
            continue
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    killed_exports = list(shm.glob(f"selfplay-weights-*_{process.pid}-*"))  # named {host}_{run}_{pid}
    assert killed_exports, "the killed run left no weight export: the premise of the sweep below changed"
    run_dir = checkpoint_pointer.parents[1]
    assert [row["step"] for row in _metrics(run_dir)] == [0, 1, 2]  # 0: the base model's held-out evaluation
    first = _metrics(run_dir)[1]
    assert first["sft/steps"] == 2.0 and first["sft/nll_last"] > 0 and first["sync/version"] == 2.0

    resumed = _evolve(resume_log, "--resume", str(run_dir))
    output = _finish(resumed, resume_log, timeout=900)
    assert resumed.returncode == 0, output[-4000:]
    assert "next iteration 3" in output
    assert "Token authentication" not in output  # Ray's warning at every local start (selfplay/console.py)
    # the killed run's weights were swept by the resumed one, which removed its own at the end
    assert not any(path.exists() for path in killed_exports)
    assert list(shm.glob(f"selfplay-weights-*_{resumed.pid}-*")) == []
    assert not any(path.exists() for path in killed_notes | killed_segments)
    steps = [row["step"] for row in _metrics(run_dir)]
    assert steps == [0, 1, 2, 3], "an iteration or the base evaluation was lost or repeated"
    evaluated = {row["step"]: row for row in _metrics(run_dir) if "eval/accuracy" in row}
    assert sorted(evaluated) == [0, 2, 3] and all(row["eval/n"] == 4 for row in evaluated.values())
    assert all(row["eval/second/n"] == 2 and "eval/second/lenient_accuracy" in row for row in evaluated.values())
    # iteration 2's evaluation is paired with the base model's rows of step 0 (kept in the run directory)
    assert {"eval/vs_base_strict", "eval/vs_base_lenient", "eval/second/vs_base_lenient"} <= set(evaluated[2])
    assert "held-out data (n=4, paired with the base model): accuracy " in first_log.read_text()
    assert sorted(path.name for path in (run_dir / "eval").iterdir()) == [
        "data-0.jsonl", "data-2.jsonl", "data-3.jsonl", "second-0.jsonl", "second-2.jsonl", "second-3.jsonl"]
    assert "held-out data (n=4, paired with the base model): accuracy " in output  # the last iteration's
    assert "done: 1 iteration(s) in " in output
    assert f"adapter (standard PEFT, the final weights): {run_dir / 'adapter'}" in output
    assert json.loads((run_dir / "adapter" / "adapter_config.json").read_text())["peft_type"] == "LORA"
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    best = json.loads((run_dir / "best.json").read_text())
    assert set(best) == {"data", "second"} and best["data"]["metric"] == "lenient_accuracy"
    for record in best.values():  # the random tiny model never beats the base model's step-0 score
        assert record["checkpoint"] is None or (run_dir / "checkpoints" / record["checkpoint"]).is_dir()
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "iter-000003"
    assert (run_dir / "plots" / "time.png").is_file()

    history = read_offline_history(run_dir)
    logged_iterations = sorted({row["iteration"] for row in history if "solver/samples" in row})
    # The JSONL above is the complete record; W&B keeps what its service flushed before the SIGKILL, and the
    # resumed process continues the same W&B run id, at W&B steps after the killed one's.
    assert 3 in logged_iterations
    assert all(row["_step"] <= after["_step"] for row, after in zip(history, history[1:]))
    assert set(read_offline_run_ids(run_dir)) == {read_saved_run_id(run_dir)}
    last = next(row for row in history if row["iteration"] == 3 and "solver/samples" in row)
    for key in ("proposer/samples", "solver/samples", "solver/format_failure_rate", "pool/size", "sync/version",
                "sync/probe_gap", "sync/probe_separation", "time/wave1_propose_solve", "rollout/tokens_per_second",
                "solver/all_equal_group_share", "proposer/all_equal_group_share", "time/refill"):
        assert key in last, key
    assert last["filter/refill_rounds"] == 1.0 and last["filter/refill_questions"] >= 1.0
    assert last["solver/samples"] >= 4 * (4 + last["filter/refill_questions"])  # 4 answers per question
    assert last["sync/version"] == 5.0  # 1 after SFT, 2 and 3, then 4 to re-sync the fresh engines on resume, 5
    assert any("samples" in row for row in history), "no sample table in the W&B run"
    # Pool state continued: the resumed iteration did not restart from the seed file.
    assert last["pool/size"] >= 43


def test_config_error_exits_2_before_starting(tmp_path):
    output_dir = tmp_path / "runs"
    process = _evolve(tmp_path / "run.log", "--config", "configs/tiny-cpu.yaml", "solver.num_answers=1",
                      f"run.output_dir={output_dir}")
    output = _finish(process, tmp_path / "run.log", timeout=120)
    assert process.returncode == 2
    assert output.strip().splitlines()[-1].startswith("config error: command line 'solver.num_answers=1': "
                                                      "solver.num_answers")
    assert not output_dir.exists(), "a run directory was created for a config that never started"
