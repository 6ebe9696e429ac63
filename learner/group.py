"""The learner as a group of Ray actors: `learner.num_workers` data-parallel DeepSpeed ranks.

The group plans each step (length-bucketed micro-batches of the global batch, the same count on every rank),
runs the ranks together, and merges their metrics. Rank 0 exports weights: with ZeRO stages 0-2 every rank
holds the full LoRA parameters, so its copy is the model (ZeRO-3 would need a gather first).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import ray

from learner.calls import gathered
from learner.config import LearnerConfig
from learner.hardware import pinned_placement_group, resource_bundle
from learner.records import TrainBatch, TrainSample
from learner.trainer import (SHARED_ADAPTER, Learner, LearnerSetup, adapter_indices, free_port, plan_step,
                             plan_updates)
from learner.weights import SyncMode, SyncProbe, WeightUpdate


REMOVE_EXPORTS_S = 10.0  # a rank removing its exported weights before it is killed (a hung rank cannot)
START_TIMEOUT_S = 600.0  # loading a large model takes minutes; a rank that cannot be placed never starts


def merge_rank_metrics(per_rank: list[dict[str, float]]) -> dict[str, float]:
    """Loss-like metrics are each rank's share of the global token mean, so they add up; `*_max` and memory/*
    take the max (the largest rank's); the rest (grad norm, lr, skip counters: identical on every rank after the
    all-reduce) come from rank 0."""
    additive = ("loss", "clip_fraction", "approx_kl", "importance_logprob_diff_mean", "importance_weight_mean",
                "importance_capped_fraction", "kl", "tokens")
    merged: dict[str, float] = {}
    for key in dict.fromkeys(key for metrics in per_rank for key in metrics):  # a filler-only rank lacks some
        values = [metrics.get(key, 0.0) for metrics in per_rank]
        if key.endswith("_max") or key.startswith("memory/"):
            merged[key] = max(values)
        elif key.endswith(additive):
            merged[key] = sum(values)
        else:
            merged[key] = next(metrics[key] for metrics in per_rank if key in metrics)
    return merged


def merge_update_metrics(per_update: list[dict[str, float]]) -> dict[str, float]:
    """One batch's metrics from its updates: the mean of each, except `*_max` (max), `*_total` and memory/* (the
    last), tokens and step seconds (summed); `learner/updates` counts them."""
    merged: dict[str, float] = {}
    for key in per_update[-1]:
        values = [metrics[key] for metrics in per_update if key in metrics]
        if key.endswith("_max"):
            merged[key] = max(values)
        elif key.endswith("_total") or key.startswith("memory/"):
            merged[key] = values[-1]
        elif key in ("learner/tokens", "learner/step_seconds", "learner/skipped_nonfinite"):
            merged[key] = sum(values)
        else:
            merged[key] = sum(values) / len(values)
    return merged | {"learner/updates": float(len(per_update))}


def rank_zero_address() -> tuple[str, int]:
    """Where the ranks meet: the node address of the process that will be rank 0, and a port free there."""
    return ray.util.get_node_ip_address(), free_port()


class LearnerGroup:
    """`num_workers` DeepSpeed ranks, one Ray actor each, in one placement group: rank i on node `nodes[i]` where
    given (the run's placement plan, selfplay.placement), else where `learner.placement` puts it (PACK keeps them
    together where they fit; STRICT_SPREAD puts each on its own node). They meet at rank 0's node address. With
    `ship_exports` (engines on other nodes, no shared storage) each export also travels as a Ray object."""

    def __init__(self, config: LearnerConfig, setup: LearnerSetup, ship_exports: bool = False,
                 nodes: list[str] | None = None) -> None:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        self.config = config
        self.setup = setup
        self.ship_exports = ship_exports
        if nodes is not None and len(nodes) != config.num_workers:
            raise ValueError(f"a plan for {len(nodes)} learner ranks, but learner.num_workers is {config.num_workers}")
        bundle = resource_bundle(config.cpus_per_worker, config.gpus_per_worker)
        self.placement = pinned_placement_group([bundle] * config.num_workers, nodes, config.placement)
        self.workers = []
        try:
            ray.get(self.placement.ready(), timeout=START_TIMEOUT_S)
            placed = [PlacementGroupSchedulingStrategy(self.placement, placement_group_bundle_index=rank)
                      for rank in range(config.num_workers)]
            address, port = ray.get(ray.remote(rank_zero_address).options(
                num_cpus=0, scheduling_strategy=placed[0]).remote())
            worker = ray.remote(num_cpus=config.cpus_per_worker, num_gpus=config.gpus_per_worker)(Learner)
            self.workers = [
                worker.options(scheduling_strategy=placed[rank]).remote(config, replace(
                    setup, rank=rank, world_size=config.num_workers, master_address=address, master_port=port))
                for rank in range(config.num_workers)]
            ray.get([w.__ray_ready__.remote() for w in self.workers], timeout=START_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            self.shutdown()
            raise RuntimeError(f"the learner's {config.num_workers} rank(s) did not start within {START_TIMEOUT_S:g} s "
                               f"(each asks for {config.cpus_per_worker:g} CPUs and {config.gpus_per_worker:g} GPUs, "
                               f"placed {config.placement}; does the cluster have that much free?)") from None
        except BaseException:
            self.shutdown()
            raise

    def train(self, batch: TrainBatch) -> dict[str, float]:
        """The GRPO updates of one global batch of all roles: `ppo_epochs` passes of `mini_batches` optimizer
        steps each (one update by default), per adapter on its samples. An empty batch is a no-op. With one
        adapter per role, each learner/* metric is also given per adapter (learner/KEY_ROLE)."""
        if not batch.samples:
            return {"learner/empty_batch": 1.0}
        self._on_rank_zero("check_batch", batch)
        per_adapter = {adapter: self._updates(TrainBatch(tuple(batch.samples[index] for index in indices)), adapter)
                       for adapter, indices in adapter_indices(batch.samples, self.setup.adapters).items()}
        merged = merge_update_metrics([metrics for updates in per_adapter.values() for metrics in updates])
        if self.setup.adapters == (SHARED_ADAPTER,):
            return merged
        for adapter, updates in per_adapter.items():
            merged |= {f"{key}_{adapter}": value for key, value in merge_update_metrics(updates).items()
                       if key.startswith("learner/")}
        return merged

    def _updates(self, batch: TrainBatch, adapter: str) -> list[dict[str, float]]:
        """Each update's merged metrics, for one adapter's samples."""
        updates = [batch]
        if self.config.ppo_epochs * self.config.mini_batches > 1:
            old = self._on_rank_zero("policy_logprobs", list(batch.samples))
            batch = TrainBatch(tuple(replace(sample, old_logprobs=logprobs)
                                     for sample, logprobs in zip(batch.samples, old)))
            updates = plan_updates(batch, self.config.ppo_epochs, self.config.mini_batches,
                                   seed=self.setup.seed + batch.response_tokens)
        per_update = []
        for update in updates:
            plan, padding = plan_step(update, self.config.micro_batch_tokens, self.config.num_workers,
                                      self.config.pack_sequences, self.config.pad_multiple)
            tokens = update.response_tokens
            per_rank = gathered([worker.train_step.remote(plan[rank], tokens, adapter)
                                 for rank, worker in enumerate(self.workers)], "train_step", self.config.call_timeout_s)
            per_update.append(merge_rank_metrics(per_rank) | {"learner/padding_fraction": padding})
        return per_update

    def export(self, version: int, mode: SyncMode, directory: str, probe: SyncProbe | None = None) -> WeightUpdate:
        update = self._on_rank_zero("export", version, mode, directory, probe)
        if not self.ship_exports:
            return update
        return replace(update, node_id=self.rank_nodes()[0], files=self.workers[0].read_export.remote(update.path))

    def policy_logprobs(self, samples: list[TrainSample]) -> list[tuple[float, ...]]:
        """Each sample's response logprobs under the current weights ([R] each)."""
        return self._on_rank_zero("policy_logprobs", list(samples))

    def drift_from_base(self, samples: list[TrainSample]) -> float:
        return self._on_rank_zero("drift_from_base", list(samples))

    def probe_logprobs(self, token_ids: list[int]) -> list[float]:
        return self._on_rank_zero("sequence_logprobs", token_ids)

    def _on_rank_zero(self, call: str, *args):
        return gathered([getattr(self.workers[0], call).remote(*args)], call, self.config.call_timeout_s)[0]

    def _on_every_rank(self, call: str, *args) -> list:
        return gathered([getattr(worker, call).remote(*args) for worker in self.workers], call,
                        self.config.call_timeout_s)

    def rank_nodes(self) -> list[str]:
        """The Ray node id of each rank, by rank."""
        from ray.util.placement_group import placement_group_table

        nodes = placement_group_table(self.placement)["bundles_to_node_id"]
        return [nodes[rank] for rank in range(self.config.num_workers)]

    def check_shared_directory(self, directory: str) -> None:
        """Every rank writes checkpoints into `directory`: raise (one line) when a rank's writes do not show up where
        this process reads them, i.e. a rank on another node without shared storage."""
        markers = [Path(name) for name in self._on_every_rank("write_marker", directory)]
        unseen = [rank for rank, marker in enumerate(markers) if not marker.is_file()]
        for marker in markers:
            marker.unlink(missing_ok=True)
        if unseen:
            raise RuntimeError(f"learner rank(s) {unseen} write to another disk than this driver's {directory}: "
                               f"set run.output_dir to storage that every node mounts")

    def save_checkpoint(self, directory: str) -> None:
        self._on_every_rank("save_checkpoint", directory)

    def save_adapter(self, directory: str) -> str:
        """Rank 0's adapter (ZeRO-2 keeps every rank's LoRA weights whole) as a standard PEFT directory."""
        return self._on_rank_zero("save_adapter", directory)

    def load_checkpoint(self, directory: str) -> None:
        self._on_every_rank("load_checkpoint", directory)

    def shutdown(self) -> None:
        from ray.util.placement_group import remove_placement_group

        ray.wait([worker.remove_exports.remote() for worker in self.workers], num_returns=len(self.workers),
                 timeout=REMOVE_EXPORTS_S)
        for worker in self.workers:
            ray.kill(worker)
        remove_placement_group(self.placement)
