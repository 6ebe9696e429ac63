"""Where a run starts from the checkpoints in its directory: a resume before the first checkpoint starts over (the
base evaluation and the SFT cold start included), a later one continues after the newest complete checkpoint."""

from pathlib import Path

import pytest

from selfplay.checkpoint import StartPoint, checkpoint_root, save_checkpoint, start_point


def _save_learner(path: str) -> None:
    Path(path).mkdir()
    (Path(path) / "adapter.bin").write_bytes(b"weights")


def _killed_learner(path: str) -> None:
    _save_learner(path)
    raise KeyboardInterrupt  # the process dies while the checkpoint is written


def test_no_checkpoint_starts_over(tmp_path):
    assert start_point(tmp_path) == StartPoint(None, 1, True, -1)


def test_killed_while_writing_checkpoint_0_starts_over(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 0, _killed_learner, {"iteration": 0})
    assert (checkpoint_root(tmp_path) / "iter-000000.partial").is_dir()
    assert start_point(tmp_path) == StartPoint(None, 1, True, -1)


def test_checkpoint_0_of_the_sft_cold_start_resumes_at_iteration_1(tmp_path):
    save_checkpoint(tmp_path, 0, _save_learner, {"iteration": 0})
    assert start_point(tmp_path) == StartPoint(checkpoint_root(tmp_path) / "iter-000000", 1, False, 0)


def test_resume_after_the_newest_complete_checkpoint(tmp_path):
    for iteration in (2, 3):
        save_checkpoint(tmp_path, iteration, _save_learner, {"iteration": iteration})
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 4, _killed_learner, {"iteration": 4})
    assert start_point(tmp_path) == StartPoint(checkpoint_root(tmp_path) / "iter-000003", 4, False, 3)
