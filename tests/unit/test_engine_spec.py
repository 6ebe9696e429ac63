"""The engines' spec from the config: the batch cap from the run's waves, per-sequence seeds by platform, sleep
while training where engines share the learner's GPUs, a frozen judge without LoRA, one adapter per role where
the learner trains one per role; and which adapter answers a request."""

from __future__ import annotations

from pathlib import Path

import pytest

from learner.weights import SyncMode
from rollout.config import (RolloutConfig, engine_spec_from_config, frozen_engine_spec, resolve_max_num_seqs,
                            resolve_seeded_requests, resolve_sleep_while_training)
from rollout.engine import Engine
from selfplay.config import ConfigError, load_config
from selfplay.preflight import wave_sequences_per_engine

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("value, per_engine, cap", [("auto", 100, 256), ("auto", 801, 801), (64, 801, 64)])
def test_the_batch_cap_makes_room_for_one_wave_and_never_goes_below_vllms_default(value, per_engine, cap):
    assert resolve_max_num_seqs(value, per_engine) == cap


def test_one_wave_of_the_shipped_configs_by_hand():
    # proposals + anchors + pool answers + the new questions' answers and their verdicts, over the engines
    gpu = load_config(ROOT / "configs/gpu-qwen2.5-3b.yaml")
    assert wave_sequences_per_engine(gpu) == (128 + 4 + 128 * 8 + 2 * 128 * 8) // 4 == 801
    cpu = load_config(ROOT / "configs/arithmetic-cpu.yaml")
    assert wave_sequences_per_engine(cpu) == 10 + 4 + 16 * 8 + 2 * 10 * 8 == 302


def test_per_sequence_seeds_are_on_for_cpu_engines_and_off_for_gpu_engines_unless_set():
    assert resolve_seeded_requests("auto", uses_gpu=False) and not resolve_seeded_requests("auto", uses_gpu=True)
    assert resolve_seeded_requests("on", uses_gpu=True) and not resolve_seeded_requests("off", uses_gpu=False)
    gpu = RolloutConfig(gpus_per_engine=1)
    spec = engine_spec_from_config("m", "bfloat16", 1024, gpu, SyncMode.ADAPTER, 16, 7, 801)
    assert not spec.seeded_requests and spec.seed == 7 and spec.max_num_seqs == 801


@pytest.mark.parametrize("value, engine_gpus, rank_gpus, asleep", [
    ("auto", 0.5, 0.5, True),  # configs/gpu-1x.yaml: one card shared
    ("auto", 1, 1, False),  # configs/gpu-qwen2.5-3b.yaml: a card each
    ("auto", 0, 0, False),  # CPU
    ("auto", 0.5, 1, False),  # the learner's ranks hold whole cards: the engines share only among themselves
    ("on", 1, 1, True), ("off", 0.5, 0.5, False)])
def test_engines_sleep_while_training_where_they_share_a_gpu_with_the_learner(value, engine_gpus, rank_gpus, asleep):
    assert resolve_sleep_while_training(value, engine_gpus, rank_gpus) is asleep


def test_sleep_mode_reaches_the_spec_and_is_refused_for_cpu_engines():
    spec = engine_spec_from_config("m", "bfloat16", 1024, RolloutConfig(gpus_per_engine=0.5), SyncMode.ADAPTER, 16,
                                   0, sleep_mode=True)
    assert spec.sleep_mode and not engine_spec_from_config("m", "bfloat16", 1024, RolloutConfig(), SyncMode.MERGED,
                                                           16, 0).sleep_mode
    with pytest.raises(ConfigError, match=r"rollout.sleep_while_training: on needs GPU engines \(rollout.gpus_per_engine "
                                          r"> 0\): vLLM's sleep mode runs on CUDA, ROCm and XPU, not on CPU"):
        load_config(None, ["rollout.sleep_while_training=on"])


def test_a_frozen_engine_serves_without_lora():
    spec = engine_spec_from_config("m", "bfloat16", 1024, RolloutConfig(), SyncMode.ADAPTER, 16, 0)
    assert spec.sync_mode is SyncMode.ADAPTER and frozen_engine_spec(spec).sync_mode is SyncMode.MERGED


def test_a_batch_cap_below_one_is_refused():
    with pytest.raises(ConfigError, match="rollout.max_num_seqs must be at least 1 or auto"):
        load_config(None, ["rollout.max_num_seqs=0"])


def test_an_engine_restarted_beside_a_learner_asks_for_what_is_free():
    """One 80 GiB card, rollout.gpu_memory_utilization 0.35: vLLM refuses to start unless 28 GiB are free."""
    from rollout.engine import GIB, gpu_fraction_that_fits

    total = [80 * GIB]
    assert gpu_fraction_that_fits(0.35, [80 * GIB], total) == 0.35  # a fresh card
    assert gpu_fraction_that_fits(0.35, [60 * GIB], total) == 0.35  # 0.75 free, less 0.02 headroom: enough
    assert gpu_fraction_that_fits(0.35, [24 * GIB], total) == 0.28  # 0.30 free: 0.28, less KV cache
    with pytest.raises(RuntimeError, match=r"needs 35% of its GPU and 10% is free \(70\.4 of 80\.0 GiB in use"):
        gpu_fraction_that_fits(0.35, [9.6 * GIB], total)  # 0.12 free, 0.10 after headroom: under half of 0.35
    # a tensor-parallel engine's shards: the fullest card decides
    assert gpu_fraction_that_fits(0.5, [80 * GIB, 32 * GIB], total * 2) == 0.38


def test_each_request_is_answered_with_its_roles_adapter_or_the_shared_one():
    engine = Engine.__new__(Engine)  # the routing alone: no vLLM behind it
    engine._served = {}
    assert engine._adapter_of("solver") is None  # before the first adapter sync: the base model
    engine._served = {"": "shared"}
    assert engine._adapter_of("solver") == engine._adapter_of("") == "shared"
    engine._served = {"proposer": "P", "solver": "S", "judge": "J"}
    assert [engine._adapter_of(role) for role in ("proposer", "solver", "judge")] == ["P", "S", "J"]
    with pytest.raises(ValueError, match=r"serves adapters for roles proposer, solver, judge, none for a request of "
                                         r"role ''"):
        engine._adapter_of("")


def test_one_adapter_per_role_reaches_the_engines_and_a_frozen_judge_serves_none():
    spec = engine_spec_from_config("m", "bfloat16", 1024, RolloutConfig(), SyncMode.ADAPTER, 16, 0,
                                   adapters_per_version=3)
    assert spec.adapters_per_version == 3 and frozen_engine_spec(spec).adapters_per_version == 1
    with pytest.raises(ConfigError, match=r"learner.adapters: per_role serves each role its own adapter, which needs "
                                          r"rollout.sync_mode adapter"):
        load_config(ROOT / "configs/arithmetic-cpu.yaml", ["learner.adapters=per_role"])
    assert load_config(ROOT / "configs/arithmetic-cpu.yaml",
                       ["learner.adapters=per_role", "rollout.sync_mode=adapter"]).learner.adapters == "per_role"
