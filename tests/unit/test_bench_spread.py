"""bench/common.py: the spread every benchmark reports, by hand."""

from bench.common import round_ratios, spread


def test_spread_is_min_median_max():
    assert spread([3.0, 1.0, 2.0, 10.0]) == {"n": 4, "min": 1.0, "median": 2.5, "max": 10.0}


def test_round_ratios_pair_each_lockstep_round_after_the_warm_up():
    ours = [{"seconds": 9.0}, {"seconds": 2.0}, {"seconds": 4.0}, {"seconds": 5.0}]
    peer = [{"seconds": 1.0}, {"seconds": 3.0}, {"seconds": 4.0}, {"seconds": 10.0}]
    assert round_ratios(ours, peer, warmup=1) == {"n": 3, "min": 1.0, "median": 1.5, "max": 2.0}
