"""Rewards for the three roles, as pure functions of judge scores, format scores and verifiable grades.

Judge scores (integers 1-10) are mapped to [0, 1] as (s - 1) / 9 before anything else. A reward of None means
the sample has no usable verdict (the judge's response did not parse and no grade stands in): the caller masks
and counts it. It never becomes a neutral 0.5, a weakness of the paper's code.

Leaves out parsing (agents/parsing.py gives the scores and format scores) and grading (rewards/grading.py gives
the grades).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

# The judge's score scale; the parser and the rubric validator read it from here.
SCORE_MIN = 1
SCORE_MAX = 10


def difficulty(solve_rate: float) -> float:
    """The paper's difficulty, 1 - p: highest for a question no answer solves, unsolvable ones included."""
    return 1.0 - solve_rate


def learnability(solve_rate: float) -> float:
    """4 p (1 - p): 1 at a 50% solve rate, 0 for questions always or never solved.

    Proportional to the variance of a pass/fail outcome with success rate p, the signal a group of solver answers
    carries; unlike `difficulty` it gives nothing for an unsolvable question.
    """
    return 4.0 * solve_rate * (1.0 - solve_rate)


DIFFICULTY_VARIANTS: dict[str, Callable[[float], float]] = {"difficulty": difficulty, "learnability": learnability}


class GradingMode(Enum):
    """How a verifiable grade, where one exists, enters an answer's score."""

    OFF = "off"  # the judge's score alone
    REPLACE = "replace"  # the grade alone
    MIX = "mix"  # grading_weight * grade + (1 - grading_weight) * judge score


@dataclass(frozen=True)
class RewardSettings:
    """The reward knobs, gathered from the run config's sections (which hold their defaults); validated here."""

    quality_threshold: int
    """Judge quality score (1-10) at or above which a question is accepted into the pool."""
    difficulty_variant: str
    """Name in DIFFICULTY_VARIANTS of the proposer's challenge term."""
    solver_judge_weight: float
    """w in the solver reward w * answer score + (1 - w) * format score."""
    judge_agreement_weight: float
    """Weight of agreement with a verifiable grade in the judge reward; the rest is its format score."""
    grading_mode: GradingMode
    """How a verifiable grade enters an answer's score."""
    grading_weight: float
    """Weight of the grade in GradingMode.MIX."""
    reference_agreement: float = 0.5
    """Share of a new question's N answers that must equal its computed reference before that reference counts
    as verified (see `reference_verified`)."""
    strict_gate: bool = False
    """The pool's strict data gate: a question is also refused when it repeats one seen earlier in the run or its
    answers all share one outcome (solve rate 0 or 1: nothing to learn from it), see `proposer_reward`."""

    def __post_init__(self) -> None:
        if not isinstance(self.quality_threshold, int) or not SCORE_MIN <= self.quality_threshold <= SCORE_MAX:
            raise ValueError(f"quality_threshold must be an integer from 1 to 10, got {self.quality_threshold!r}")
        if self.difficulty_variant not in DIFFICULTY_VARIANTS:
            choices = ", ".join(DIFFICULTY_VARIANTS)
            raise ValueError(f"difficulty_variant {self.difficulty_variant!r} is unknown; choose one of: {choices}")
        if not isinstance(self.grading_mode, GradingMode):
            choices = ", ".join(mode.value for mode in GradingMode)
            raise ValueError(f"grading_mode must be a GradingMode ({choices}), got {self.grading_mode!r}")
        for name in ("solver_judge_weight", "judge_agreement_weight", "grading_weight", "reference_agreement"):
            _check_unit(name, getattr(self, name))


@dataclass(frozen=True)
class ProposerReward:
    """A proposer's reward and what it was made of; `reward` None means masked (no usable judge verdict)."""

    reward: float | None
    accepted: bool
    """The question goes into the pool: its quality reached the threshold and its reference, if any, is verified."""
    quality: float | None
    """Normalised judge quality score; None when there was no question or no verdict."""
    difficulty: float | None
    """Value of the chosen difficulty variant; None when the question was not accepted."""
    solve_rate: float | None = None
    """Share of correct answers among those with an outcome; None when no answer had one."""
    verified: bool | None = None
    """Whether the question's computed reference was verified by the solver's answers; None without a reference."""
    refused: str | None = None
    """Why a judged question stays out of the pool: one of REFUSALS; None when accepted or not judged."""


UNVERIFIED, LOW_QUALITY, SEEN, UNLEARNABLE = "unverified", "low_quality", "seen", "unlearnable"
REFUSALS = (UNVERIFIED, LOW_QUALITY, SEEN, UNLEARNABLE)  # checked in this order; the first that applies is logged


def normalise_score(score: int) -> float:
    """A judge score 1-10 mapped to [0, 1] as (s - 1) / 9."""
    if not SCORE_MIN <= score <= SCORE_MAX:
        raise ValueError(f"a judge score is an integer from 1 to 10, got {score!r}")
    return (score - SCORE_MIN) / (SCORE_MAX - SCORE_MIN)


CORRECT_SCORE = 0.5
"""A normalised judge score at or above this counts an answer as correct where no grade exists (6 of 10 and up)."""


