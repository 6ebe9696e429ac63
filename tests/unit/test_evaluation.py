"""Held-out evaluation: the Wilson interval against hand-computed values, summaries, and `evaluate` through a fake
generator at the seam (canned responses: correct, wrong, missing tag, GSM8K reference)."""

from __future__ import annotations

import json
import math

import pytest

from agents.parsing import FormatFailure
from rewards.grading_pool import GradingPool
from rollout.records import Completion, GenerationRequest, Sample
from selfplay.evaluation import (EvalDataError, EvalExample, EvalResult, change_line, eval_metrics, evaluate,
                                 final_number,
                                 load_eval_questions, paired_comparison, paired_rows, summarize, wilson_interval)
from selfplay.question_pool import PoolQuestion, QuestionSource, SeedFileError


@pytest.fixture(scope="module")
def grader():
    with GradingPool(workers=1, timeout_s=5) as pool:
        yield pool


# -- Wilson interval -------------------------------------------------------------------------------------------------
# Hand computation with z = 1.96, n = 10: shrink = 1 + z^2/n = 1.38416, z^2/(2n) = 0.19208.
#   5/10:  center = (0.5 + 0.19208) / 1.38416 = 0.5; half = 1.96/1.38416 * sqrt(0.025 + 0.009604) = 0.263411
#   10/10: center = 1.19208 / 1.38416 = 0.861229; half = 1.416021 * sqrt(0.009604) = 0.138771 -> high 1.0
#   0/10:  center = 0.19208 / 1.38416 = 0.138771; half = 0.138771 -> (0.0, 0.277542), mirroring 10/10
@pytest.mark.parametrize(("successes", "n", "expected"), [
    (5, 10, (0.236589, 0.763411)),
    (10, 10, (0.722458, 1.0)),
    (0, 10, (0.0, 0.277542)),
    (0, 0, (0.0, 1.0)),  # no evidence
])
def test_wilson_interval_hand_computed(successes, n, expected):
    low, high = wilson_interval(successes, n, z=1.96)
    assert low == pytest.approx(expected[0], abs=1e-5)
    assert high == pytest.approx(expected[1], abs=1e-5)


def test_wilson_interval_default_is_95_percent_and_narrows_with_n():
    assert wilson_interval(5, 10) == pytest.approx(wilson_interval(5, 10, z=1.96), abs=1e-4)
    low_small, high_small = wilson_interval(5, 10)
    low_large, high_large = wilson_interval(500, 1000)
    assert low_small < low_large < 0.5 < high_large < high_small


@pytest.mark.parametrize(("successes", "n"), [(3, 2), (-1, 4), (0, -1)])
def test_wilson_interval_rejects_impossible_counts(successes, n):
    with pytest.raises(ValueError, match="0 <= successes <= n"):
        wilson_interval(successes, n)


# -- evaluate through a fake generator -------------------------------------------------------------------------------
class CannedGenerator:
    """Answers each question with the canned response for its text; records the requests it saw."""

    def __init__(self, responses: dict[str, str]) -> None:
        self.responses = responses
        self.requests: list[GenerationRequest] = []

    def generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        self.requests.extend(requests)
        completions = []
        for request in requests:
            text = self.responses[request.messages[-1]["content"]]
            finish = "length" if text.endswith("...") else "stop"
            sample = Sample(text=text, token_ids=tuple(range(len(text.split()))),
                            logprobs=tuple(0.0 for _ in text.split()), finish_reason=finish)
            completions.append(Completion(prompt_token_ids=(1, 2, 3), samples=(sample,), weight_version=0))
        return completions


def _question(number: int, text: str, answer: str | None) -> PoolQuestion:
    return PoolQuestion(id=f"seed:heldout:{number}", text=text, answer=answer, source=QuestionSource.SEED,
                        added_iteration=0)


QUESTIONS = [
    _question(1, "What is 6 * 7?", "42"),
    _question(2, "What is 10 - 3?", "7"),
    _question(3, "What is 2 + 2?", "4"),
    _question(4, "What is 1,000 + 200?", "1200"),
    _question(5, "What is 9 + 1?", "10"),
]
RESPONSES = {
    "What is 6 * 7?": "6 * 7 = 42. <answer>42</answer>",  # correct
    "What is 10 - 3?": "10 - 3 = 8. <answer>8</answer>",  # wrong
    "What is 2 + 2?": "It is 4.",  # missing tag
    "What is 1,000 + 200?": "That is <answer>$1200$</answer>",  # correct by value, not by text
    "What is 9 + 1?": "Let me think step by step ...",  # cut off: missing tag, truncated
}


