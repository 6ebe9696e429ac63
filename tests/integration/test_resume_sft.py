"""A run killed during its SFT cold start, before checkpoint 0, and resumed: the resumed run starts over with the SFT
cold start (it used to start self-play from the base model), and metrics.jsonl holds the base evaluation once."""

from __future__ import annotations

import json
import os
import signal
import time

import psutil
import pytest

from rollout.shm_segments import NOTE_PREFIX, SHM_DIR
from tests.integration.test_selfplay import _evolve, _finish, _metrics, _overrides

pytestmark = pytest.mark.integration
SFT_STEPS = 8


def test_run_killed_during_sft_runs_it_again_on_resume(tiny_model_dir, tmp_path):
    first_log, resume_log = tmp_path / "first.log", tmp_path / "resume.log"
    output_dir = tmp_path / "runs"
    held_out = tmp_path / "held-out.jsonl"
    held_out.write_text("".join(json.dumps({"question": f"What is {i} + 2?", "answer": str(i + 2)}) + "\n"
                                for i in range(4)))
    notes_before = set(SHM_DIR.glob(f"{NOTE_PREFIX}*"))
    process = _evolve(first_log, "--config", "configs/tiny-cpu.yaml",
                      *_overrides(tiny_model_dir, output_dir, iterations=1), f"sft.steps={SFT_STEPS}",
                      "sft.batch_size=2", "eval.every=1", f"eval.data={held_out}", "eval.limit=4",
                      "eval.max_tokens=16", "tracking.console=verbose")  # verbose: a line per SFT step
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and process.poll() is None and f"sft step 1/{SFT_STEPS}" not in (
            first_log.read_text()):
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)  # the driver and everything it started, during the SFT steps
    process.wait()
    log = first_log.read_text()
    assert f"sft step 1/{SFT_STEPS}" in log, f"the run never reached its SFT steps: {log[-3000:]}"
    (run_dir,) = output_dir.iterdir()
    assert not (run_dir / "checkpoints" / "latest").exists(), "the SFT finished before the kill"
    assert [row["step"] for row in _metrics(run_dir)] == [0]  # the base model's held-out evaluation
    for note in set(SHM_DIR.glob(f"{NOTE_PREFIX}*")) - notes_before:  # an engine host may outlive the driver
        try:
            psutil.Process(int(note.name.removeprefix(NOTE_PREFIX).split("-")[0])).wait(timeout=30)
        except psutil.NoSuchProcess:
            continue

    resumed = _evolve(resume_log, "--resume", str(run_dir))
    output = _finish(resumed, resume_log, timeout=900)
    assert resumed.returncode == 0, output[-4000:]
    assert f"sft step {SFT_STEPS}/{SFT_STEPS}" in output
    assert (run_dir / "checkpoints" / "iter-000000").is_dir()  # the cold start's checkpoint
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "iter-000001"
    metrics = _metrics(run_dir)
    assert [row["step"] for row in metrics] == [0, 1]  # the base evaluation ran again and is there once
    assert metrics[1]["sft/steps"] == SFT_STEPS
    assert metrics[1]["sync/version"] == 2.0  # 1 after the SFT, 2 after iteration 1
    assert "before its first checkpoint: starting over from the base model, SFT cold start included" in output
