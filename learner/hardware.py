"""The hardware facts the learner, the rollout engines and the wiring share: which precision runs fast where, and
which nodes the Ray cluster has."""

from __future__ import annotations


def fast_dtype(model_dtype: str, uses_gpu: bool) -> str:
    """The model's dtype on GPUs and on CPUs with native bf16/fp16 matmuls; float32 on other CPUs.

    Measured on a 2-core AVX2 CPU without them (SmolLM2-135M): vLLM-CPU decoded 21 tokens/s in bf16 and 96 in
    fp32 (64 prompts, 1 core); a LoRA backward ran 50-90x slower in bf16 than in fp32.
    """
    if uses_gpu or model_dtype == "float32":
        return model_dtype
    import torch

    native = (torch.ops.mkldnn._is_mkldnn_bf16_supported() if model_dtype == "bfloat16"
              else torch.ops.mkldnn._is_mkldnn_fp16_supported())
    return model_dtype if native else "float32"


def resolve_compute_dtype(config_value: str, model_dtype: str, uses_gpu: bool) -> str:
    """learner.compute_dtype: 'auto' -> `fast_dtype`; other values name the dtype."""
    return fast_dtype(model_dtype, uses_gpu) if config_value == "auto" else config_value


def resource_bundle(cpus: float, gpus: float) -> dict[str, float]:
    """One placement-group bundle: `cpus` CPUs and, where asked for, `gpus` GPUs."""
    return {"CPU": cpus} | ({"GPU": gpus} if gpus else {})


def pinned_placement_group(bundles: list[dict[str, float]], nodes: list[str] | None, strategy: str):
    """A Ray placement group whose bundle i is held on node `nodes[i]` (a node id; None: wherever `strategy` puts
    it), as the run's placement plan decided."""
    from ray.util.placement_group import NODE_ID_LABEL_KEY, placement_group

    pinned = None if nodes is None else [{NODE_ID_LABEL_KEY: node} for node in nodes]
    return placement_group(bundles, strategy=strategy, bundle_label_selector=pinned)


def alive_nodes() -> list[dict]:
    """The Ray cluster's live nodes (`ray.nodes()` also lists the dead ones)."""
    import ray

    return [node for node in ray.nodes() if node["Alive"]]
