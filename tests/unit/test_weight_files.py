"""learner/weights.py file handling: exports shipped to another node arrive byte for byte and cannot leave their
directory; pruning keeps the version before the newest."""

import os
import subprocess
import sys

import pytest

from learner.weights import SyncMode, process_scratch_dir, prune_exports, read_files, write_files


def test_shipped_files_arrive_byte_for_byte(tmp_path):
    source = tmp_path / "merged-v3"
    (source / "nested").mkdir(parents=True)
    (source / "model.safetensors").write_bytes(b"\x00\x01weights")
    (source / "nested" / "config.json").write_text('{"a": 1}')
    files = read_files(str(source))
    assert files == {"model.safetensors": b"\x00\x01weights", "nested/config.json": b'{"a": 1}'}
    received = write_files(files, tmp_path / "elsewhere" / "merged-v3")
    assert read_files(str(received)) == files


def test_a_shipped_name_may_not_leave_its_directory(tmp_path):
    with pytest.raises(ValueError, match="leaves"):
        write_files({"../outside": b"x"}, tmp_path / "target")
    assert not (tmp_path / "outside").exists()


def test_pruning_keeps_the_previous_version_and_other_modes(tmp_path):
    for name in ("merged-v1", "merged-v2", "merged-v3", "adapter-v1", "merged-v2.partial"):
        (tmp_path / name).mkdir()
    prune_exports(tmp_path, SyncMode.MERGED, oldest_kept=2)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["adapter-v1", "merged-v2", "merged-v2.partial",
                                                                 "merged-v3"]


def test_a_process_scratch_directory_sweeps_those_of_ended_processes(tmp_path):
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for name in (f"received-{ended.stdout.strip()}-abc", f"received-{os.getppid()}-def", "received-x", "other-1-a"):
        (tmp_path / name).mkdir()
    mine = process_scratch_dir("received-", str(tmp_path))
    assert mine.name.startswith(f"received-{os.getpid()}-")
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        [mine.name, f"received-{os.getppid()}-def", "received-x", "other-1-a"])
