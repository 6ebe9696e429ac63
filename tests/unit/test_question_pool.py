"""Seed loading, near-duplicate rejection, eviction, reference sampling and state round trips of the pool."""

import json
import random
import string
from pathlib import Path

import pytest

from selfplay.question_pool import (
    AddOutcome,
    PoolCounters,
    PoolQuestion,
    QuestionPool,
    QuestionSource,
    SeedFileError,
    load_seed_file,
)

TINY_MATH = Path(__file__).parents[2] / "configs/seeds/tiny-math.jsonl"

TEXTS = [
    "Anna buys 4 red apples and 6 green pears at the corner market on Saturday. How many fruits did she buy?",
    "A train leaves the station at noon travelling 80 kilometres per hour. How far has it gone by 3 pm?",
    "Each classroom has 24 desks and the school has 11 classrooms. How many desks are in the school?",
    "Carlos saves 7 dollars every week for a year. How much money has he saved after 52 weeks?",
    "A rectangle has a length of 12 metres and a width of 5 metres. What is the area of the rectangle?",
    "Priya bakes three trays of cookies with 18 cookies on each tray and eats 5. How many cookies remain?",
]


def _question(index: int, iteration: int = 0, text: str | None = None) -> PoolQuestion:
    return PoolQuestion(
        id=f"q{index}",
        text=text or TEXTS[index],
        answer=None,
        source=QuestionSource.PROPOSED,
        added_iteration=iteration,
    )


def _pool(capacity: int = 100, replay_ratio: float = 0.25, seed: int = 0) -> QuestionPool:
    return QuestionPool(
        capacity=capacity,
        duplicate_threshold=0.8,
        solved_threshold=0.9,
        solved_min_attempts=2,
        replay_ratio=replay_ratio,
        seed=seed,
    )


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "seeds.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_load_seed_file_reads_answers_and_skips_blank_lines(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        [
            json.dumps({"question": "What is 2 + 2?", "answer": "Two and two.\n#### 4"}),
            "",
            json.dumps({"question": " How many? ", "answer": "#### 1, 234"}),
            json.dumps({"question": "Half of 5?", "answer": 2.5}),
            "   ",
            json.dumps({"question": "No answer here?"}),
            json.dumps({"question": "3 boxes of 4?", "answer": "12", "checkable": " 3 * 4 "}),
        ],
    )
    questions = load_seed_file(path)
    assert [question.checkable for question in questions] == [None, None, None, None, "3 * 4"]
    questions = questions[:-1]
    assert [(question.text, question.answer) for question in questions] == [
        ("What is 2 + 2?", "4"),
        ("How many?", "1234"),
        ("Half of 5?", "2.5"),
        ("No answer here?", None),
    ]
    assert [question.id for question in questions] == ["seed:seeds:1", "seed:seeds:3", "seed:seeds:4", "seed:seeds:6"]
    assert {question.source for question in questions} == {QuestionSource.SEED}
    assert {question.added_iteration for question in questions} == {0}


@pytest.mark.parametrize(
    "bad_line, reason",
    [
        ("{not json", "Expecting property name"),
        (json.dumps({"answer": "4"}), "'question' must be a non-empty string"),
        (json.dumps({"question": "   "}), "'question' must be a non-empty string"),
        (json.dumps({"question": 7}), "'question' must be a non-empty string"),
        (json.dumps({"question": "Q?", "answer": [4]}), "'answer' must be a string or a number"),
        (json.dumps({"question": "Q?", "answer": True}), "'answer' must be a string or a number"),
        (json.dumps({"question": "Q?", "answer": "#### "}), "'answer' is empty"),
        (json.dumps(["question"]), "expected a JSON object"),
        (json.dumps({"question": "Q?", "checkable": 12}), "'checkable' must be a non-empty string"),
        (json.dumps({"question": "Q?", "checkable": " "}), "'checkable' must be a non-empty string"),
    ],
)
def test_malformed_seed_line_names_file_and_line(tmp_path: Path, bad_line: str, reason: str) -> None:
    path = _write(tmp_path, [json.dumps({"question": "Fine?"}), "", bad_line])
    with pytest.raises(SeedFileError) as error:
        load_seed_file(path)
    message = str(error.value)
    assert message.startswith(f"{path}:3: ")
    assert reason in message
    assert "\n" not in message
    assert isinstance(error.value, ValueError)


