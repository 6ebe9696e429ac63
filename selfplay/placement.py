"""One placement plan for everything the run reserves, made before anything starts: which node holds each learner
rank and each engine. Pure: it reads node capacities and returns the plan; selfplay.wiring reserves it as Ray
placement groups pinned to those nodes, so what runs is what the plan says.

Order and rules:
1. Learner ranks first, as one group, by `learner.placement`: PACK fills the node with the most room before the
   next, so ranks share a node (NVLink, shared memory) wherever they fit; STRICT_PACK puts all on one node;
   STRICT_SPREAD each on its own node; SPREAD one per node while nodes last, then again from the first.
2. Then engines, the policy's and then a frozen judge's, one at a time: each on the node with the most room left
   that holds its whole bundle (a tensor-parallel engine's GPUs on one node), ties to the earlier node.
"Room" is free GPUs, then free CPUs. Engines started before the learner without a plan took 2 + 2 GPUs of two 4-GPU
nodes and left the 4-rank learner no node; planned together, the learner takes one node and the engines the other.
A plan the nodes cannot hold raises PlacementError naming what does not fit and what each node has left.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

EPSILON = 1e-9


class PlacementError(ValueError):
    """The cluster cannot hold the run's reservations; the message says what does not fit."""


@dataclass(frozen=True)
class Node:
    node_id: str
    name: str  # what the plan prints: an address, a host name
    cpus: float
    gpus: float


@dataclass(frozen=True)
class Demand:
    """`count` identical reservations of one kind: learner ranks or one pool's engines."""

    kind: str  # "learner rank", "engine", "judge engine": what the plan calls each
    count: int
    cpus: float
    gpus: float


@dataclass(frozen=True)
class Placed:
    kind: str
    index: int
    node_id: str
    cpus: float
    gpus: float


@dataclass(frozen=True)
class PlacementPlan:
    placed: tuple[Placed, ...]
    nodes: tuple[Node, ...]

    def nodes_of(self, kind: str) -> list[str]:
        """The node of each reservation of `kind`, by index."""
        return [slot.node_id for slot in sorted(self.placed, key=lambda slot: slot.index) if slot.kind == kind]

    def lines(self) -> list[str]:
        """One line per node that holds something: its name, what it holds, its GPUs and CPUs used of its total."""
        lines = []
        for node in self.nodes:
            held = [slot for slot in self.placed if slot.node_id == node.node_id]
            if not held:
                continue
            kinds = dict.fromkeys(slot.kind for slot in held)
            what = "; ".join(f"{kind}s {_indices([s.index for s in held if s.kind == kind])}" for kind in kinds)
            lines.append(f"{node.name}: {what} ({sum(s.gpus for s in held):g} of {node.gpus:g} GPUs, "
                         f"{sum(s.cpus for s in held):g} of {node.cpus:g} CPUs)")
        return lines


def cluster_nodes(ray_nodes: Sequence[dict]) -> list[Node]:
    """Nodes from `ray.nodes()` entries (the live ones), in address order; a name is the node's address, with the
    start of its id where several nodes share one address (a simulated cluster)."""
    live = sorted((node for node in ray_nodes if node.get("Alive", True)),
                  key=lambda node: (node["NodeManagerAddress"], node["NodeID"]))
    shared = {address for address in (node["NodeManagerAddress"] for node in live)
              if sum(other["NodeManagerAddress"] == address for other in live) > 1}
    return [Node(node["NodeID"], node["NodeManagerAddress"] + (f" ({node['NodeID'][:6]})"
                                                               if node["NodeManagerAddress"] in shared else ""),
                 float(node["Resources"].get("CPU", 0.0)), float(node["Resources"].get("GPU", 0.0)))
            for node in live]


