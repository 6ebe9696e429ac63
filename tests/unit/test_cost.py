"""Each role's share of an iteration's time (selfplay.cost), by hand."""

from __future__ import annotations

import pytest

from selfplay.cost import role_time_shares


def test_each_phase_splits_by_the_roles_tokens():
    # generation 30 + 10 s (+ refill 0), split 600/300/100 tokens; training 40 s, split 1000/3000; wall 100 s
    shares = role_time_shares({"solver": 600, "judge": 300, "proposer": 100}, {"solver": 1000, "judge": 3000},
                              {"wave1_propose_solve": 30.0, "wave2_judge_solve": 10.0, "train": 40.0, "sync": 5.0},
                              100.0)
    assert shares == pytest.approx({"cost/generation_share_solver": 0.24, "cost/generation_share_judge": 0.12,
                                    "cost/generation_share_proposer": 0.04, "cost/training_share_solver": 0.10,
                                    "cost/training_share_judge": 0.30})


def test_nothing_generated_or_no_wall_time_gives_no_share():
    assert role_time_shares({"solver": 0}, {}, {"train": 1.0}, 10.0) == {}
    assert role_time_shares({"solver": 5}, {"solver": 5}, {"train": 1.0}, 0.0) == {}

