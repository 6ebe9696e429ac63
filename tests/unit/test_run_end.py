"""A run that ends early ends with one line: for a memory kill the actor, its memory, the node's and the resume
command; for a learner rank that stops answering, the rank, the call and the resume command."""

from pathlib import Path

from learner.calls import LearnerTimeout
from selfplay.run_end import ending_line, memory_kill_line

RAY_MESSAGE = (
    "Task was killed due to the node running low on memory.\nMemory on the node (IP: 10.0.0.2, ID: 8c5a) where the "
    "task (actor ID: f9cc, name=Learner.train_step, pid=4331, memory used=15.15GB) was running was 22.22GB / "
    "23.54GB (0.944), which exceeds the memory usage threshold of 0.95. Ray killed this worker (ID: 0f76) because "
    "it was the most recently scheduled task.\nTop 10 memory users:\nPID\tMEM(GB)\tCOMMAND\n4331\t15.15\t"
    "ray::Learner.train_step\n")


class OutOfMemoryError(Exception):  # the shape of ray.exceptions.OutOfMemoryError: str() is Ray's message
    pass


def test_the_line_names_the_actor_its_memory_the_node_and_the_resume_command():
    line = memory_kill_line(OutOfMemoryError(RAY_MESSAGE), Path("runs/a-1"))
    assert line == ("out of memory: Ray's memory monitor killed Learner (pid 4331, 15.15GB resident, in "
                    "Learner.train_step); the node was at 22.22GB / 23.54GB. Resume from the last checkpoint "
                    "with: python launch/evolve.py --resume runs/a-1")
    assert "\n" not in line


def test_a_kill_behind_another_error_is_found_and_other_errors_are_not_taken_for_one():
    try:
        try:
            raise OutOfMemoryError("Task was killed due to the node running low on memory.")
        except OutOfMemoryError as inner:
            raise RuntimeError("learner rank 0 failed") from inner
    except RuntimeError as outer:
        line = memory_kill_line(outer, Path("runs/b"))
    assert line == ("out of memory: Ray's memory monitor killed an actor (Ray's message does not name it). "
                    "Resume from the last checkpoint with: python launch/evolve.py --resume runs/b")
    assert memory_kill_line(ValueError("bad batch"), Path("runs/b")) is None


def test_a_learner_timeout_and_a_memory_kill_end_with_one_line_and_other_errors_do_not():
    timeout = LearnerTimeout("learner rank(s) 1 did not finish train_step within 60 s (learner.call_timeout_s)")
    assert ending_line(timeout, Path("runs/c")) == (
        "learner rank(s) 1 did not finish train_step within 60 s (learner.call_timeout_s). Resume from the last "
        "checkpoint with: python launch/evolve.py --resume runs/c")
    assert ending_line(OutOfMemoryError(RAY_MESSAGE), Path("runs/c")).startswith("out of memory: ")
    assert ending_line(ValueError("bad batch"), Path("runs/c")) is None
