"""A run that ends early, told as one line a user can act on instead of Ray's traceback: Ray's memory monitor
killing an actor, or a learner rank that stops answering."""

from __future__ import annotations

import re
from pathlib import Path

from learner.calls import LearnerTimeout

# Ray's OutOfMemoryError text: "... where the task (actor ID: ..., name=Learner.train_step, pid=4331, memory
# used=15.15GB) was running was 22.22GB / 23.54GB (0.94), which exceeds the memory usage threshold of 0.95 ..."
KILLED = re.compile(r"name=(?P<name>[^,\s]+), pid=(?P<pid>\d+), memory used=(?P<used>[\d.]+\s*GB)")
NODE = re.compile(r"was running was (?P<node>[\d.]+\s*GB / [\d.]+\s*GB)")
LOW_MEMORY = "running low on memory"
SEARCHED_CHARS = 100_000  # Ray's message lists the node's top memory users; the part searched is bounded


class RunEnded(RuntimeError):
    """The run ended for a reason its message tells in one line, with the command that resumes it: an actor killed
    for memory, a learner rank that stopped answering (`ending_line`)."""


def ending_line(error: BaseException, run_dir: Path) -> str | None:
    """The one line for a run that `error` ended, where it is a memory kill or a learner call that timed out; None
    for any other error (its traceback is the news)."""
    if line := memory_kill_line(error, run_dir):
        return line
    if isinstance(error, LearnerTimeout):
        return f"{error}. {resume_hint(run_dir)}"
    return None


def resume_hint(run_dir: Path) -> str:
    return f"Resume from the last checkpoint with: python launch/evolve.py --resume {run_dir}"


def memory_kill_line(error: BaseException, run_dir: Path) -> str | None:
    """The line for a run that `error` ended, where it (or an error it was raised from, or a remote error it
    carries) is a memory kill; None for any other error."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        text = str(error)[:SEARCHED_CHARS]
        if LOW_MEMORY in text:
            return describe_memory_kill(text, run_dir)
        error = error.__cause__ or error.__context__
    return None


def describe_memory_kill(text: str, run_dir: Path) -> str:
    killed, node = KILLED.search(text), NODE.search(text)
    who = (f"{killed['name'].split('.')[0]} (pid {killed['pid']}, {killed['used']} resident, in "
           f"{killed['name']})" if killed else "an actor (Ray's message does not name it)")
    return (f"out of memory: Ray's memory monitor killed {who}"
            + (f"; the node was at {node['node']}" if node else "")
            + f". {resume_hint(run_dir)}")
