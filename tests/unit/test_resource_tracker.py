"""rollout/exit_cleanup.py leaves multiprocessing's resource tracker alone: it exits after the process and removes
what was registered with it (waiting for it cost 15 s at every exit, and killing it leaked semaphores)."""

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import multiprocessing, sys
sys.path.insert(0, {root!r})
from rollout.exit_cleanup import no_orphans
if __name__ == "__main__":
    with no_orphans(grace_s=15):
        lock = multiprocessing.get_context("spawn").Lock()  # starts the resource tracker, registers a semaphore
        print(lock._semlock.name)
"""


def test_a_block_that_started_the_resource_tracker_exits_at_once_and_leaves_no_semaphore(tmp_path):
    script = tmp_path / "uses_a_lock.py"
    script.write_text(SCRIPT.format(root=str(ROOT)))
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 10  # not the 15 s grace period
    assert "resource_tracker" not in result.stderr, result.stderr
    name = result.stdout.strip().lstrip("/")
    if Path("/dev/shm").is_dir():
        assert not (Path("/dev/shm") / f"sem.{name}").exists()
