"""The question pool: seed questions plus accepted proposals, served as references to the proposer.

Policy in one place: near-duplicates are rejected (MinHash LSH over word shingles), the pool is
capped (evicting reliably solved questions first, then the oldest; seed questions with a reference answer are
never evicted, so the grounded part of the pool lasts the whole run), and references mix recent
questions with a replayed share of older ones so the proposer keeps seeing the whole pool. The pool also remembers
every question it has seen in the run, held or not (`remember`: a digest of its normalised text), for the strict
data gate. Deterministic given the seed; `state_dict` / `from_state_dict` save and restore it, random state
included. Left out: judging question quality (the judge role) and choosing what to solve.
"""

import hashlib
import json
import math
import random
import re
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from datasketch import MinHash, MinHashLSH

SHINGLE_WORDS = 3
"""Words per shingle; texts shorter than this are one shingle."""
MINHASH_PERMUTATIONS = 128
RECENT_ITERATIONS = 1
"""A question is recent when added in the current iteration or the previous RECENT_ITERATIONS."""
STATE_VERSION = 1


class SeedFileError(ValueError):
    """A seed file line that cannot be read; the message names the file and the line."""


class QuestionSource(StrEnum):
    SEED = "seed"
    PROPOSED = "proposed"


@dataclass(frozen=True)
class PoolQuestion:
    """A question in the pool. `answer` is the reference answer when one is known; `checkable` is the question's
    machine-checkable form where its task family has one (the arithmetic family's expression), from the seed file."""

    id: str
    text: str
    answer: str | None
    source: QuestionSource
    added_iteration: int
    checkable: str | None = None

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("PoolQuestion.id must be non-empty")
        if not isinstance(self.source, QuestionSource):
            raise TypeError(f"PoolQuestion {self.id!r} source must be a QuestionSource, got {self.source!r}")
        if not self.text.strip():
            raise ValueError(f"PoolQuestion {self.id!r} has empty text")
        if self.answer is not None and not self.answer.strip():
            raise ValueError(f"PoolQuestion {self.id!r} has an empty answer; use None for no answer")
        if self.added_iteration < 0:
            raise ValueError(f"PoolQuestion {self.id!r} has negative added_iteration {self.added_iteration}")


@dataclass(frozen=True)
class QuestionStats:
    times_served: int
    """Times the question was returned by `sample_references`."""
    attempts: int
    """Calls to `record_solve` for it."""
    recent_mean_score: float | None
    """Mean solver score (0-1) over the last `solved_min_attempts` attempts; None before the first."""


class AddOutcome(StrEnum):
    ACCEPTED = "accepted"
    REJECTED_DUPLICATE = "rejected_duplicate"
    REJECTED_FULL = "rejected_full"  # every question held is a protected seed


@dataclass(frozen=True)
class AddResult:
    outcome: AddOutcome
    question_id: str
    duplicate_of: str | None = None
    """The pool question it nearly duplicates, when rejected."""
    evicted_id: str | None = None
    """The question evicted to make room, when the pool was full."""


@dataclass(frozen=True)
class PoolCounters:
    """Cumulative since the pool was created (restored with the state)."""

    accepted: int = 0
    rejected_duplicate: int = 0
    rejected_full: int = 0
    evicted_solved: int = 0
    evicted_oldest: int = 0


def _seed_answer(raw: Any) -> str | None:
    """None, a number, or text; GSM8K's '... #### 1,234' becomes '1234'."""
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise ValueError(f"'answer' must be a string or a number, got {type(raw).__name__}")
    text = str(raw)
    if "####" in text:
        text = text.rsplit("####", 1)[1].replace(",", "").replace(" ", "")
    text = text.strip()
    if not text:
        raise ValueError("'answer' is empty")
    return text


def _seed_question(line: str, question_id: str) -> PoolQuestion:
    record = json.loads(line)
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    question = record.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("'question' must be a non-empty string")
    return PoolQuestion(
        id=question_id,
        text=question.strip(),
        answer=_seed_answer(record.get("answer")),
        source=QuestionSource.SEED,
        added_iteration=0,
        checkable=_seed_checkable(record.get("checkable")),
    )


def _seed_checkable(raw: Any) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError("'checkable' must be a non-empty string when given")
    return raw.strip()


