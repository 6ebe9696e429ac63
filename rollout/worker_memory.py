"""Methods vLLM's worker process runs for the engine (`worker_extension_cls`, reached with `collective_rpc`).

The worker reloads the whole model at every merged weight sync and frees each wave's activations; glibc keeps the
freed pages resident, so without a trim its memory grew 0.26 GiB over 10 reload-and-generate rounds of the
embedded model, with one 0.07 (2-core CPU, bf16, 2026-12-03; docs/benchmarks.md).
"""

from __future__ import annotations

from learner.memory import release_free_heap

WORKER_EXTENSION = "rollout.worker_memory.WorkerMemory"


class WorkerMemory:
    """Mixed into vLLM's worker class: `self` is the worker."""

    def release_free_heap(self) -> bool:
        return release_free_heap()