def plan_placement(nodes: Sequence[Node], learner: Demand, learner_strategy: str,
                   engines: Sequence[Demand]) -> PlacementPlan:
    """Where each of `learner`'s ranks (by `learner_strategy`, a Ray placement strategy) and then each of `engines`
    goes on `nodes` (see the module docstring); PlacementError where something does not fit."""
    free = {node.node_id: [node.gpus, node.cpus] for node in nodes}
    order = [node.node_id for node in nodes]
    placed = []

    def fits(node_id: str, demand: Demand) -> bool:
        gpus, cpus = free[node_id]
        return demand.gpus <= gpus + EPSILON and demand.cpus <= cpus + EPSILON

    def take(node_id: str, demand: Demand, index: int) -> None:
        free[node_id][0] -= demand.gpus
        free[node_id][1] -= demand.cpus
        placed.append(Placed(demand.kind, index, node_id, demand.cpus, demand.gpus))

    def roomiest(demand: Demand) -> str | None:
        holding = [node_id for node_id in order if fits(node_id, demand)]
        return max(holding, key=lambda node_id: (free[node_id][0], free[node_id][1], -order.index(node_id)),
                   default=None)

    def refuse(what: str) -> PlacementError:
        left = ", ".join(f"{node.name} {free[node.node_id][0]:g} GPUs and {free[node.node_id][1]:g} CPUs"
                         for node in nodes)
        return PlacementError(f"placement: {what}; free after what was placed before it: {left or 'no nodes'}. "
                              f"Lower rollout.num_engines, *_per_engine, learner.num_workers or *_per_worker, or "
                              f"add nodes")

    for rank, node_id in enumerate(_learner_nodes(learner, learner_strategy, order, free, refuse)):
        take(node_id, learner, rank)
    for demand in engines:
        for index in range(demand.count):
            node_id = roomiest(demand)
            if node_id is None:
                raise refuse(f"{demand.kind} {index} needs {demand.gpus:g} GPUs and {demand.cpus:g} CPUs on one node")
            take(node_id, demand, index)
    return PlacementPlan(tuple(placed), tuple(nodes))


def _learner_nodes(learner: Demand, strategy: str, order: list[str], free: dict[str, list[float]],
                   refuse) -> list[str]:
    """The node of each rank (the ranks are placed together, before anything else)."""
    need = f"{learner.count} learner ranks of {learner.gpus:g} GPUs and {learner.cpus:g} CPUs"
    per_node = {node_id: _how_many(learner, *free[node_id]) for node_id in order}
    if strategy in ("PACK", "STRICT_PACK"):
        chosen: list[str] = []
        for node_id in sorted(order, key=lambda n: (-per_node[n], order.index(n))):
            chosen += [node_id] * min(per_node[node_id], learner.count - len(chosen))
        if len(chosen) < learner.count or (strategy == "STRICT_PACK" and len(set(chosen)) > 1):
            raise refuse(f"{need} do not fit" + (" on one node (learner.placement=STRICT_PACK)"
                                                 if strategy == "STRICT_PACK" else ""))
        return chosen
    holding = [node_id for node_id in order if per_node[node_id] > 0]
    if strategy == "STRICT_SPREAD":
        if len(holding) < learner.count:
            raise refuse(f"{need} each need a node of their own (learner.placement=STRICT_SPREAD); "
                         f"{len(holding)} node(s) can hold one")
        return holding[:learner.count]
    chosen, used = [], dict.fromkeys(order, 0)  # SPREAD: round-robin over the nodes with room
    while len(chosen) < learner.count:
        ready = [node_id for node_id in holding if used[node_id] < per_node[node_id]]
        if not ready:
            raise refuse(f"{need} do not fit")
        for node_id in ready[:learner.count - len(chosen)]:
            used[node_id] += 1
            chosen.append(node_id)
    return chosen


def _how_many(demand: Demand, gpus: float, cpus: float) -> int:
    """How many of `demand` (at most its count) fit in `gpus` and `cpus`."""
    counts = [demand.count] + [int((have + EPSILON) // want) for want, have in ((demand.gpus, gpus),
                                                                               (demand.cpus, cpus)) if want > 0]
    return min(counts)


def _indices(values: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    runs: list[list[int]] = []
    for value in sorted(values):
        if runs and value == runs[-1][-1] + 1:
            runs[-1].append(value)
        else:
            runs.append([value])
    return ", ".join(f"{run[0]}-{run[-1]}" if len(run) > 1 else f"{run[0]}" for run in runs)
