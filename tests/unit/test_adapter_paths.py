"""Which adapter `selfplay.adapters.resolve_adapter` finds in a path: a PEFT directory as given, a run's final
adapter directory or checkpoint with one adapter per role (learner.adapters per_role) only with a role chosen, and
a run directory through its latest checkpoint."""

from __future__ import annotations

import pytest

from selfplay.adapters import ADAPTER_CONFIG, LEARNER_STATES, AdapterError, resolve_adapter, role_states
from selfplay.checkpoint import STATE_FILE

ROLES = ("proposer", "solver", "judge")


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")
    return path


def test_a_shared_adapter_is_found_with_or_without_a_role(tmp_path):
    _touch(tmp_path / "adapter" / ADAPTER_CONFIG)
    assert resolve_adapter(tmp_path / "adapter") == resolve_adapter(tmp_path / "adapter", "solver") == (
        tmp_path / "adapter")
    states = _touch(tmp_path / "run" / "checkpoints" / "iter-000002" / LEARNER_STATES)
    _touch(tmp_path / "run" / "checkpoints" / "iter-000002" / STATE_FILE)
    (tmp_path / "run" / "checkpoints" / "latest").write_text("iter-000002\n")
    assert resolve_adapter(tmp_path / "run") == resolve_adapter(tmp_path / "run", "judge") == states


def test_one_adapter_per_role_needs_the_role_named(tmp_path):
    for role in ROLES:
        _touch(tmp_path / "adapter" / role / ADAPTER_CONFIG)
        _touch(tmp_path / "iter-000001" / role_states(role))
    assert resolve_adapter(tmp_path / "adapter", "solver") == tmp_path / "adapter" / "solver"
    assert resolve_adapter(tmp_path / "iter-000001", "judge") == (
        tmp_path / "iter-000001" / "learner" / "learner-judge" / LEARNER_STATES.name)
    for path in (tmp_path / "adapter", tmp_path / "iter-000001"):
        with pytest.raises(AdapterError, match=r": one adapter per role \(proposer, solver, judge\): choose one "
                                               r"with --role$"):
            resolve_adapter(path)
    (tmp_path / "adapter" / "judge" / ADAPTER_CONFIG).unlink()
    with pytest.raises(AdapterError, match=r"one adapter per role \(proposer, solver\): --role judge is not one"):
        resolve_adapter(tmp_path / "adapter", "judge")
