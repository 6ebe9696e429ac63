"""Calls on learner ranks, bounded in time: a light module (Ray only), so that the driver can name a rank that
does not answer without importing the learner's DeepSpeed and transformers stack."""

from __future__ import annotations

import ray


class LearnerTimeout(RuntimeError):
    """A learner call that did not finish on every rank within `learner.call_timeout_s`."""


def gathered(refs: list, call: str, timeout_s: float) -> list:
    """The results of one call on ranks 0..len(refs)-1, waiting at most `timeout_s` for all of them; LearnerTimeout,
    naming the ranks that did not answer, when they do not."""
    _, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    if pending:
        late = [rank for rank, ref in enumerate(refs) if ref in pending]
        raise LearnerTimeout(f"learner rank(s) {', '.join(map(str, late))} did not finish {call} within "
                             f"{timeout_s:g} s (learner.call_timeout_s): stuck in a collective or in native code")
    return ray.get(refs)
