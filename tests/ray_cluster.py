"""A real multi-node Ray cluster on this machine for the cluster tests (ray.cluster_utils.Cluster)."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def ray_cluster(head: dict, *workers: dict):
    """A head node and one node per `workers` entry, each with the resources its arguments declare (GPUs may be
    declared on a CPU); shut down, with this process's Ray connection, when the block ends."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"include_dashboard": False, **head})
    for node in workers:
        cluster.add_node(**node)
    cluster.wait_for_nodes()
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
