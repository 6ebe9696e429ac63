"""Each held-out set's best score and checkpoint, and the forgetting guard's rule.

Self-rewarded training can rise and then collapse: its own rewards keep going up while held-out accuracy falls.
The run keeps, per eval set, the best score seen and the checkpoint that scored it (protected from checkpoint
rotation, listed in RUN_DIR/best.json). The guard watches one set: when its score stays below the best by more than
`margin` for `patience` evaluations in a row, it asks the driver to stop, or to roll back to the best checkpoint.
Pure bookkeeping; the driver evaluates, saves and restores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Best:
    score: float
    iteration: int
    checkpoint: str | None = None  # checkpoint directory name; None for the base model (step 0, no checkpoint)


@dataclass(frozen=True)
class Trip:
    """The guard's decision: what to do and the one line that says why."""

    action: str  # "stop" or "rollback"
    best: Best
    message: str


@dataclass
class BestTracker:
    metric: str
    watched: str | None = None
    action: str = "off"
    margin: float = 0.05
    patience: int = 2
    best: dict[str, Best] = field(default_factory=dict)
    below: int = 0  # consecutive evaluations of the watched set below best - margin
    last: float | None = None  # the watched set's latest score

    def observe(self, iteration: int, scores: dict[str, float]) -> list[str]:
        """Record one evaluation (set name -> score); returns the sets whose best it is now (ties keep the older)."""
        improved = []
        for name, score in scores.items():
            if name not in self.best or score > self.best[name].score:
                self.best[name] = Best(score, iteration)
                improved.append(name)
        if self.watched in scores:
            self.last = scores[self.watched]
            below = scores[self.watched] < self.best[self.watched].score - self.margin
            self.below = self.below + 1 if below else 0
        return improved

    def saved(self, names: list[str], checkpoint: str) -> None:
        for name in names:
            self.best[name].checkpoint = checkpoint

    def protected(self) -> set[str]:
        """Checkpoint names that rotation must keep."""
        return {best.checkpoint for best in self.best.values() if best.checkpoint}

    def trip(self) -> Trip | None:
        """The guard's decision after `observe`."""
        if self.action == "off" or self.watched not in self.best or self.below < self.patience:
            return None
        best = self.best[self.watched]
        action = self.action if self.action == "stop" or best.checkpoint else "stop"
        where = f"{best.checkpoint}" if best.checkpoint else "the base model (no checkpoint to roll back to)"
        message = (f"guard: {self.watched} {self.metric} {self.last:.3f} has stayed below its best {best.score:.3f} "
                   f"(iteration {best.iteration}, {where}) by more than {self.margin} for {self.below} evaluations: "
                   + ("rolling back to it" if action == "rollback" else "stopping the run"))
        self.below = 0
        return Trip(action, best, message)

    def state_dict(self) -> dict[str, Any]:
        return {"best": {name: asdict(best) for name, best in self.best.items()}, "below": self.below}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = {name: Best(**best) for name, best in state.get("best", {}).items()}
        self.below = state.get("below", 0)

    def summary(self) -> dict[str, Any]:
        """best.json: per set, the metric, best score, its iteration and checkpoint."""
        return {name: {"metric": self.metric} | asdict(best) for name, best in self.best.items()}