def test_evaluate_parses_and_grades_greedy_answers(grader):
    generator = CannedGenerator(RESPONSES)
    results = evaluate(generator, QUESTIONS, max_tokens=64, grader=grader)

    assert [request.sampling.temperature for request in generator.requests] == [0.0] * 5
    assert {(request.sampling.n, request.sampling.max_tokens) for request in generator.requests} == {(1, 64)}
    assert generator.requests[0].messages[0]["role"] == "system"  # the solver prompt, not the bare question
    assert [result.example.id for result in results] == [question.id for question in QUESTIONS]
    assert [result.correct for result in results] == [True, False, False, True, False]
    assert [result.answer for result in results] == ["42", "8", None, "$1200$", None]
    assert [result.failure for result in results] == [None, None, FormatFailure.MISSING_TAG, None,
                                                      FormatFailure.MISSING_TAG]
    assert results[4].finish_reason == "length"
    # lenient: the last number, tag or not ("6 * 7 = 42. 42" -> 42; "It is 4." -> 4; "$1200$" -> 1200)
    assert [result.lenient_correct for result in results] == [True, False, True, True, False]


def test_summarize_counts_format_failures_as_incorrect(grader):
    summary = summarize(evaluate(CannedGenerator(RESPONSES), QUESTIONS, max_tokens=64, grader=grader))

    assert summary["n"] == 5
    assert summary["correct"] == 2
    assert summary["accuracy"] == pytest.approx(0.4)
    assert summary["format_failures"] == 2
    assert summary["format_failure_rate"] == pytest.approx(0.4)
    assert summary["failures"]["missing_tag"] == 2
    assert set(summary["failures"]) == {failure.value for failure in FormatFailure}  # stable keys
    assert sum(summary["failures"].values()) == 2
    assert summary["truncated"] == 1
    assert summary["ci95"] == pytest.approx(list(wilson_interval(2, 5)))
    assert (summary["lenient_correct"], summary["lenient_accuracy"]) == (3, pytest.approx(0.6))
    assert summary["lenient_ci95"] == pytest.approx(list(wilson_interval(3, 5)))
    json.dumps(summary)  # the launcher prints it as one JSON line


def test_summarize_empty_has_no_evidence():
    summary = summarize([])
    assert (summary["n"], summary["accuracy"], summary["ci95"]) == (0, 0.0, [0.0, 1.0])


def test_eval_metrics_keys_for_the_tracker():
    example = EvalExample("seed:heldout:1", "q", "1")
    results = [EvalResult(example, "<answer>1</answer>", "1", None, True, 4, "stop", True),
               EvalResult(example, "1", None, FormatFailure.MISSING_TAG, False, 8, "length", True)]
    metrics = eval_metrics(summarize(results))
    assert metrics == {
        "eval/accuracy": 0.5, "eval/lenient_accuracy": 1.0, "eval/ci95_low": pytest.approx(wilson_interval(1, 2)[0]),
        "eval/ci95_high": pytest.approx(wilson_interval(1, 2)[1]), "eval/format_failure_rate": 0.5,
        "eval/truncated_rate": 0.5, "eval/response_tokens_mean": 6.0, "eval/n": 2.0,
    }
    assert all(isinstance(value, float) for value in metrics.values())


def test_result_row_is_flat_json():
    example = EvalExample("seed:heldout:3", "What is 2 + 2?", "4")
    row = EvalResult(example, "It is 4.", None, FormatFailure.MISSING_TAG, False, 3, "stop").to_row()
    assert json.loads(json.dumps(row)) == {
        "id": "seed:heldout:3", "question": "What is 2 + 2?", "reference": "4", "response": "It is 4.",
        "answer": None, "failure": "missing_tag", "correct": False, "lenient_correct": False, "response_tokens": 3,
        "finish_reason": "stop"}


def test_evaluate_rejects_a_question_without_reference(grader):
    questions = [QUESTIONS[0], _question(7, "Write a poem.", None)]
    with pytest.raises(EvalDataError, match="seed:heldout:7 has no reference answer"):
        evaluate(CannedGenerator(RESPONSES), questions, max_tokens=64, grader=grader)


