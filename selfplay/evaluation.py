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
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.parsing import FormatFailure, Parsed, failure_counts, parse_answer
from agents.prompts import solver_messages
from agents.roles import Role
from rewards.grading_pool import Grader
from rollout.records import GenerationRequest, Generator, SamplingSpec
from selfplay.question_pool import PoolQuestion, load_seed_file

Z_95 = 1.959963984540054  # standard normal quantile for a two-sided 95 % interval
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
MAX_LENIENT_CHARS = 4_000  # the lenient reading looks at the end of a response only


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
    correct: bool  # strict: the answer tag's content is right; False on a format failure
    response_tokens: int
    finish_reason: str  # "stop", or "length" when max_tokens cut the response
    lenient_correct: bool = False  # the response's last number is right, tag or not (skill apart from format)

    def to_row(self) -> dict[str, Any]:
        """One flat JSON-able row of the per-example output file."""
        return {"id": self.example.id, "question": self.example.question, "reference": self.example.reference,
                "response": self.response, "answer": self.answer,
                "failure": self.failure.value if self.failure else None, "correct": self.correct,
                "lenient_correct": self.lenient_correct, "response_tokens": self.response_tokens,
                "finish_reason": self.finish_reason}


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


def final_number(text: str) -> str | None:
    """The last number in a response (commas in it dropped), or None: the lenient reading of an answer."""
    numbers = NUMBER.findall(text[-MAX_LENIENT_CHARS:])
    return numbers[-1].replace(",", "") if numbers else None


def paired_comparison(current: Sequence[bool], baseline: Sequence[bool], z: float = Z_95) -> dict[str, Any]:
    """Two evaluations of the same questions, as paired data: the accuracy difference (current - baseline) with a
    Wald interval on the paired differences, and the exact two-sided McNemar p-value from the discordant pairs
    (only-current right: `gained`, only-baseline right: `lost`)."""
    if len(current) != len(baseline):
        raise ValueError(f"paired comparison needs the same questions, got {len(current)} and {len(baseline)}")
    n = len(current)
    gained = sum(now and not before for now, before in zip(current, baseline))
    lost = sum(before and not now for now, before in zip(current, baseline))
    difference = (gained - lost) / n if n else 0.0
    half_width = z * math.sqrt(max(gained + lost - (gained - lost) ** 2 / n, 0.0)) / n if n else 1.0
    discordant = gained + lost
    tail = sum(math.comb(discordant, k) for k in range(min(gained, lost) + 1)) / 2 ** discordant
    return {"n": n, "difference": difference, "ci95": [difference - half_width, difference + half_width],
            "gained": gained, "lost": lost, "mcnemar_p": min(1.0, 2 * tail)}


def paired_rows(current: Sequence[dict[str, Any]], baseline: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Strict and lenient paired comparisons of two evaluations' rows (`EvalResult.to_row`), matched by question
    id: every current row's id must be a key of `baseline`. A row without a lenient grade reads as wrong."""
    before = [baseline[row["id"]] for row in current]
    return {kind: paired_comparison([bool(row.get(key)) for row in current], [bool(row.get(key)) for row in before])
            for kind, key in (("strict", "correct"), ("lenient", "lenient_correct"))}


def change_line(before: float, after: float, paired: dict[str, Any]) -> str:
    """'0.350 -> 0.510 (+0.160, 95 % CI +0.080 to +0.240)': a score before and after, with the paired interval."""
    low, high = paired["ci95"]
    return f"{before:.3f} -> {after:.3f} ({paired['difference']:+.3f}, 95 % CI {low:+.3f} to {high:+.3f})"


def summarize(results: Sequence[EvalResult]) -> dict[str, Any]:
    """Strict accuracy (the answer tag) and lenient accuracy (the last number), each with its 95 % Wilson
    interval, format failures (total and per reason), truncations.

    Format failures count as incorrect (strictly). No results give accuracy 0.0 and ci95 [0.0, 1.0].
    """
    n = len(results)
    correct = sum(result.correct for result in results)
    lenient = sum(result.lenient_correct for result in results)
    by_reason = failure_counts(Parsed(None, result.failure) for result in results if result.failure is not None)
    format_failures = sum(by_reason.values())
    low, high = wilson_interval(correct, n)
    return {
        "accuracy": correct / n if n else 0.0,
        "n": n,
        "correct": correct,
        "ci95": [low, high],
        "lenient_accuracy": lenient / n if n else 0.0,
        "lenient_correct": lenient,
        "lenient_ci95": list(wilson_interval(lenient, n)),
        "format_failures": format_failures,
        "format_failure_rate": format_failures / n if n else 0.0,
        "failures": {reason.value: count for reason, count in by_reason.items()},
        "truncated": sum(result.finish_reason == "length" for result in results),
        "response_tokens_mean": sum(result.response_tokens for result in results) / n if n else 0.0,
    }


def eval_metrics(summary: dict[str, Any], namespace: str = "eval") -> dict[str, float]:
    """The tracker's scalars from a `summarize` result, under `namespace` (eval/* or eval/NAME/*)."""
    n = summary["n"]
    metrics = {
        "accuracy": float(summary["accuracy"]),
        "lenient_accuracy": float(summary["lenient_accuracy"]),
        "ci95_low": float(summary["ci95"][0]),
        "ci95_high": float(summary["ci95"][1]),
        "format_failure_rate": float(summary["format_failure_rate"]),
        "truncated_rate": summary["truncated"] / n if n else 0.0,
        "response_tokens_mean": float(summary["response_tokens_mean"]),
        "n": float(n),
    }
    return {f"{namespace}/{key}": value for key, value in metrics.items()}


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
    requests = [GenerationRequest(tuple(solver_messages(example.question)), sampling, role=Role.SOLVER.value)
                for example in examples]
    completions = generator.generate(requests) if requests else []
    if len(completions) != len(requests):
        raise RuntimeError(f"generator returned {len(completions)} completions for {len(requests)} requests")
    parses = [parse_answer(completion.samples[0].text) for completion in completions]
    numbers = [final_number(completion.samples[0].text) for completion in completions]
    strict = grader.submit([(str(parsed.value), example.reference) for example, parsed in zip(examples, parses)
                            if parsed.failure is None])
    lenient = grader.submit([(number, example.reference) for example, number in zip(examples, numbers)
                             if number is not None])
    strict_grades, lenient_grades = iter(strict.result()), iter(lenient.result())
    return [EvalResult(example=example, response=completion.samples[0].text,
                       answer=None if parsed.value is None else str(parsed.value), failure=parsed.failure,
                       correct=parsed.failure is None and next(strict_grades).correct,
                       response_tokens=len(completion.samples[0].token_ids),
                       finish_reason=completion.samples[0].finish_reason,
                       lenient_correct=number is not None and next(lenient_grades).correct)
            for example, completion, parsed, number in zip(examples, completions, parses, numbers)]
