"""The placement plan on a simulated GPU cluster (ray.cluster_utils.Cluster: two nodes declaring 4 GPUs each, on
this CPU): `launch/evolve.py --dry-run` against it prints the shipped 3B config's plan (the learner's four ranks on
one node, the four engines on the other) and refuses, in one line and within seconds, a plan the nodes cannot
hold; engines then start in reservations pinned to their planned nodes (stand-in engine bodies: no GPU here)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray

from learner.hardware import alive_nodes
from rollout.config import RolloutConfig
from rollout.engine import EngineSpec
from rollout.engine_pool import EnginePool
from selfplay.config import load_config
from selfplay.placement import cluster_nodes
from selfplay.preflight import plan_run_placement
from tests.ray_cluster import ray_cluster

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs/gpu-qwen2.5-3b.yaml"


@pytest.fixture(scope="module")
def gpu_cluster():
    with ray_cluster({"num_cpus": 32, "num_gpus": 4}, {"num_cpus": 32, "num_gpus": 4}) as cluster:
        yield cluster


def dry_run(cluster, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "launch/evolve.py", "--config", str(CONFIG), "--dry-run", *overrides],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=os.environ | {"RAY_ADDRESS": cluster.address})


def test_dry_run_prints_the_plan_and_refuses_what_the_nodes_cannot_hold(gpu_cluster):
    result = dry_run(gpu_cluster)
    assert result.returncode == 0, result.stderr
    plan = result.stdout.split(f"# placement plan on the cluster at {gpu_cluster.address}:\n")[1].splitlines()
    assert len(plan) == 2
    assert all(re.match(r"#   [\d.]+ \(\w{6}\): ", line) for line in plan), plan  # one address: names carry ids
    assert {line.split(": ", 1)[1] for line in plan} == {"learner ranks 0-3 (4 of 4 GPUs, 16 of 32 CPUs)",
                                                         "engines 0-3 (4 of 4 GPUs, 16 of 32 CPUs)"}
    began = time.monotonic()
    refused = dry_run(gpu_cluster, "rollout.num_engines=5")
    assert time.monotonic() - began < 60
    assert refused.returncode == 2 and refused.stdout == ""
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(
        r"config error: placement: engine 4 needs 1 GPUs and 4 CPUs on one node; free after what was placed before "
        r"it: [\d.]+ \(\w{6}\) 0 GPUs and 16 CPUs, [\d.]+ \(\w{6}\) 0 GPUs and 16 CPUs\. Lower "
        r"rollout\.num_engines, \*_per_engine, learner\.num_workers or \*_per_worker, or add nodes", lines[0]), lines


class NodeHost:
    """An engine body that only says where it runs."""

    def __init__(self, spec: EngineSpec, cpu_share=None) -> None:
        pass

    def ready(self) -> int:
        return 0

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def close(self) -> None:
        pass


def test_engines_start_in_reservations_on_their_planned_nodes(gpu_cluster):
    ray.init(address=gpu_cluster.address, include_dashboard=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    config = load_config(CONFIG)
    plan = plan_run_placement(config, cluster_nodes(alive_nodes()))
    learner_node = plan.nodes_of("learner rank")[0]
    planned = plan.nodes_of("engine")
    assert len(set(planned)) == 1 and planned[0] != learner_node
    rollout = RolloutConfig(num_engines=4, cpus_per_engine=4, gpus_per_engine=1)
    with EnginePool(EngineSpec(model_path="stand-in"), rollout, host_class=NodeHost, nodes=planned) as pool:
        assert ray.get([handle.node_id.remote() for handle in pool.engine_handles()]) == planned
        # the engines' reservations hold every GPU of their node and none of the learner's
        free = ray._private.state.available_resources_per_node()
        assert free[planned[0]].get("GPU", 0.0) == 0.0 and free[learner_node].get("GPU", 0.0) == 4.0
