"""Precision choice: the model's dtype where it runs natively, float32 on CPUs without native bf16/fp16."""

import torch

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
    assert resolve_engine_dtype(RolloutConfig(), "bfloat16") == expected


def test_engine_dtype_from_config():
    assert resolve_engine_dtype(RolloutConfig(dtype="bfloat16"), "float32") == "bfloat16"
    assert resolve_engine_dtype(RolloutConfig(gpus_per_engine=1), "bfloat16") == "bfloat16"


def test_sync_mode_auto_is_merged_on_cpu_and_adapter_on_gpu():
    assert resolve_sync_mode("auto", uses_gpu=False) is SyncMode.MERGED
    assert resolve_sync_mode("auto", uses_gpu=True) is SyncMode.ADAPTER
    assert resolve_sync_mode("adapter", uses_gpu=False) is SyncMode.ADAPTER
