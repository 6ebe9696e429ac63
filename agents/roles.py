"""The roles one model plays in self-play. Leaves out what each role does (see prompts and parsing)."""

from enum import Enum


class Role(Enum):
    """A role of the shared model; the value is the name used in configs and logs."""

    PROPOSER = "proposer"
    SOLVER = "solver"
    JUDGE = "judge"