def answer_outcome(judge_score: int | None, grade: bool | None) -> bool | None:
    """Whether a parsed answer is correct: its verifiable grade where one exists, else the judge's score
    thresholded at CORRECT_SCORE; None when neither exists (the verdict did not parse)."""
    if grade is not None:
        return grade
    return None if judge_score is None else normalise_score(judge_score) >= CORRECT_SCORE


def solve_rate(outcomes: Sequence[bool | None]) -> float | None:
    """p, the share of correct answers among those with an outcome. Answers that did not parse (or whose verdict
    did not) carry None and are left out: a truncated answer is neither a success nor evidence of difficulty."""
    known = [outcome for outcome in outcomes if outcome is not None]
    return sum(known) / len(known) if known else None


def reference_verified(grades: Sequence[bool], agreement: float) -> bool:
    """A computed reference counts as verified when at least `agreement` of all N answers to its question equal it
    (an answer that did not parse is False). The proposer writes both the question and the expression that
    computes the reference, so the expression can compute something other than what the question asks; answers
    sampled independently from the question alone rarely agree on a reference that answers another question
    (the majority check of R-Zero and Self-Questioning Language Models, here against a computed answer)."""
    return bool(grades) and sum(grades) >= agreement * len(grades)


def answer_score(judge_score: int | None, grade: bool | None, settings: RewardSettings) -> float | None:
    """An answer's score in [0, 1] from the judge's score and, where known, a verifiable grade.

    `judge_score` is None when the judge's response did not parse, `grade` None when no reference exists. Where the
    grade exists but the judge gave no score, MIX uses the grade alone: the truth is known, not a neutral default.
    """
    judged = None if judge_score is None else normalise_score(judge_score)
    if grade is None or settings.grading_mode is GradingMode.OFF:
        return judged
    if settings.grading_mode is GradingMode.REPLACE or judged is None:
        return float(grade)
    return settings.grading_weight * float(grade) + (1.0 - settings.grading_weight) * judged


def solver_reward(score: float | None, format_score: float, settings: RewardSettings) -> float | None:
    """w * score + (1 - w) * format score, with `score` from answer_score.

    Pass score 0.0 when the response held no answer (nothing to judge, so nothing correct); None gives None.
    """
    _check_unit("format_score", format_score)
    if score is None:
        return None
    _check_unit("score", score)
    weight = settings.solver_judge_weight
    return weight * score + (1.0 - weight) * format_score


def judge_reward(format_score: float, judge_score: int | None, grade: bool | None, settings: RewardSettings) -> float:
    """The judge's format score, mixed with its agreement with a verifiable grade where one exists.

    agreement = 1 - |normalised judge score - grade| (0 when the judge gave no score);
    reward = (1 - a) * format score + a * agreement, with a = judge_agreement_weight. Without a grade: format score.
    """
    _check_unit("format_score", format_score)
    if grade is None:
        return format_score
    agreement = 0.0 if judge_score is None else 1.0 - abs(normalise_score(judge_score) - float(grade))
    weight = settings.judge_agreement_weight
    return (1.0 - weight) * format_score + weight * agreement


def proposer_reward(
    question_found: bool,
    format_score: float,
    quality_score: int | None,
    outcomes: Sequence[bool | None],
    settings: RewardSettings,
    verified: bool | None = None,
    seen: bool = False,
) -> ProposerReward:
    """The proposer's reward from the judge's quality score Q, the solver answers' outcomes and, for a question
    with a computed reference, whether the answers verified that reference; `seen`: the question repeats one seen
    earlier in the run.

    No question found: 0. Judge gave no quality score: masked. Refused (a reference that was not verified, Q below
    the threshold; with `strict_gate` also a seen question, or one whose answers with an outcome all share it):
    (Q + F) / 3, discarded (a challenge of 0, so an accepted question never earns less than a discarded one of the
    same quality). Otherwise (Q + D + F) / 3 and accepted, D the chosen variant of the solve rate p (`solve_rate`
    of `outcomes`, one per answer, None where an answer did not parse); D is 0 when no answer had an outcome, so
    answers that fail to parse never earn the question a challenge.
    """
    _check_unit("format_score", format_score)
    if not question_found:
        return ProposerReward(reward=0.0, accepted=False, quality=None, difficulty=None)
    if quality_score is None:
        return ProposerReward(reward=None, accepted=False, quality=None, difficulty=None)
    quality = normalise_score(quality_score)
    rate = solve_rate(outcomes)
    refusals = {UNVERIFIED: verified is False, LOW_QUALITY: quality_score < settings.quality_threshold,
                SEEN: settings.strict_gate and seen,
                UNLEARNABLE: settings.strict_gate and (rate is None or rate in (0.0, 1.0))}
    refused = next((reason for reason in REFUSALS if refusals[reason]), None)
    if refused is not None:
        return ProposerReward(reward=(quality + format_score) / 3, accepted=False, quality=quality, difficulty=None,
                              solve_rate=rate, verified=verified, refused=refused)
    challenge = 0.0 if rate is None else DIFFICULTY_VARIANTS[settings.difficulty_variant](rate)
    return ProposerReward(reward=(quality + challenge + format_score) / 3, accepted=True, quality=quality,
                          difficulty=challenge, solve_rate=rate, verified=verified)


def _check_unit(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
