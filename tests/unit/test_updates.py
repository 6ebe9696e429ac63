"""Several updates per batch: how a batch is split into PPO epochs and mini-batches, and how their metrics merge;
which adapter trains on which samples."""

import pytest

from learner.group import merge_rank_metrics, merge_update_metrics
from learner.records import TrainBatch, TrainSample
from learner.trainer import SHARED_ADAPTER, BatchError, adapter_indices, plan_updates


def _batch(count: int) -> TrainBatch:
    return TrainBatch(tuple(TrainSample((1,), (index,), (-1.0,), float(index)) for index in range(count)))


def test_each_epoch_covers_every_sample_once_in_near_equal_shuffled_parts():
    batch = _batch(5)
    updates = plan_updates(batch, epochs=2, mini_batches=2, seed=3)
    assert [len(update.samples) for update in updates] == [3, 2, 3, 2]
    for epoch in (updates[:2], updates[2:]):
        assert sorted(sample.response_token_ids for update in epoch for sample in update.samples) == [
            (index,) for index in range(5)]
    assert plan_updates(batch, epochs=2, mini_batches=2, seed=3) == updates  # reproducible
    orders = {tuple(s.response_token_ids for u in plan_updates(batch, 1, 1, seed) for s in u.samples)
              for seed in range(10)}
    assert len(orders) > 1  # shuffled


def test_more_mini_batches_than_samples_drops_the_empty_parts():
    assert [len(update.samples) for update in plan_updates(_batch(2), epochs=1, mini_batches=4, seed=0)] == [1, 1]


def test_update_metrics_are_means_except_maxima_totals_and_sums():
    merged = merge_update_metrics([
        {"learner/clip_fraction": 0.0, "learner/ratio_max": 1.0, "learner/skipped_total": 0.0, "learner/tokens": 10.0},
        {"learner/clip_fraction": 0.5, "learner/ratio_max": 3.0, "learner/skipped_total": 1.0, "learner/tokens": 20.0},
    ])
    assert merged == {"learner/clip_fraction": 0.25, "learner/ratio_max": 3.0, "learner/skipped_total": 1.0,
                      "learner/tokens": 30.0, "learner/updates": 2.0}


def test_memory_is_the_largest_rank_after_the_last_update():
    ranks = merge_rank_metrics([{"memory/learner_rss_gb": 2.0, "learner/tokens": 5.0},
                                {"memory/learner_rss_gb": 3.5, "learner/tokens": 7.0}])
    assert ranks == {"memory/learner_rss_gb": 3.5, "learner/tokens": 12.0}
    merged = merge_update_metrics([{"memory/learner_rss_gb": 3.5}, {"memory/learner_rss_gb": 3.0}])
    assert merged == {"memory/learner_rss_gb": 3.0, "learner/updates": 2.0}


def test_one_shared_adapter_trains_every_sample_and_per_role_adapters_their_roles_samples():
    roles = ["solver", "judge", "solver", "proposer"]
    samples = [TrainSample((1,), (2,), (-1.0,), 1.0, role=role) for role in roles]
    assert adapter_indices(samples, (SHARED_ADAPTER,)) == {SHARED_ADAPTER: [0, 1, 2, 3]}
    assert adapter_indices(samples, ("proposer", "solver", "judge")) == {"solver": [0, 2], "judge": [1],
                                                                         "proposer": [3]}
    assert adapter_indices([], ("proposer", "solver", "judge")) == {} == adapter_indices([], (SHARED_ADAPTER,))
    with pytest.raises(BatchError, match=r"^sample 1 has role 'judge', which has no adapter \(adapters: solver\)$"):
        adapter_indices(samples, ("solver",))
