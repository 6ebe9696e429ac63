"""learner/weights.py file handling: exports shipped to another node arrive byte for byte and cannot leave their
directory; pruning keeps the version before the newest; scratch directories carry their machine and run, and only
this machine's and run's leftovers are swept; an export that does not fit in memory goes to disk, with one line."""

import logging
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from learner.weights import (MIB, ExportDirectories, SyncMode, export_place, name_part, process_scratch_dir,
                             prune_exports, read_files, write_files)


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


def ended_pid() -> int:
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(ended.stdout)


def test_a_name_part_keeps_no_separator():
    assert name_part("node_1.example.org") == "node-1.example.org"
    assert name_part("runs/run-20260101-120000") == "runs-run-20260101-120000"
    assert name_part("__") == "unnamed"


def test_a_scratch_directory_names_its_machine_and_run_and_sweeps_only_their_ended_leftovers(tmp_path):
    host, dead, live = name_part(socket.gethostname()), ended_pid(), os.getppid()
    names = {f"sw-{host}_run-a_{dead}-abc": "swept: this machine, this run, its process ended",
             f"sw-{host}_run-a_{live}-def": "kept: its process lives",
             f"sw-{host}_run-b_{dead}-ghi": "kept: another run (its pid may be of another container)",
             f"sw-other-node_run-a_{dead}-jkl": "kept: another machine's (its pid means nothing here)",
             f"sw-{dead}-mno": "kept: not named by a machine and run",
             f"other-{host}_run-a_{dead}-pqr": "kept: another prefix"}
    for name in names:
        (tmp_path / name).mkdir()
    mine = process_scratch_dir("sw-", str(tmp_path), owner="run-a")
    assert mine.parent == tmp_path and mine.name.startswith(f"sw-{host}_run-a_{os.getpid()}-")
    kept = {name for name, why in names.items() if why.startswith("kept")}
    assert {path.name for path in tmp_path.iterdir()} == kept | {mine.name}


SHM_EXPORT = Path("/dev/shm/selfplay-weights-node_run_1-x")


def test_an_export_stays_where_it_fits_and_moves_from_memory_to_disk_where_it_does_not(tmp_path):
    free = {SHM_EXPORT.parent: 64 * MIB, tmp_path: 100 * MIB}
    assert export_place(SHM_EXPORT, 50 * MIB, lambda path: free[path.parent], tmp_path) == (SHM_EXPORT, "")
    free[SHM_EXPORT.parent] = 10 * MIB
    assert export_place(SHM_EXPORT, 50 * MIB, lambda path: free[path.parent], tmp_path) == (
        tmp_path / SHM_EXPORT.name,
        f"weight export needs 50 MiB, /dev/shm has 10 MiB free: exporting to {tmp_path / SHM_EXPORT.name} on disk "
        f"instead for the rest of the run (slower reloads)")
    free[tmp_path] = 20 * MIB
    with pytest.raises(OSError, match=rf"^weight export needs 50 MiB, /dev/shm has 10 MiB free and {tmp_path} 20 MiB: "
                                      r"make room or set rollout.weights_path to a disk with room$"):
        export_place(SHM_EXPORT, 50 * MIB, lambda path: free[path.parent], tmp_path)
    shared = tmp_path / "shared" / "selfplay-weights-node_run_1-x"  # rollout.weights_path: never moved off it
    free[shared.parent] = 10 * MIB
    with pytest.raises(OSError, match=rf"^weight export needs 50 MiB, {shared.parent} has 10 MiB free: make room "
                                      r"there or set rollout.weights_path to a disk with room$"):
        export_place(shared, 50 * MIB, lambda path: free[path.parent], tmp_path)


def test_exports_stay_on_disk_once_memory_ran_short_and_are_pruned_and_removed_there(tmp_path, caplog):
    requested = Path(f"/dev/shm/selfplay-weights-test-{uuid.uuid4().hex}")  # never created: memory is full
    disk = tmp_path / requested.name
    free = {requested.parent: 10 * MIB, tmp_path: 100 * MIB}
    exports = ExportDirectories(free=lambda path: free[path.parent], disk=tmp_path)
    with caplog.at_level(logging.WARNING, logger="learner.weights"):
        for version in (1, 2, 3):
            assert exports.place(requested, SyncMode.MERGED, version, needed=50 * MIB) == disk
            (disk / f"merged-v{version}").mkdir(parents=True)
            free[requested.parent] = 64 * MIB  # room again in memory: the exports stay where they are
    assert [record.getMessage() for record in caplog.records] == [
        f"weight export needs 50 MiB, /dev/shm has 10 MiB free: exporting to {disk} on disk instead for the rest "
        f"of the run (slower reloads)"]
    assert sorted(path.name for path in disk.iterdir()) == ["merged-v2", "merged-v3"]  # v1 pruned before v3
    exports.remove()
    assert not disk.exists() and not requested.exists()


def test_a_runs_export_directory_is_named_after_this_machine_and_the_run(tmp_path):
    from selfplay.config import Config
    from selfplay.wiring import export_dir_for

    config = Config(rollout={"weights_path": str(tmp_path)})
    directory = export_dir_for(config, Path("/runs/arithmetic-20260101-120000"))
    assert directory.parent == tmp_path
    assert directory.name.startswith(f"selfplay-weights-{name_part(socket.gethostname())}_arithmetic-20260101-120000_"
                                     f"{os.getpid()}-")
