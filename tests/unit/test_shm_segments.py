"""rollout/shm_segments.py: which /dev/shm segments a process maps, removing only those nobody maps, and sweeping
those noted by a host that was killed."""

import os
import subprocess
import sys
from multiprocessing import shared_memory
from pathlib import Path

import pytest

from rollout.shm_segments import (NOTE_PREFIX, mapped_segments, note_segments, remove_unmapped, segments_in_maps,
                                  sweep_dead_hosts)

MAPS = """\
7f00-7f10 rw-s 00000000 00:1a 101 /dev/shm/psm_2cf8cc38
7f10-7f20 rw-s 00000000 00:1a 102 /dev/shm/sem.mp-6dporb6w
7f20-7f30 rw-s 00000000 00:1a 103 /dev/shm/psm_gone (deleted)
7f30-7f40 rw-s 00000000 00:1a 104 /dev/shm/torch_12_34
7f40-7f50 r-xp 00000000 08:01 105 /usr/lib/libc.so.6
7f50-7f60 rw-p 00000000 00:00 0
"""


def test_maps_name_the_shared_memory_segments_only():
    assert segments_in_maps(MAPS) == {Path("/dev/shm/psm_2cf8cc38")}
    assert segments_in_maps("") == set()


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs Linux /proc")
def test_a_segment_is_removed_only_once_no_process_maps_it():
    segment = shared_memory.SharedMemory(create=True, size=4096)
    path = Path("/dev/shm") / segment.name.lstrip("/")
    try:
        assert path in mapped_segments([os.getpid()])
        assert remove_unmapped([path]) == 0 and path.exists()  # this process still maps it
        segment.close()
        assert path not in mapped_segments([os.getpid()])
        assert remove_unmapped([path]) == 1 and not path.exists()
        assert remove_unmapped([path]) == 0  # already gone: nothing to do, no error
    finally:
        segment.close()
        if path.exists():
            segment.unlink()


REMOVED_BEHIND_THE_TRACKER = """
import sys
from multiprocessing import shared_memory
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from rollout.shm_segments import remove_unmapped
segment = shared_memory.SharedMemory(create=True, size=4096)  # registered with this process's resource tracker
segment.close()
print(remove_unmapped([Path("/dev/shm") / segment.name.lstrip("/")]))
"""


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs Linux /proc")
def test_the_resource_tracker_forgets_a_removed_segment():
    """Without it the tracker warns at exit: "1 leaked shared_memory objects" and "No such file or directory"."""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", REMOVED_BEHIND_THE_TRACKER, str(root)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "1", done.stderr
    assert done.stderr == ""


HOLDS_A_SEGMENT = """
import mmap, os, sys, time
descriptor = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR)  # no resource tracker: nothing removes it at exit
os.ftruncate(descriptor, 4096)
segment = mmap.mmap(descriptor, 4096)
print("mapped", flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs Linux /proc")
def test_the_segments_of_a_killed_host_are_swept_and_a_live_hosts_are_kept():
    path = Path("/dev/shm") / f"psm_selfplay_test_{os.getpid()}"
    host = subprocess.Popen([sys.executable, "-c", HOLDS_A_SEGMENT, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert host.stdout.readline().strip() == "mapped"
        note = note_segments(host.pid, [host.pid])
        assert note.name.startswith(f"{NOTE_PREFIX}{host.pid}-") and note.read_text() == f"{path.name}\n"
        sweep_dead_hosts()  # (other notes on this machine whose host has ended may go too)
        assert path.exists() and note.exists()  # its host lives
        host.kill()
        host.wait()
        assert path.exists()  # a killed host removes nothing
        assert sweep_dead_hosts() >= 1
        assert not path.exists() and not note.exists()
        assert note_segments(host.pid, [host.pid]) is None  # it maps nothing: no note
    finally:
        host.kill()
        host.wait()
        host.stdout.close()
        path.unlink(missing_ok=True)
        for note in Path("/dev/shm").glob(f"{NOTE_PREFIX}{host.pid}-*"):
            note.unlink()
