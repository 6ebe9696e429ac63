"""Weights received from another node (rollout.received): the served copy stays until the next is served."""

from __future__ import annotations

from pathlib import Path

from rollout.received import ReceivedCopies

FILES = {"adapter_config.json": b"{}", "adapter_model.safetensors": b"x" * 10}


def copies(tmp_path: Path, free=lambda path: 10**9) -> ReceivedCopies:
    return ReceivedCopies(lambda: (tmp_path / "scratch").resolve(), free, tmp_path / "disk")


def test_the_served_copy_stays_until_the_next_one_is_served(tmp_path):
    received = copies(tmp_path)
    first = received.write(FILES, "adapter-v1")
    received.now_served(first)
    second = received.write(FILES, "adapter-v2")
    assert first.is_dir() and second.is_dir()  # both, while version 2 is being loaded
    assert sorted(path.name for path in second.iterdir()) == sorted(FILES)
    received.now_served(second)
    assert not first.exists() and second.is_dir() and received.served == second


def test_a_copy_the_engine_failed_on_is_removed_and_the_served_one_kept(tmp_path):
    received = copies(tmp_path)
    first = received.write(FILES, "adapter-v1")
    received.now_served(first)
    broken = received.write(FILES, "adapter-v2")
    received.failed(broken)
    assert not broken.exists() and first.is_dir() and received.served == first
    received.close()
    assert not first.exists() and not (tmp_path / "scratch").exists()
