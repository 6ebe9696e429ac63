"""Methods vLLM's worker process runs for the engine (`worker_extension_cls`, reached with `collective_rpc`): the
merged weight sync, and the heap trim.

Merged sync: the learner ships a LoRA adapter and the worker adds its delta to the base weights it reads from the
model's own files, in float32, one tensor at a time (learner.export.merged_from_adapter), straight into vLLM's
in-place reload. Only the adapter crosses processes and nodes (megabytes, against a whole model), and no process
holds a second, merged copy of the model.

Heap trim: the worker reloads the whole model at every merged weight sync and frees each wave's activations; glibc
keeps the freed pages resident, so without a trim its memory grew 0.26 GiB over 10 reload-and-generate rounds of
the embedded model, with one 0.07 (2-core CPU, bf16, 2026-12-03; docs/benchmarks.md).
"""

from __future__ import annotations

from learner.export import merged_from_adapter
from learner.memory import release_free_heap

WORKER_EXTENSION = "rollout.worker_extension.WorkerExtension"


class WorkerExtension:
    """Mixed into vLLM's worker class: `self` is the worker."""

    def reload_merged(self, base_path: str, adapter_path: str) -> None:
        """Serve the base model at `base_path` with the adapter at `adapter_path` merged into it."""
        self.reload_weights(weights_iterator=merged_from_adapter(base_path, adapter_path, self.model_config.dtype))

    def release_free_heap(self) -> bool:
        return release_free_heap()
