"""selfplay/guard.py: best score and checkpoint per eval set, and the guard's stop/rollback rule, on hand-made
score sequences."""

from selfplay.guard import Best, BestTracker


def test_best_per_set_with_ties_keeping_the_older_checkpoint():
    best = BestTracker("lenient_accuracy")
    assert best.observe(0, {"data": 0.10, "gsm8k": 0.05}) == ["data", "gsm8k"]
    assert best.observe(2, {"data": 0.20, "gsm8k": 0.05}) == ["data"]  # a tie is not an improvement
    best.saved(["data"], "iter-000002")
    assert best.observe(4, {"data": 0.15, "gsm8k": 0.07}) == ["gsm8k"]
    best.saved(["gsm8k"], "iter-000004")
    assert best.best == {"data": Best(0.20, 2, "iter-000002"), "gsm8k": Best(0.07, 4, "iter-000004")}
    assert best.protected() == {"iter-000002", "iter-000004"}
    assert best.summary()["data"] == {"metric": "lenient_accuracy", "score": 0.20, "iteration": 2,
                                      "checkpoint": "iter-000002"}


def test_guard_trips_after_patience_evaluations_below_best_minus_margin():
    best = BestTracker("accuracy", watched="data", action="rollback", margin=0.05, patience=2)
    best.observe(1, {"data": 0.30})
    best.saved(["data"], "iter-000001")
    best.observe(2, {"data": 0.24})  # 0.06 below: 1
    assert best.trip() is None
    best.observe(3, {"data": 0.26})  # 0.04 below, within the margin: the count starts again
    assert best.below == 0 and best.trip() is None
    best.observe(4, {"data": 0.20})
    best.observe(5, {"data": 0.10})
    trip = best.trip()
    assert trip.action == "rollback" and trip.best == Best(0.30, 1, "iter-000001")
    assert trip.message == ("guard: data accuracy 0.100 has stayed below its best 0.300 (iteration 1, iter-000001) "
                            "by more than 0.05 for 2 evaluations: rolling back to it")
    assert best.below == 0  # after acting the count starts again


def test_guard_stops_when_the_best_is_the_base_model_or_the_action_is_stop():
    base = BestTracker("accuracy", watched="data", action="rollback", margin=0.0, patience=1)
    base.observe(0, {"data": 0.5})  # step 0: the base model, no checkpoint
    base.observe(1, {"data": 0.4})
    trip = base.trip()
    assert trip.action == "stop" and "the base model (no checkpoint to roll back to)" in trip.message
    off = BestTracker("accuracy", watched="data", action="off", margin=0.0, patience=1)
    off.observe(0, {"data": 0.5})
    off.observe(1, {"data": 0.1})
    assert off.trip() is None


def test_state_round_trip_keeps_bests_and_the_count():
    best = BestTracker("accuracy", watched="data", action="stop", patience=3)
    best.observe(0, {"data": 0.5})
    best.observe(1, {"data": 0.1})
    restored = BestTracker("accuracy", watched="data", action="stop", patience=3)
    restored.load_state_dict(best.state_dict())
    assert restored.best == best.best and restored.below == 1
