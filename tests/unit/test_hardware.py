"""Precision choice: the model's dtype where it runs natively, float32 on CPUs without native bf16/fp16, and
float32 for engines synced by merged weights."""

import pytest
import torch
from pydantic import ValidationError

from learner.hardware import fast_dtype
from learner.weights import SyncMode
from rollout.config import RolloutConfig
from rollout.config import resolve_engine_dtype, resolve_sync_mode


def test_gpu_and_float32_models_keep_their_dtype():
    assert fast_dtype("bfloat16", uses_gpu=True) == "bfloat16"
    assert fast_dtype("float16", uses_gpu=True) == "float16"
    assert fast_dtype("float32", uses_gpu=False) == "float32"


def test_cpu_bf16_follows_native_support():
    expected = "bfloat16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "float32"
    assert fast_dtype("bfloat16", uses_gpu=False) == expected
    assert resolve_engine_dtype(RolloutConfig(sync_mode="adapter"), "bfloat16") == expected
    assert resolve_engine_dtype(RolloutConfig(), "bfloat16", synced=False) == expected  # a frozen judge


def test_engine_dtype_from_config():
    assert resolve_engine_dtype(RolloutConfig(dtype="bfloat16", sync_mode="adapter"), "float32") == "bfloat16"
    assert resolve_engine_dtype(RolloutConfig(gpus_per_engine=1), "bfloat16") == "bfloat16"  # adapter sync


def test_merged_sync_serves_float32_and_refuses_16_bits():
    """bf16(W + delta) keeps W wherever |delta| is under half of W's bf16 spacing: merged engines run float32."""
    assert resolve_engine_dtype(RolloutConfig(), "bfloat16") == "float32"  # CPU: auto sync is merged
    assert resolve_engine_dtype(RolloutConfig(gpus_per_engine=1, sync_mode="merged"), "bfloat16") == "float32"
    for dtype, sync in (("bfloat16", "merged"), ("float16", "merged"), ("bfloat16", "auto")):
        with pytest.raises(ValidationError, match=f"rollout.dtype {dtype} with merged weight sync"):
            RolloutConfig(dtype=dtype, sync_mode=sync)
    RolloutConfig(dtype="bfloat16", gpus_per_engine=1)  # auto sync on GPU engines is adapter: accepted


def test_a_small_lora_step_vanishes_in_bf16_and_survives_in_float32():
    """The reason for the rule above, by hand: 1.0's bf16 neighbours are 1 - 2^-8 and 1 + 2^-7, its float32
    spacing 2^-23 (1.2e-7)."""
    weight, delta = torch.tensor([1.0, 1.0]), torch.tensor([2e-4, 5e-3])
    assert (weight + delta).to(torch.bfloat16).float().tolist() == [1.0, 1.0078125]
    served_step = (weight + delta) - weight  # float32
    assert torch.allclose(served_step, delta, rtol=0, atol=2 ** -23)
