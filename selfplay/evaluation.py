"""Held-out evaluation: greedy solver answers graded against reference answers, with a binomial interval.

The same code serves `launch/eval.py` (an in-process engine) and the training loop (the engine pool): both hand
`evaluate` any object with `generate(requests) -> completions`. One answer per question at temperature 0, parsed
strictly (agents/parsing.py) and graded with math-verify (rewards/grading.py); a response without a well-formed
answer tag is a format failure and counts as incorrect. Data files are read by
`selfplay.question_pool.load_seed_file`, so GSM8K's `#### N` solutions and plain `answer` fields both work. Leaves
out building engines and loading weights (launch/eval.py) and logging (the driver logs what `eval_metrics` returns).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.parsing import FormatFailure, Parsed, failure_counts, parse_answer
from agents.prompts import solver_messages
from rewards.grading_pool import Grader
from rollout.records import GenerationRequest, Generator, SamplingSpec
from selfplay.question_pool import PoolQuestion, load_seed_file

Z_95 = 1.959963984540054  # standard normal quantile for a two-sided 95 % interval


class EvalDataError(ValueError):
    """Evaluation data that cannot be graded (a question without a reference answer); names the file and line."""


@dataclass(frozen=True)
class EvalExample:
    """One held-out question with its reference final answer."""

    id: str  # load_seed_file's `seed:<file stem>:<line number>`
    question: str
    reference: str


@dataclass(frozen=True)
class EvalResult:
    """One greedy answer to an example: the response, its parse and its grade."""

    example: EvalExample
    response: str
    answer: str | None  # the content of the answer tag; None on a format failure
    failure: FormatFailure | None  # why no answer was parsed
    correct: bool  # False on a format failure
    response_tokens: int
    finish_reason: str  # "stop", or "length" when max_tokens cut the response

    def to_row(self) -> dict[str, Any]:
        """One flat JSON-able row of the per-example output file."""
        return {"id": self.example.id, "question": self.example.question, "reference": self.example.reference,
                "response": self.response, "answer": self.answer,
                "failure": self.failure.value if self.failure else None, "correct": self.correct,
                "response_tokens": self.response_tokens, "finish_reason": self.finish_reason}


# -- pure: statistics ------------------------------------------------------------------------------------------------
def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (sound at 0 % and 100 %, unlike the normal approximation).

    n = 0 carries no evidence and gives (0.0, 1.0). Raises ValueError unless 0 <= successes <= n.
    """
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"wilson_interval needs 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    proportion = successes / n
    shrink = 1 + z * z / n
    center = (proportion + z * z / (2 * n)) / shrink
    half_width = z / shrink * math.sqrt(proportion * (1 - proportion) / n + z * z / (4 * n * n))
    return max(0.0, center - half_width), min(1.0, center + half_width)


def summarize(results: Sequence[EvalResult]) -> dict[str, Any]:
    """Accuracy with its 95 % Wilson interval, format failures (total and per reason), truncations.

    Format failures count as incorrect. No results give accuracy 0.0 and ci95 [0.0, 1.0].
    """
    n = len(results)
    correct = sum(result.correct for result in results)
    by_reason = failure_counts(Parsed(None, result.failure) for result in results if result.failure is not None)
    format_failures = sum(by_reason.values())
    low, high = wilson_interval(correct, n)
    return {
        "accuracy": correct / n if n else 0.0,
        "n": n,
        "correct": correct,
        "ci95": [low, high],
        "format_failures": format_failures,
        "format_failure_rate": format_failures / n if n else 0.0,
        "failures": {reason.value: count for reason, count in by_reason.items()},
        "truncated": sum(result.finish_reason == "length" for result in results),
        "response_tokens_mean": sum(result.response_tokens for result in results) / n if n else 0.0,
    }


def eval_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The tracker's `eval/*` scalars from a `summarize` result."""
    n = summary["n"]
    return {
        "eval/accuracy": float(summary["accuracy"]),
        "eval/ci95_low": float(summary["ci95"][0]),
        "eval/ci95_high": float(summary["ci95"][1]),
        "eval/format_failure_rate": float(summary["format_failure_rate"]),
        "eval/truncated_rate": summary["truncated"] / n if n else 0.0,
        "eval/response_tokens_mean": float(summary["response_tokens_mean"]),
        "eval/n": float(n),
    }


# -- data ------------------------------------------------------------------------------------------------------------
def _line_of(question_id: str) -> str:
    return question_id.rsplit(":", 1)[-1]


def eval_example(question: PoolQuestion) -> EvalExample:
    """The question as an example; EvalDataError when it has no reference answer."""
    if question.answer is None:
        raise EvalDataError(f"question {question.id} has no reference answer (evaluation needs an 'answer' field)")
    return EvalExample(id=question.id, question=question.text, reference=question.answer)


def load_eval_questions(path: str | Path, limit: int | None = None) -> list[PoolQuestion]:
    """The first `limit` questions (all when None) of a JSONL file; every line must carry a reference answer.

    Raises SeedFileError for an unreadable line and EvalDataError for a line without an answer (both one line
    naming the file and line), FileNotFoundError when the file is missing.
    """
    questions = load_seed_file(path)
    for question in questions:
        if question.answer is None:
            raise EvalDataError(f"{path}:{_line_of(question.id)}: no 'answer' field "
                                f"(evaluation needs a reference answer on every line)")
    return questions if limit is None else questions[:limit]


# -- the runner ------------------------------------------------------------------------------------------------------
def greedy_sampling(max_tokens: int) -> SamplingSpec:
    return SamplingSpec(n=1, temperature=0.0, top_p=1.0, max_tokens=max_tokens)


def evaluate(generator: Generator, questions: Sequence[PoolQuestion], max_tokens: int,
             grader: Grader) -> list[EvalResult]:
    """One greedy solver answer per question through `generator`, parsed and graded by `grader`, in question
    order (a grade that times out counts as incorrect)."""
    examples = [eval_example(question) for question in questions]
    sampling = greedy_sampling(max_tokens)
    requests = [GenerationRequest(tuple(solver_messages(example.question)), sampling) for example in examples]
    completions = generator.generate(requests) if requests else []
    if len(completions) != len(requests):
        raise RuntimeError(f"generator returned {len(completions)} completions for {len(requests)} requests")
    parses = [parse_answer(completion.samples[0].text) for completion in completions]
    pairs = [(str(parsed.value), example.reference) for example, parsed in zip(examples, parses)
             if parsed.failure is None]
    grades = iter(grader.submit(pairs).result())
    return [EvalResult(example=example, response=completion.samples[0].text,
                       answer=None if parsed.value is None else str(parsed.value), failure=parsed.failure,
                       correct=parsed.failure is None and next(grades).correct,
                       response_tokens=len(completion.samples[0].token_ids),
                       finish_reason=completion.samples[0].finish_reason)
            for example, completion, parsed in zip(examples, completions, parses)]
