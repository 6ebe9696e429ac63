"""Shared fixtures: the embedded model's tokenizer and a tiny random Llama built from it, once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    """SmolLM2-135M-Instruct converted from its PyPI wheel (cached across sessions under ~/.cache/selfplay)."""
    from selfplay.embedded_model import prepare_embedded_model

    return prepare_embedded_model("smollm2-135m")


@pytest.fixture(scope="session")
def tiny_model_dir(embedded_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer Llama (hidden 128, head dim 64) with the SmolLM2 tokenizer, bf16."""
    from tests.tiny_model import build_tiny_model

    return build_tiny_model(embedded_model_dir, tmp_path_factory.mktemp("tiny-llama"))


# The suite runs vLLM, Ray, DeepSpeed (gloo) and torch's thread pools inside this process. Once, a clean clone's
# full run passed every test and then segfaulted in the interpreter's teardown, after the summary, which turned
# a green run into a failing exit status. The exit status is decided when the session finishes; the process then
# leaves without the teardown of those libraries' native threads (output flushed first).
_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if _EXIT_STATUS:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[-1])