def test_seed_file_that_is_not_utf8_or_has_no_questions_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b'{"question": "caf\xe9?"}\n')
    with pytest.raises(SeedFileError, match="latin.jsonl:1: "):
        load_seed_file(path)
    with pytest.raises(SeedFileError, match="no questions"):
        load_seed_file(_write(tmp_path, ["", "  "]))


def test_project_seed_file_loads_with_numeric_answers() -> None:
    questions = load_seed_file(TINY_MATH)
    assert 35 <= len(questions) <= 50
    for question in questions:
        float(question.answer)
    pool = _pool()
    assert all(pool.add(question).outcome is AddOutcome.ACCEPTED for question in questions)


def test_add_rejects_exact_and_near_duplicates() -> None:
    pool = _pool()
    assert pool.add(_question(0)).outcome is AddOutcome.ACCEPTED
    assert pool.add(_question(1)).outcome is AddOutcome.ACCEPTED
    # Case, punctuation and spacing are normalised away.
    shouted = _question(2, text="ANNA buys 4 red apples, and 6 green pears at the corner   market on Saturday!! " +
                        "How many fruits did she buy")
    result = pool.add(shouted)
    assert (result.outcome, result.duplicate_of) == (AddOutcome.REJECTED_DUPLICATE, "q0")
    # One word appended to 19: Jaccard of 3-word shingles 17/18, above 0.8.
    reworded = _question(3, text=TEXTS[1] + " Exactly")
    assert pool.add(reworded).duplicate_of == "q1"
    assert len(pool) == 2
    assert pool.counters == PoolCounters(accepted=2, rejected_duplicate=2)


def test_add_rejects_a_reused_id() -> None:
    pool = _pool()
    pool.add(_question(0))
    with pytest.raises(ValueError, match="already in the pool"):
        pool.add(_question(0, text=TEXTS[3]))


def test_full_pool_evicts_solved_questions_first_then_the_oldest() -> None:
    pool = _pool(capacity=3)
    for index in range(3):
        pool.add(_question(index, iteration=index))
    assert pool.record_solve("q1", 1.0) and pool.record_solve("q1", 0.9)
    pool.record_solve("q2", 1.0)  # one attempt is fewer than solved_min_attempts=2
    result = pool.add(_question(3, iteration=3))
    assert (result.outcome, result.evicted_id) == (AddOutcome.ACCEPTED, "q1")
    assert pool.add(_question(4, iteration=3)).evicted_id == "q0"
    assert [question.id for question in pool.questions()] == ["q2", "q3", "q4"]
    assert pool.counters == PoolCounters(accepted=5, evicted_solved=1, evicted_oldest=1)
    # The evicted text left the index too: it is no longer a duplicate.
    assert pool.add(_question(5, iteration=4, text=TEXTS[0])).outcome is AddOutcome.ACCEPTED


def test_seeds_with_reference_answers_are_never_evicted() -> None:
    pool = _pool(capacity=3)
    grounded = PoolQuestion(id="s0", text=TEXTS[0], answer="10", source=QuestionSource.SEED, added_iteration=0)
    ungrounded = PoolQuestion(id="s1", text=TEXTS[1], answer=None, source=QuestionSource.SEED, added_iteration=0)
    pool.add(grounded), pool.add(ungrounded), pool.add(_question(2, iteration=1))
    assert pool.record_solve("s0", 1.0) and pool.record_solve("s0", 1.0)  # reliably solved, and the oldest
    assert pool.add(_question(3, iteration=2)).evicted_id == "s1"  # the oldest question without a reference
    assert pool.add(_question(4, iteration=3)).evicted_id == "q2"
    assert [question.id for question in pool.questions()] == ["s0", "q3", "q4"]
    full = _pool(capacity=1)
    full.add(grounded)
    assert full.add(_question(1)).outcome is AddOutcome.REJECTED_FULL  # nothing may go: the new one stays out
    assert [question.id for question in full.questions()] == ["s0"] and full.counters.rejected_full == 1