# -- data files ------------------------------------------------------------------------------------------------------
def test_load_eval_questions_reads_gsm8k_and_plain_answers(tmp_path):
    path = tmp_path / "heldout.jsonl"
    path.write_text("\n".join(json.dumps(record) for record in [
        {"question": "Natalia sold 48 clips in April and half as many in May. How many in all?",
         "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"},
        {"question": "What is 1,000 + 234?", "answer": "He adds them.\n#### 1,234"},
        {"question": "What is 3 + 4?", "answer": 7},
    ]) + "\n")
    questions = load_eval_questions(path)
    assert [question.answer for question in questions] == ["72", "1234", "7"]
    assert [question.id for question in load_eval_questions(path, limit=2)] == ["seed:heldout:1", "seed:heldout:2"]


def test_load_eval_questions_names_file_and_line(tmp_path):
    missing_answer = tmp_path / "unanswered.jsonl"
    missing_answer.write_text('{"question": "a?", "answer": "1"}\n\n{"question": "b?"}\n')
    with pytest.raises(EvalDataError, match=r"unanswered.jsonl:3: no 'answer' field"):
        load_eval_questions(missing_answer)
    malformed = tmp_path / "malformed.jsonl"
    malformed.write_text('{"question": "a?", "answer": "1"}\n{"question": "b?", \n')
    with pytest.raises(SeedFileError, match=r"malformed.jsonl:2: "):
        load_eval_questions(malformed)


@pytest.mark.parametrize("text, number", [("so 1,234 apples, then 5.5", "5.5"), ("no digits here", None),
                                          ("the answer is -3.", "-3"), ("1,200 in all", "1200")])
def test_final_number_is_the_last_number_of_the_response(text, number):
    assert final_number(text) == number


def test_paired_comparison_hand_computed():
    # 20 questions: 5 gained (right now, wrong before), 1 lost, 4 right in both, 10 wrong in both.
    current = [True] * 5 + [False] + [True] * 4 + [False] * 10
    baseline = [False] * 5 + [True] + [True] * 4 + [False] * 10
    result = paired_comparison(current, baseline)
    # difference (5 - 1) / 20 = 0.2; variance (b + c - (b - c)^2 / n) / n^2 = (6 - 0.8) / 400 = 0.013
    assert result["difference"] == pytest.approx(0.2)
    assert result["ci95"] == pytest.approx([0.2 - 1.959964 * math.sqrt(0.013), 0.2 + 1.959964 * math.sqrt(0.013)])
    # exact McNemar: 2 * P(X <= 1), X ~ Binomial(6, 1/2) = 2 * (1 + 6) / 64
    assert result["mcnemar_p"] == pytest.approx(14 / 64)
    assert (result["gained"], result["lost"], result["n"]) == (5, 1, 20)
    assert paired_comparison([True, False], [True, False])["mcnemar_p"] == 1.0  # no discordant pair
    with pytest.raises(ValueError, match="same questions"):
        paired_comparison([True], [True, False])


def test_paired_rows_match_by_question_id():
    now = [{"id": "b", "correct": True, "lenient_correct": True},
           {"id": "a", "correct": False, "lenient_correct": True},
           {"id": "c", "correct": False, "lenient_correct": False}]
    before = {"a": {"id": "a", "correct": True}, "b": {"id": "b", "correct": False}, "c": {"id": "c", "correct": False},
              "d": {"id": "d", "correct": True}}  # an extra question the current rows lack: not compared
    paired = paired_rows(now, before)
    # strict: b gained, a lost, c wrong in both; lenient: `before` has no lenient grades (wrong), a and b gained
    assert (paired["strict"]["n"], paired["strict"]["gained"], paired["strict"]["lost"]) == (3, 1, 1)
    assert paired["strict"]["difference"] == 0.0
    assert (paired["lenient"]["gained"], paired["lenient"]["lost"]) == (2, 0)
    assert paired["lenient"]["difference"] == pytest.approx(2 / 3)
    with pytest.raises(KeyError):
        paired_rows([{"id": "e", "correct": True}], before)


def test_a_change_reads_before_after_and_the_paired_interval():
    paired = {"difference": 0.16, "ci95": [0.08, 0.24]}
    assert change_line(0.35, 0.51, paired) == "0.350 -> 0.510 (+0.160, 95 % CI +0.080 to +0.240)"
    assert change_line(0.5, 0.45, {"difference": -0.05, "ci95": [-0.1, 0.0]}) == (
        "0.500 -> 0.450 (-0.050, 95 % CI -0.100 to +0.000)")
