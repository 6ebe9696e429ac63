"""Process memory readings, and the allocator calls that give freed tensors back to the operating system."""

import subprocess
import sys
import time

import psutil
import pytest

from learner.memory import (fix_mmap_threshold, node_used_share, peak_resident_gb, release_device_cache,
                            release_free_heap, resident_gb)

# Frees a 16 MiB tensor (glibc's default then serves blocks up to that size from its heap), then fills 1 GiB
# with 2 MiB tensors and frees all but the last: from the heap, the freed ones stay resident behind it.
FRAGMENTING_STEP = """
import sys, torch
from learner.memory import fix_mmap_threshold, release_free_heap, resident_gb
if sys.argv[1] == "fixed":
    assert fix_mmap_threshold()
torch.ones(4 << 20).sum()
before = resident_gb()
tensors = [torch.ones(512 << 10) for _ in range(512)]
last = tensors[-1]
del tensors
if sys.argv[1] == "trim":
    assert release_free_heap()
print(resident_gb() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_trimmed_heap_or_a_fixed_mmap_threshold_gives_freed_activations_back():
    def retained(mode: str) -> float:
        result = subprocess.run([sys.executable, "-c", FRAGMENTING_STEP, mode], capture_output=True, text=True,
                                timeout=120, check=True)
        return float(result.stdout.strip().splitlines()[-1])

    default, fixed, trimmed = retained("default"), retained("fixed"), retained("trim")
    assert default > 0.9  # the freed 1022 MiB are still resident
    assert fixed < 0.1  # 2 MiB kept
    assert trimmed < 0.1


def test_memory_readings_are_in_gib_and_children_add_up():
    rss = resident_gb()
    assert 0.01 < rss < peak_resident_gb() + 0.01
    child = subprocess.Popen([sys.executable, "-c", "import time; x = bytearray(200 << 20); time.sleep(30)"])
    try:
        process = psutil.Process()
        deadline = time.monotonic() + 20
        while resident_gb(process, children=True) - resident_gb(process) < 0.19:
            assert time.monotonic() < deadline, "the child's 200 MiB never showed"
        assert resident_gb(process, children=True) - resident_gb(process) < 0.5
    finally:
        child.kill()
        child.wait()
    assert 0.0 < node_used_share() < 1.0
    assert release_free_heap() is True  # glibc here


def test_the_device_cache_is_released_only_where_cuda_was_used():
    import torch

    used = torch.cuda.is_available() and torch.cuda.is_initialized()
    assert release_device_cache() is used  # on a CPU machine: nothing to release, and no CUDA call made
