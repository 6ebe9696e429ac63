"""The placement plan: learner ranks first, then engines on the roomiest node that holds each whole; the shipped GPU
configs on simulated clusters (2 x 4 GPUs, 1 x 8, one GPU) against layouts written out by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfplay.config import load_config
from selfplay.placement import Demand, Node, PlacementError, _indices, cluster_nodes, plan_placement
from selfplay.preflight import placement_demands, plan_run_placement

ROOT = Path(__file__).resolve().parents[2]
TWO_BY_FOUR = [Node("a", "10.0.0.1", 32, 4), Node("b", "10.0.0.2", 32, 4)]
ONE_BY_EIGHT = [Node("c", "10.0.0.3", 64, 8)]


def layout(plan) -> dict[str, list[str]]:
    return {kind: plan.nodes_of(kind) for kind in ("learner rank", "engine", "judge engine") if plan.nodes_of(kind)}


def test_the_3b_config_on_two_4_gpu_nodes_keeps_the_learner_on_one_node_and_the_engines_on_the_other():
    plan = plan_run_placement(load_config(ROOT / "configs/gpu-qwen2.5-3b.yaml"), TWO_BY_FOUR)
    assert layout(plan) == {"learner rank": ["a"] * 4, "engine": ["b"] * 4}
    assert plan.lines() == ["10.0.0.1: learner ranks 0-3 (4 of 4 GPUs, 16 of 32 CPUs)",
                            "10.0.0.2: engines 0-3 (4 of 4 GPUs, 16 of 32 CPUs)"]


def test_the_3b_config_on_one_8_gpu_node_shares_it():
    plan = plan_run_placement(load_config(ROOT / "configs/gpu-qwen2.5-3b.yaml"), ONE_BY_EIGHT)
    assert layout(plan) == {"learner rank": ["c"] * 4, "engine": ["c"] * 4}
    assert plan.lines() == ["10.0.0.3: learner ranks 0-3; engines 0-3 (8 of 8 GPUs, 32 of 64 CPUs)"]


def test_the_one_gpu_config_splits_its_gpu_and_a_second_engine_is_refused_naming_what_is_left():
    one_gpu = [Node("d", "10.0.0.4", 16, 1)]
    config = load_config(ROOT / "configs/gpu-1x.yaml")
    assert plan_run_placement(config, one_gpu).lines() == [
        "10.0.0.4: learner ranks 0; engines 0 (1 of 1 GPUs, 8 of 16 CPUs)"]
    learner, engines = placement_demands(load_config(ROOT / "configs/gpu-1x.yaml", ["rollout.num_engines=2"]))
    with pytest.raises(PlacementError, match=r"^placement: engine 1 needs 0.5 GPUs and 4 CPUs on one node; free "
                                             r"after what was placed before it: 10.0.0.4 0 GPUs and 8 CPUs\. Lower"):
        plan_placement(one_gpu, learner, "PACK", engines)


def test_a_frozen_judges_engines_come_after_the_policy_engines():
    config = load_config(ROOT / "configs/gpu-qwen2.5-3b.yaml", ["rollout.judge_model=same", "rollout.num_engines=2"])
    plan = plan_run_placement(config, [*TWO_BY_FOUR, Node("e", "10.0.0.5", 32, 4)])
    # learner fills a; engines go to the roomiest node with ties to the earlier: b, e, b, e
    assert layout(plan) == {"learner rank": ["a"] * 4, "engine": ["b", "e"], "judge engine": ["b", "e"]}


def test_tensor_parallel_engines_keep_their_gpus_on_one_node():
    learner = Demand("learner rank", 2, 1, 1)
    engine = Demand("engine", 2, 1, 2)  # tensor-parallel size 2
    nodes = [Node("a", "a", 8, 3), Node("b", "b", 8, 3)]
    # PACK: ranks on a (1 GPU left there), engine 0 on b (1 left), engine 1 has no node with 2 free GPUs
    with pytest.raises(PlacementError, match="engine 1 needs 2 GPUs"):
        plan_placement(nodes, learner, "PACK", [engine])
    plan = plan_placement(nodes, learner, "STRICT_SPREAD", [engine])  # a rank on each node leaves 2 GPUs on each
    assert layout(plan) == {"learner rank": ["a", "b"], "engine": ["a", "b"]}


def test_learner_strategies():
    nodes = [Node("a", "a", 4, 2), Node("b", "b", 4, 4), Node("c", "c", 4, 2)]
    ranks = Demand("learner rank", 4, 1, 1)
    assert plan_placement(nodes, ranks, "PACK", []).nodes_of("learner rank") == ["b"] * 4  # the roomiest first
    assert plan_placement(nodes, ranks, "STRICT_PACK", []).nodes_of("learner rank") == ["b"] * 4
    assert plan_placement(nodes, ranks, "SPREAD", []).nodes_of("learner rank") == ["a", "b", "c", "a"]
    with pytest.raises(PlacementError, match=r"4 learner ranks .* need a node of their own .*; 3 node\(s\)"):
        plan_placement(nodes, ranks, "STRICT_SPREAD", [])
    six = Demand("learner rank", 6, 1, 1)
    assert plan_placement(nodes, six, "PACK", []).nodes_of("learner rank") == ["b"] * 4 + ["a"] * 2
    with pytest.raises(PlacementError, match=r"6 learner ranks of 1 GPUs and 1 CPUs do not fit on one node"):
        plan_placement(nodes, six, "STRICT_PACK", [])


def test_cpu_only_reservations_spread_by_free_cpus():
    nodes = [Node("a", "a", 2, 0), Node("b", "b", 2, 0)]
    plan = plan_placement(nodes, Demand("learner rank", 2, 1, 0), "STRICT_SPREAD", [Demand("engine", 2, 1, 0)])
    assert layout(plan) == {"learner rank": ["a", "b"], "engine": ["a", "b"]}


def test_cluster_nodes_read_rays_node_table_and_name_nodes_that_share_an_address():
    table = [{"NodeID": "ffee01", "NodeManagerAddress": "10.0.0.9", "Alive": True, "Resources": {"CPU": 2.0}},
             {"NodeID": "aabb02", "NodeManagerAddress": "10.0.0.9", "Alive": True, "Resources": {"CPU": 2.0,
                                                                                               "GPU": 4.0}},
             {"NodeID": "ccdd03", "NodeManagerAddress": "10.0.0.1", "Alive": True, "Resources": {"CPU": 8.0}},
             {"NodeID": "dead04", "NodeManagerAddress": "10.0.0.2", "Alive": False, "Resources": {"CPU": 8.0}}]
    assert cluster_nodes(table) == [Node("ccdd03", "10.0.0.1", 8.0, 0.0), Node("aabb02", "10.0.0.9 (aabb02)", 2.0, 4.0),
                                    Node("ffee01", "10.0.0.9 (ffee01)", 2.0, 0.0)]


def test_indices_are_written_as_runs():
    assert _indices([5, 0, 1, 2, 7, 8]) == "0-2, 5, 7-8"
    assert _indices([3]) == "3"
