"""The run's log lines for users: one per phase, timestamped, on stderr."""

from __future__ import annotations

import sys
from datetime import datetime


def log(message: str) -> None:
    print(f"[selfplay {datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)