def _protected(question: PoolQuestion) -> bool:
    """Seeds with a reference answer anchor grading to truth; they stay whatever the pool's capacity."""
    return question.source is QuestionSource.SEED and question.answer is not None


def load_seed_file(path: str | Path) -> list[PoolQuestion]:
    """Read a JSONL seed file: one object per line with `question`, an optional `answer` and an optional
    `checkable` (the question's machine-checkable form, for a grounded task family's SFT cold start).

    Blank lines are skipped. Question ids are `seed:<file stem>:<line number>`. A malformed line
    raises SeedFileError naming the file and line; so does a file without questions.
    """
    path = Path(path)
    questions = []
    for line_number, raw_line in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            line = raw_line.decode("utf-8")
            if line.strip():
                questions.append(_seed_question(line, f"seed:{path.stem}:{line_number}"))
        except ValueError as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise SeedFileError(f"{path}:{line_number}: {error}") from None
    if not questions:
        raise SeedFileError(f"{path}: no questions")
    return questions


def text_digest(text: str) -> str:
    """A question's identity for the run's memory: its words, lowercased, hashed (spacing, case and punctuation
    aside)."""
    normalised = " ".join(re.findall(r"\w+", text.lower()))
    return hashlib.blake2b(normalised.encode("utf-8"), digest_size=8).hexdigest()


def shingles(text: str) -> set[str]:
    words = re.findall(r"\w+", text.lower())
    if len(words) <= SHINGLE_WORDS:
        return {" ".join(words)}
    return {" ".join(words[start : start + SHINGLE_WORDS]) for start in range(len(words) - SHINGLE_WORDS + 1)}


def _minhash(text: str) -> MinHash:
    minhash = MinHash(num_perm=MINHASH_PERMUTATIONS)
    minhash.update_batch(shingle.encode("utf-8") for shingle in sorted(shingles(text)))
    return minhash


@dataclass
class _SolveRecord:
    """Mutable per-question bookkeeping behind `QuestionStats`."""

    times_served: int = 0
    attempts: int = 0
    recent_scores: list[float] = field(default_factory=list)