def test_recent_mean_score_covers_the_last_min_attempts() -> None:
    pool = _pool(capacity=2)
    pool.add(_question(0))
    pool.add(_question(1))
    for score in (0.0, 1.0, 0.9):
        pool.record_solve("q1", score)
    stats = pool.stats("q1")
    assert (stats.attempts, stats.recent_mean_score) == (3, pytest.approx(0.95))
    assert pool.stats("q0").recent_mean_score is None
    assert pool.add(_question(2)).evicted_id == "q1"  # solved over its last 2 attempts, though not the oldest


def test_record_solve_of_an_evicted_question_records_nothing() -> None:
    pool = _pool()
    assert pool.record_solve("gone", 0.5) is False
    pool.add(_question(0))
    with pytest.raises(ValueError, match="mean_score"):
        pool.record_solve("q0", 1.5)


def _mixed_pool(seed: int = 0) -> QuestionPool:
    pool = _pool(replay_ratio=0.25, seed=seed)
    for index in range(10):
        pool.add(_question(100 + index, iteration=0, text=f"Old question number {index} about {index * 7} stones."))
        pool.add(_question(200 + index, iteration=5, text=f"New question number {index} about {index * 9} shells."))
    return pool


def test_sample_references_mixes_recent_with_a_replay_share() -> None:
    pool = _mixed_pool()
    references = pool.sample_references(8, current_iteration=5)
    assert len(references) == 8
    assert len({question.id for question in references}) == 8
    assert sum(question.added_iteration == 0 for question in references) == 2
    assert sum(pool.stats(question.id).times_served for question in pool.questions()) == 8
    # Iteration 7: nothing is recent (added at 6 or later), so all references come from older questions.
    assert len({question.id for question in pool.sample_references(20, current_iteration=7)}) == 20


def test_sample_references_reuses_questions_only_when_short() -> None:
    pool = _pool()
    for index in range(3):
        pool.add(_question(index))
    references = pool.sample_references(7, current_iteration=0)
    assert len(references) == 7
    assert sorted(pool.stats(question.id).times_served for question in pool.questions()) == [2, 2, 3]
    assert pool.sample_references(0, current_iteration=0) == []
    with pytest.raises(ValueError, match="empty question pool"):
        _pool().sample_references(1, current_iteration=0)


def test_sample_references_never_draws_excluded_questions() -> None:
    pool = _mixed_pool()
    used = frozenset(question.id for question in pool.sample_references(15, current_iteration=5))
    rest = pool.sample_references(5, current_iteration=5, exclude=used)
    assert len(rest) == 5 and not used & {question.id for question in rest}
    everything = frozenset(question.id for question in pool.questions())
    assert pool.sample_references(3, current_iteration=5, exclude=everything) == []


def test_sampling_is_deterministic_given_the_seed() -> None:
    first = [question.id for question in _mixed_pool(seed=3).sample_references(12, current_iteration=5)]
    second = [question.id for question in _mixed_pool(seed=3).sample_references(12, current_iteration=5)]
    other = [question.id for question in _mixed_pool(seed=4).sample_references(12, current_iteration=5)]
    assert first == second
    assert first != other


def test_state_round_trip_restores_questions_stats_counters_and_random_state() -> None:
    pool = _mixed_pool(seed=1)
    pool.add(_question(0, iteration=5))
    pool.add(_question(1, iteration=5, text=TEXTS[0]))  # rejected duplicate, counted
    pool.record_solve("q0", 0.75)
    pool.sample_references(5, current_iteration=5)

    state = json.loads(json.dumps(pool.state_dict()))
    restored = QuestionPool.from_state_dict(state)

    assert restored.state_dict() == pool.state_dict()
    assert restored.questions() == pool.questions()
    assert restored.counters == pool.counters
    assert restored.stats("q0") == pool.stats("q0")
    assert restored.sample_references(9, current_iteration=6) == pool.sample_references(9, current_iteration=6)
    # The LSH index was rebuilt: duplicates are still caught.
    assert restored.add(_question(2, iteration=6, text=TEXTS[0].upper())).duplicate_of == "q0"


