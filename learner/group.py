"""The learner as a group of Ray actors: `learner.num_workers` data-parallel DeepSpeed ranks.

The group plans each step (length-bucketed micro-batches of the global batch, the same count on every rank),
runs the ranks together, and merges their metrics. Rank 0 exports weights: with ZeRO stages 0-2 every rank
holds the full LoRA parameters, so its copy is the model (ZeRO-3 would need a gather first).
"""

from __future__ import annotations

from dataclasses import replace

import ray

from learner.config import LearnerConfig
from learner.records import TrainBatch, TrainSample
from learner.trainer import Learner, LearnerSetup, free_port, plan_step, plan_updates
from learner.weights import SyncMode, SyncProbe, WeightUpdate


START_TIMEOUT_S = 600.0  # loading a large model takes minutes; a rank that cannot be placed never starts

def merge_rank_metrics(per_rank: list[dict[str, float]]) -> dict[str, float]:
    """Loss-like metrics are each rank's share of the global token mean, so they add up; `*_max` take the max;
    the rest (grad norm, lr, skip counters: identical on every rank after the all-reduce) come from rank 0."""
    additive = ("loss", "clip_fraction", "approx_kl", "importance_logprob_diff_mean", "importance_weight_mean",
                "importance_capped_fraction", "kl", "tokens")
    merged = dict(per_rank[0])
    for key in merged:
        values = [metrics.get(key, 0.0) for metrics in per_rank]
        if key.endswith("_max"):
            merged[key] = max(values)
        elif key.endswith(additive):
            merged[key] = sum(values)
    return merged


def merge_update_metrics(per_update: list[dict[str, float]]) -> dict[str, float]:
    """One batch's metrics from its updates: the mean of each, except `*_max` (max), `*_total` (the last),
    tokens and step seconds (summed); `learner/updates` counts them."""
    merged: dict[str, float] = {}
    for key in per_update[-1]:
        values = [metrics[key] for metrics in per_update if key in metrics]
        if key.endswith("_max"):
            merged[key] = max(values)
        elif key.endswith("_total"):
            merged[key] = values[-1]
        elif key in ("learner/tokens", "learner/step_seconds", "learner/skipped_nonfinite"):
            merged[key] = sum(values)
        else:
            merged[key] = sum(values) / len(values)
    return merged | {"learner/updates": float(len(per_update))}


class LearnerGroup:
    def __init__(self, config: LearnerConfig, setup: LearnerSetup) -> None:
        self.config = config
        self.setup = setup
        port = free_port()
        worker = ray.remote(num_cpus=config.cpus_per_worker, num_gpus=config.gpus_per_worker)(Learner)
        self.workers = [
            worker.options(name=None).remote(config, LearnerSetup(
                model_path=setup.model_path, dtype=setup.dtype, max_model_len=setup.max_model_len,
                seed=setup.seed, rank=rank, world_size=config.num_workers, master_port=port))
            for rank in range(config.num_workers)]
        try:
            ray.get([w.__ray_ready__.remote() for w in self.workers], timeout=START_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            for worker in self.workers:
                ray.kill(worker)
            raise RuntimeError(f"the learner's {config.num_workers} rank(s) did not start within {START_TIMEOUT_S:g} s "
                               f"(each asks for {config.cpus_per_worker:g} CPUs and {config.gpus_per_worker:g} GPUs "
                               f"on one node; is there a node with that much free?)") from None

    def train(self, batch: TrainBatch) -> dict[str, float]:
        """The GRPO updates of one global batch of all roles: `ppo_epochs` passes of `mini_batches` optimizer
        steps each (one update by default). An empty batch is a no-op."""
        if not batch.samples:
            return {"learner/empty_batch": 1.0}
        ray.get(self.workers[0].check_batch.remote(batch))
        updates = [batch]
        if self.config.ppo_epochs * self.config.mini_batches > 1:
            old = ray.get(self.workers[0].policy_logprobs.remote(list(batch.samples)))
            batch = TrainBatch(tuple(replace(sample, old_logprobs=logprobs)
                                     for sample, logprobs in zip(batch.samples, old)))
            updates = plan_updates(batch, self.config.ppo_epochs, self.config.mini_batches,
                                   seed=self.setup.seed + batch.response_tokens)
        per_update = []
        for update in updates:
            plan, padding = plan_step(update, self.config.micro_batch_tokens, self.config.num_workers)
            tokens = update.response_tokens
            per_rank = ray.get([worker.train_step.remote(plan[rank], tokens)
                                for rank, worker in enumerate(self.workers)])
            per_update.append(merge_rank_metrics(per_rank) | {"learner/padding_fraction": padding})
        return merge_update_metrics(per_update)

    def export(self, version: int, mode: SyncMode, directory: str, probe: SyncProbe | None = None) -> WeightUpdate:
        return ray.get(self.workers[0].export.remote(version, mode, directory, probe))

    def policy_logprobs(self, samples: list[TrainSample]) -> list[tuple[float, ...]]:
        """Each sample's response logprobs under the current weights ([R] each)."""
        return ray.get(self.workers[0].policy_logprobs.remote(list(samples)))

    def drift_from_base(self, samples: list[TrainSample]) -> float:
        return ray.get(self.workers[0].drift_from_base.remote(list(samples)))

    def probe_logprobs(self, token_ids: list[int]) -> list[float]:
        return ray.get(self.workers[0].sequence_logprobs.remote(token_ids))

    def save_checkpoint(self, directory: str) -> None:
        ray.get([worker.save_checkpoint.remote(directory) for worker in self.workers])

    def load_checkpoint(self, directory: str) -> None:
        ray.get([worker.load_checkpoint.remote(directory) for worker in self.workers])

    def shutdown(self) -> None:
        for worker in self.workers:
            ray.kill(worker)