class QuestionPool:
    """Holds questions in insertion order, with a MinHash LSH index over their texts.

    capacity: most questions held; adding to a full pool evicts one (a full pool never rejects).
    duplicate_threshold: estimated Jaccard similarity of word shingles at or above which a question
    is a duplicate. solved_threshold: mean solver score (0-1) of the last `solved_min_attempts`
    attempts at or above which a question counts as reliably solved (evicted first).
    replay_ratio: share of references drawn from older questions, against forgetting.
    """

    def __init__(
        self,
        capacity: int,
        duplicate_threshold: float,
        solved_threshold: float,
        solved_min_attempts: int,
        replay_ratio: float,
        seed: int,
    ) -> None:
        checks = [
            (capacity >= 1, "capacity", capacity, "be at least 1"),
            # MinHashLSH needs at least two bands, which fails above about 0.95 at 128 permutations.
            (0.0 < duplicate_threshold <= 0.95, "duplicate_threshold", duplicate_threshold, "be in (0, 0.95]"),
            (0.0 <= solved_threshold <= 1.0, "solved_threshold", solved_threshold, "be in [0, 1]"),
            (solved_min_attempts >= 1, "solved_min_attempts", solved_min_attempts, "be at least 1"),
            (0.0 <= replay_ratio <= 1.0, "replay_ratio", replay_ratio, "be in [0, 1]"),
        ]
        for valid, name, value, rule in checks:
            if not valid:
                raise ValueError(f"pool.{name}={value!r} is invalid: it must {rule}")
        self._capacity = capacity
        self._duplicate_threshold = duplicate_threshold
        self._solved_threshold = solved_threshold
        self._solved_min_attempts = solved_min_attempts
        self._replay_ratio = replay_ratio
        self._seed = seed
        self._questions: dict[str, PoolQuestion] = {}
        self._records: dict[str, _SolveRecord] = {}
        self._minhashes: dict[str, MinHash] = {}
        self._index = MinHashLSH(threshold=duplicate_threshold, num_perm=MINHASH_PERMUTATIONS)
        self._counts = asdict(PoolCounters())
        self._random = random.Random(seed)
        self._seen: set[str] = set()  # text_digest of every question added or remembered

    def __len__(self) -> int:
        return len(self._questions)

    def __contains__(self, question_id: str) -> bool:
        return question_id in self._questions

    def questions(self) -> list[PoolQuestion]:
        return list(self._questions.values())

    @property
    def counters(self) -> PoolCounters:
        return PoolCounters(**self._counts)

    def remember(self, text: str) -> bool:
        """Note a question seen in the run; True when one with the same words was seen (or added) before."""
        digest = text_digest(text)
        seen = digest in self._seen
        self._seen.add(digest)
        return seen

    def stats(self, question_id: str) -> QuestionStats:
        record = self._records[question_id]
        scores = record.recent_scores
        return QuestionStats(
            times_served=record.times_served,
            attempts=record.attempts,
            recent_mean_score=sum(scores) / len(scores) if scores else None,
        )

    def add(self, question: PoolQuestion) -> AddResult:
        """Accept the question unless it nearly duplicates one in the pool; evict if full (and reject it when
        every question held is a protected seed).

        Raises ValueError if its id is already in the pool (ids are the caller's to keep unique).
        """
        if question.id in self._questions:
            raise ValueError(f"question id {question.id!r} is already in the pool")
        minhash = _minhash(question.text)
        duplicate_of = self._nearest_duplicate(minhash)
        if duplicate_of is not None:
            self._counts["rejected_duplicate"] += 1
            return AddResult(AddOutcome.REJECTED_DUPLICATE, question.id, duplicate_of=duplicate_of)
        evicted_id = None
        if len(self._questions) >= self._capacity:
            evicted_id = self._evict()
            if evicted_id is None:
                self._counts["rejected_full"] += 1
                return AddResult(AddOutcome.REJECTED_FULL, question.id)
        self._insert(question, minhash)
        self._seen.add(text_digest(question.text))
        self._counts["accepted"] += 1
        return AddResult(AddOutcome.ACCEPTED, question.id, evicted_id=evicted_id)

    def _nearest_duplicate(self, minhash: MinHash) -> str | None:
        # LSH candidates are probabilistic; keep those whose estimated Jaccard reaches the threshold.
        candidates = sorted(self._index.query(minhash))
        similarities = {candidate: self._minhashes[candidate].jaccard(minhash) for candidate in candidates}
        duplicates = [candidate for candidate in candidates if similarities[candidate] >= self._duplicate_threshold]
        return max(duplicates, key=lambda candidate: similarities[candidate], default=None)

    def _is_solved(self, question_id: str) -> bool:
        record = self._records[question_id]
        return (
            record.attempts >= self._solved_min_attempts
            and sum(record.recent_scores) / len(record.recent_scores) >= self._solved_threshold
        )

    def _evict(self) -> str | None:
        """Remove the oldest reliably solved question, else the oldest, never a seed with a reference answer;
        return its id (None when nothing may go)."""
        # sorted is stable, so insertion order breaks ties between questions of one iteration.
        evictable = [question_id for question_id, question in self._questions.items() if not _protected(question)]
        by_age = sorted(evictable, key=lambda question_id: self._questions[question_id].added_iteration)
        if not by_age:
            return None
        solved = [question_id for question_id in by_age if self._is_solved(question_id)]
        if solved:
            evicted_id = solved[0]
            self._counts["evicted_solved"] += 1
        else:
            evicted_id = by_age[0]
            self._counts["evicted_oldest"] += 1
        del self._questions[evicted_id], self._records[evicted_id], self._minhashes[evicted_id]
        self._index.remove(evicted_id)
        return evicted_id

    def _insert(self, question: PoolQuestion, minhash: MinHash) -> None:
        self._questions[question.id] = question
        self._records[question.id] = _SolveRecord()
        self._minhashes[question.id] = minhash
        self._index.insert(question.id, minhash)

    def record_solve(self, question_id: str, mean_score: float) -> bool:
        """Record one solver attempt (mean score 0-1 over its answers).

        Returns False, recording nothing, when the question is no longer in the pool (evicted
        between being served and being solved).
        """
        if not 0.0 <= mean_score <= 1.0:
            raise ValueError(f"mean_score must be in [0, 1], got {mean_score}")
        record = self._records.get(question_id)
        if record is None:
            return False
        record.attempts += 1
        record.recent_scores = (record.recent_scores + [mean_score])[-self._solved_min_attempts :]
        return True

    def sample_references(self, count: int, current_iteration: int,
                          exclude: frozenset[str] = frozenset()) -> list[PoolQuestion]:
        """Draw `count` distinct reference questions: a `replay_ratio` share from older questions, the rest recent.

        Recent means added at or after `current_iteration - RECENT_ITERATIONS`. A side with too few questions
        leaves its share to the other, so one recent question is drawn once, not for most of the batch; a question
        repeats only when the whole pool holds fewer than `count` (then in fresh rounds over the pool). Questions
        whose ids are in `exclude` are never drawn (an empty list when nothing else is left). Counts each draw as
        served.
        """
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        if count == 0:
            return []
        if not self._questions:
            raise ValueError("cannot sample references from an empty question pool")
        cutoff = current_iteration - RECENT_ITERATIONS
        everything = [question for question in self._questions.values() if question.id not in exclude]
        if not everything:
            return []
        recent = self._random.sample(everything, len(everything))  # one shuffle, split by age
        older = [question for question in recent if question.added_iteration < cutoff]
        recent = [question for question in recent if question.added_iteration >= cutoff]
        replay_count = min(math.floor(count * self._replay_ratio + 0.5), len(older))
        recent_count = min(count - replay_count, len(recent))
        replay_count = min(count - recent_count, len(older))  # recent fell short: older questions fill in
        chosen = older[:replay_count] + recent[:recent_count]
        chosen += self._draw(everything, count - len(chosen))
        self._random.shuffle(chosen)
        for question in chosen:
            self._records[question.id].times_served += 1
        return chosen

    def _draw(self, candidates: list[PoolQuestion], count: int) -> list[PoolQuestion]:
        drawn: list[PoolQuestion] = []
        while len(drawn) < count:
            drawn.extend(self._random.sample(candidates, min(len(candidates), count - len(drawn))))
        return drawn

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: settings, questions in order with their stats, counters, random state."""
        version, internal_state, gauss_next = self._random.getstate()
        return {
            "version": STATE_VERSION,
            "settings": {
                "capacity": self._capacity,
                "duplicate_threshold": self._duplicate_threshold,
                "solved_threshold": self._solved_threshold,
                "solved_min_attempts": self._solved_min_attempts,
                "replay_ratio": self._replay_ratio,
                "seed": self._seed,
            },
            "questions": [
                {**asdict(question), **asdict(self._records[question.id])} for question in self._questions.values()
            ],
            "counters": dict(self._counts),
            "random_state": [version, list(internal_state), gauss_next],
            "seen": sorted(self._seen),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "QuestionPool":
        """Rebuild a pool from `state_dict()` output, with the settings it was saved with.

        The LSH index is rebuilt from the texts; sampling continues where the saved pool left off.
        """
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"question pool state version {state.get('version')!r} != {STATE_VERSION}")
        question_fields = [entry_field.name for entry_field in fields(PoolQuestion) if entry_field.name != "source"]
        try:
            pool = cls(**state["settings"])
            for entry in state["questions"]:
                question = PoolQuestion(  # a field missing from an older state keeps its default
                    **{name: entry[name] for name in question_fields if name in entry},
                    source=QuestionSource(entry["source"]),
                )
                pool._insert(question, _minhash(question.text))
                pool._records[question.id] = _SolveRecord(
                    times_served=entry["times_served"],
                    attempts=entry["attempts"],
                    recent_scores=list(entry["recent_scores"]),
                )
            pool._counts = asdict(PoolCounters(**state["counters"]))
            pool._seen = set(state.get("seen", ())) | {text_digest(question.text) for question in pool.questions()}
            version, internal_state, gauss_next = state["random_state"]
            pool._random.setstate((version, tuple(internal_state), gauss_next))
        except (KeyError, TypeError) as error:
            raise ValueError(f"question pool state is malformed: {error!r}") from error
        if len(pool) > pool._capacity:
            raise ValueError(f"saved pool holds {len(pool)} questions, more than its capacity {pool._capacity}")
        return pool
