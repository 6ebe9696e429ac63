"""The README's launch path for real: a token generated with `ray get-auth-token --generate` in an empty HOME, a
head started with `ray start --head` (the README's flags, plus free ports and a temp dir of its own so it cannot
meet another cluster), and `ray job submit` of launch/evolve.py. A job with a bad override fails with the one-line
config error as its log's last line; a one-iteration job succeeds and leaves a complete run directory; a W&B key
handed to the job never lands in the run directory or the logs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from selfplay.samples import COLUMNS
from tests.integration.test_selfplay import _overrides

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "launch"))
import ray_head  # noqa: E402

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
FAKE_WANDB_KEY = "f" * 8 + "0123456789abcdef0123456789abcdef"  # 40 characters, like a real key
EXCLUDES = [".venv", "runs", "wandb", ".git", "__pycache__", "*.egg-info", ".pytest_cache"]


class Head:
    def __init__(self, directory: Path, environment: dict[str, str], address: str) -> None:
        self.directory, self.environment, self.address = directory, environment, address

    def ray(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run(["ray", *args], env=self.environment, cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout)

    def submit(self, overrides: list[str], runtime_env: dict | None = None) -> subprocess.CompletedProcess:
        runtime_env = {"excludes": EXCLUDES} | (runtime_env or {})
        return self.ray("job", "submit", "--address", self.address, "--working-dir", ".",
                        "--runtime-env-json", json.dumps(runtime_env), "--",
                        "python", "launch/evolve.py", "--config", "configs/tiny-cpu.yaml", *overrides)


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("empty-home")
    directory = Path(tempfile.mkdtemp(prefix="selfplay-test-head-", dir="/tmp"))  # short: Ray's socket paths
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith(("RAY_", "WANDB_"))}  # nothing of this session's Ray or W&B settings
    environment |= {"HOME": str(home), "RAY_AUTH_MODE": "token",
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    generated = subprocess.run(["ray", "get-auth-token", "--generate"], env=environment, capture_output=True,
                               text=True, timeout=60)
    assert generated.returncode == 0, generated.stderr
    assert (home / ".ray" / "auth_token").read_text().strip() == generated.stdout.strip()
    try:
        address = ray_head.start(directory, num_cpus=3, environment=environment)
        yield Head(directory, environment, address)
    finally:
        ray_head.stop(directory)
        shutil.rmtree(directory, ignore_errors=True)


def test_bad_override_fails_the_job_with_one_line_naming_the_key(head):
    result = head.submit(["learner.lr=-1"])
    assert result.returncode != 0, result.stdout[-3000:]
    submission_id = next(line.split("'")[1] for line in (result.stdout + result.stderr).splitlines()
                         if "Job '" in line)
    logs = head.ray("job", "logs", "--address", head.address, submission_id)
    lines = [line for line in logs.stdout.splitlines() if line.strip()]
    assert lines[-1].startswith("config error: ") and "learner.lr" in lines[-1], lines[-5:]
    assert "Traceback" not in logs.stdout


def test_job_submitted_as_the_readme_says_completes_one_iteration(head, tiny_model_dir, tmp_path):
    output_dir = tmp_path / "runs"
    overrides = _overrides(tiny_model_dir, output_dir, iterations=1)
    result = head.submit(overrides, runtime_env={"env_vars": {"WANDB_API_KEY": FAKE_WANDB_KEY}})
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "W&B offline: tracking.wandb=offline" in log
    assert "Traceback" not in log and "Logging error" not in log, log[-4000:]

    (run_dir,) = output_dir.iterdir()
    assert f"run directory: {run_dir}" in log  # absolute, printed by the driver
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in metrics] == [1] and "solver/samples" in metrics[0]
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "iter-000001"
    assert (run_dir / "config.yaml").is_file() and (run_dir / "plots" / "rewards.png").is_file()
    table = json.loads((run_dir / "tables" / "samples-1.json").read_text())
    assert table["columns"] == COLUMNS and table["rows"]
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))

    leaks = [str(path) for path in run_dir.rglob("*")
             if path.is_file() and FAKE_WANDB_KEY.encode() in path.read_bytes()]
    assert leaks == [] and FAKE_WANDB_KEY not in log


def test_stopping_a_private_head_leaves_another_cluster_running(head):
    other = Path(tempfile.mkdtemp(prefix="selfplay-test-other-", dir="/tmp"))
    try:
        ray_head.start(other, num_cpus=1)
        others_before = {process.pid for process in ray_head.head_processes(other)}
        ours_before = {process.pid for process in ray_head.head_processes(head.directory)}
        assert others_before and ours_before and not others_before & ours_before
        assert ray_head.stop(other) == len(others_before)
        assert ray_head.head_processes(other) == []
        assert {process.pid for process in ray_head.head_processes(head.directory)} == ours_before
        status = head.ray("status", "--address", f"127.0.0.1:{(head.directory / ray_head.GCS_PORT_FILE).read_text()}",
                          timeout=60)
        assert status.returncode == 0, status.stderr[-2000:]
    finally:
        ray_head.stop(other)
        shutil.rmtree(other, ignore_errors=True)