def test_the_pool_remembers_every_question_seen_in_the_run_across_a_restore() -> None:
    pool = _mixed_pool(seed=1)
    assert pool.remember(TEXTS[0]) is False  # first sight
    assert pool.remember(TEXTS[0].upper().replace(" ", "  ")) is True  # the same words: case and spacing aside
    assert pool.remember(TEXTS[0] + " Explain.") is False  # other words
    held = pool.questions()[0].text
    assert pool.remember(held) is True  # a question the pool holds was seen
    restored = QuestionPool.from_state_dict(json.loads(json.dumps(pool.state_dict())))
    assert restored.remember(TEXTS[0]) is True  # the memory is saved with the pool, not only its content
    state = pool.state_dict()
    del state["seen"]  # a state saved before the memory existed: the held questions still count as seen
    assert QuestionPool.from_state_dict(state).remember(held) is True


def test_state_saved_before_questions_had_a_checkable_form_still_loads() -> None:
    pool = _mixed_pool(seed=1)
    state = json.loads(json.dumps(pool.state_dict()))
    for entry in state["questions"]:
        del entry["checkable"]
    assert QuestionPool.from_state_dict(state).questions() == pool.questions()


def test_malformed_state_is_a_clear_error() -> None:
    state = _mixed_pool().state_dict()
    with pytest.raises(ValueError, match="version"):
        QuestionPool.from_state_dict({**state, "version": 99})
    del state["questions"][0]["times_served"]
    with pytest.raises(ValueError, match="malformed"):
        QuestionPool.from_state_dict(state)


@pytest.mark.parametrize(
    "override, name",
    [
        ({"capacity": 0}, "capacity"),
        ({"duplicate_threshold": 0.99}, "duplicate_threshold"),
        ({"solved_threshold": 1.5}, "solved_threshold"),
        ({"solved_min_attempts": 0}, "solved_min_attempts"),
        ({"replay_ratio": -0.1}, "replay_ratio"),
    ],
)
def test_invalid_settings_name_the_field(override: dict[str, float], name: str) -> None:
    settings = {
        "capacity": 10,
        "duplicate_threshold": 0.8,
        "solved_threshold": 0.9,
        "solved_min_attempts": 2,
        "replay_ratio": 0.3,
        "seed": 0,
    }
    with pytest.raises(ValueError, match=f"pool.{name}="):
        QuestionPool(**{**settings, **override})


def test_pool_question_validates() -> None:
    with pytest.raises(ValueError, match="empty text"):
        PoolQuestion(id="x", text="  ", answer=None, source=QuestionSource.SEED, added_iteration=0)
    with pytest.raises(TypeError, match="QuestionSource"):
        PoolQuestion(id="x", text="Q?", answer=None, source="seed", added_iteration=0)  # type: ignore[arg-type]


def _distinct_text(index: int) -> str:
    letters = random.Random(index)
    return " ".join("".join(letters.choices(string.ascii_lowercase, k=6)) for _ in range(10)) + "?"


def _older_pool_and_one_recent_question() -> QuestionPool:
    pool = _pool(replay_ratio=0.3)
    for index in range(43):
        assert pool.add(_question(index, iteration=0, text=_distinct_text(index))).outcome is AddOutcome.ACCEPTED
    pool.add(_question(99, iteration=5, text=_distinct_text(99)))
    return pool


def test_one_recent_question_is_drawn_once_and_older_ones_fill_the_batch():
    pool = _older_pool_and_one_recent_question()  # the only recent question at iteration 6
    drawn = pool.sample_references(4, current_iteration=6)
    assert len({question.id for question in drawn}) == 4
    assert sum(question.added_iteration == 5 for question in drawn) == 1


def test_questions_repeat_only_when_the_pool_is_smaller_than_the_batch():
    pool = _older_pool_and_one_recent_question()
    drawn = pool.sample_references(128, current_iteration=6)  # the GPU config's solver batch, 44 questions
    counts = {question_id: sum(q.id == question_id for q in drawn) for question_id in {q.id for q in drawn}}
    assert len(counts) == 44 and max(counts.values()) <= 3  # ceil(128 / 44): fresh rounds, no favourite
