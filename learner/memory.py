"""Process memory: how much a process and its children hold, and the allocator calls that let freed tensor
memory go back to the operating system (and, on a GPU, to the driver).

glibc raises its mmap threshold to the size of each mmapped block a process frees, up to 32 MiB. PyTorch's CPU
allocator frees every tensor to malloc, so after the first training step the activations of later steps (blocks
of 1-32 MiB, of sizes that change with each micro-batch's shape) come from the heap, which fragments and keeps
freed pages resident. The learner trims the heap after every step (`release_free_heap`); fixing the threshold
(`fix_mmap_threshold`) keeps memory as flat but maps and zeroes every large block anew, which made steps 1.6x
slower. Measured with `bench/learner_memory.py --steps 8 --samples 8` (docs/benchmarks.md).

oneDNN, which runs PyTorch's CPU matmuls, keeps up to 1024 compiled kernels, one per shape it has met; the learner
meets new shapes at every step, so its cache kept growing. Capped at 64 (`NATIVE_CACHE_LIMITS`, set in every actor's
environment, read when oneDNN starts) the learner grew 0.07 GiB over 16 steps instead of 0.23, its steps as fast.
PyTorch's oneDNN wrapper (ideep) keeps a second cache of its own, of up to `LRU_CACHE_CAPACITY` (1024) kernels: the
heap's bytes in use (glibc's mallinfo2) then still grew by 1-3 MiB at each step that met new shapes, by 0.4-0.8 MiB
with it capped at 16; it is capped with oneDNN's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import resource
import sys

import psutil

GIB = 2**30
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h); setting it turns the dynamic threshold off
MMAP_THRESHOLD_BYTES = 1 << 20  # blocks from 1 MiB up are mapped on their own and unmapped when freed
NATIVE_CACHE_LIMITS = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "64", "LRU_CACHE_CAPACITY": "64"}


@functools.cache  # looked up once: the learner trims after every step
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 -- both exist only in glibc
    except (OSError, AttributeError):
        return None
    return libc


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold for this process (see the module docstring). False where the C library is not
    glibc (nothing to fix there) or refuses the value."""
    libc = _glibc()
    return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold)) if libc is not None else False


def release_free_heap() -> bool:
    """Give the free pages inside glibc's heaps back to the operating system (malloc_trim(0)). False where the C
    library is not glibc."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


def release_device_cache() -> bool:
    """Hand the unused blocks of PyTorch's CUDA caching allocator back to the driver, so that an engine on the same
    GPU (or its restart, which asks for its share of the card anew) finds the memory free. False where this process
    has not used CUDA."""
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return False
    torch.cuda.empty_cache()
    return True


def resident_gb(process: psutil.Process | None = None, children: bool = False) -> float:
    """Resident memory of `process` (this one by default), with its descendants' where `children` (shared pages
    are counted in each process), in GiB."""
    process = process or psutil.Process()
    processes = [process] + (process.children(recursive=True) if children else [])
    total = 0
    for each in processes:
        try:
            total += each.memory_info().rss
        except psutil.Error:  # a child that exited between the listing and the reading
            continue
    return total / GIB


def peak_resident_gb() -> float:
    """This process's highest resident memory so far (Linux reports ru_maxrss in KiB), in GiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def node_used_share() -> float:
    """The share of this node's memory in use (what Ray's memory monitor compares with its threshold)."""
    memory = psutil.virtual_memory()
    return (memory.total - memory.available) / memory.total
