"""The run's log lines for users: one per phase, timestamped, on stderr."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from datetime import datetime

# What the libraries print that a user cannot act on (start-up info, progress bars, deprecation notes), repeated by
# every process that loads a model; errors still show.
QUIET_LIBRARIES = {"TOKENIZERS_PARALLELISM": "false", "VLLM_LOGGING_LEVEL": "ERROR", "TORCH_CPP_LOG_LEVEL": "ERROR",
                   "TORCH_LOGS": "-torch", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                   "PYTHONWARNINGS": "ignore::FutureWarning"}


def log(message: str) -> None:
    print(f"[selfplay {datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def quiet_libraries() -> None:
    """QUIET_LIBRARIES for this process and its children, where the user has not set them; call it before vLLM or
    torch is imported (they read their variables at import)."""
    for key, value in QUIET_LIBRARIES.items():
        os.environ.setdefault(key, value)
    if os.environ["PYTHONWARNINGS"] == QUIET_LIBRARIES["PYTHONWARNINGS"]:  # read at start-up: this process too
        warnings.filterwarnings("ignore", category=FutureWarning)
    quiet_local_ray_start()


def quiet_local_ray_start() -> None:
    """Ray turns token authentication on for every new local instance (its default) and warns about it each time.
    (Naming the mode in RAY_AUTH_MODE once Ray is imported would leave this process's cached mode behind the GCS's.)"""
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
