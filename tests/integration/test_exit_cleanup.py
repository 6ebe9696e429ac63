"""Stopping an entry point mid-generation with SIGTERM leaves no process behind: not vLLM's engine core (which
ignores SIGTERM), not Ray's processes, not the grading workers (rollout/exit_cleanup.py); nor the shared memory
the engine's processes made (rollout/shm_segments.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from rollout.shm_segments import mapped_segments

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _engine_cores(processes: list[psutil.Process]) -> list[psutil.Process]:
    found = []
    for process in processes:
        try:
            if "EngineCore" in process.name() + " ".join(process.cmdline()):
                found.append(process)
        except psutil.Error:
            pass
    return found


def stop_mid_generation(command: list[str], log_path: Path, started_generating: str, timeout: float = 600) -> int:
    """Start `command`; once its log holds `started_generating` and an engine core runs below it, send SIGTERM.
    Returns the exit status after checking that every process it had started is gone."""
    environment = os.environ | {"RAY_ADDRESS": "", "WANDB_MODE": "offline"}
    process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log_path.open("w"),
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            if started_generating in log_path.read_text():
                children = psutil.Process(process.pid).children(recursive=True)
                if _engine_cores(children):
                    break
            time.sleep(0.5)
        assert process.poll() is None, f"it ended before it was stopped: {log_path.read_text()[-3000:]}"
        time.sleep(3)  # into the generation
        started = psutil.Process(process.pid).children(recursive=True)
        assert _engine_cores(started), "no engine core below the entry point"
        segments = mapped_segments(child.pid for child in started)
        assert segments, "the engine's processes map no shared memory: the premise of the check below changed"
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=180)
        _, survivors = psutil.wait_procs(started, timeout=30)
        assert not survivors, f"left running: {[(p.pid, p.name()) for p in survivors]}"
        left = sorted(str(segment) for segment in segments if segment.exists())
        assert not left, f"shared memory left behind (rollout.shm_segments): {left}"
        return code
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def test_eval_stopped_mid_generation_leaves_no_engine(tiny_model_dir, tmp_path):
    data = tmp_path / "many.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
                            for i in range(400)))
    code = stop_mid_generation(
        [sys.executable, str(ROOT / "launch/eval.py"), "--config", "configs/tiny-cpu.yaml", "--data", str(data),
         "--output", str(tmp_path / "rows.jsonl"), f"model.path={tiny_model_dir}", "model.max_model_len=1024",
         "rollout.kv_cache_gb=0.25", "eval.max_tokens=512"],
        tmp_path / "eval.log", started_generating="eval: 400 questions")
    assert code == 128 + signal.SIGTERM
    assert "Traceback" not in (tmp_path / "eval.log").read_text()


def test_evolve_stopped_mid_iteration_leaves_no_engine_nor_ray_and_keeps_the_plots(tiny_model_dir, tmp_path):
    code = stop_mid_generation(
        [sys.executable, str(ROOT / "launch/evolve.py"), "--config", "configs/tiny-cpu.yaml",
         f"model.path={tiny_model_dir}", f"run.output_dir={tmp_path / 'runs'}", "run.iterations=3",
         "model.max_model_len=1024", "rollout.kv_cache_gb=0.25", "solver.max_tokens=512", "proposer.max_tokens=256",
         "tracking.wandb=disabled", "tracking.console=verbose"],
        tmp_path / "evolve.log", started_generating="iteration 2/3: propose")
    assert code == 128 + signal.SIGTERM
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert (run_dir / "plots" / "rewards.png").is_file(), "the finished iteration's curves were not plotted"
