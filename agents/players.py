"""The three roles as light players: build prompts, call a generator, parse the responses strictly.

Each player is a plain class over a `Generator` (anything with `generate(requests) -> completions`): the engine
pool in production, where the driver runs each player as a Ray actor, or an in-process engine in tests.
Players return records holding the sampled tokens (for training) and the parse (for rewards); they never
compute rewards and never import Ray. Each player is given `markers`, the special strings of the tokenizer its
generator serves with (`agents.parsing.special_markers`), and keeps them out of every prompt it builds.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from typing import Sequence

from agents.parsing import FormatFailure, Parsed, parse_answer, parse_score
from agents.prompts import (ChatMessage, judge_answer_messages, judge_question_messages, proposer_messages,
                            solver_messages)
from agents.roles import Role
from agents.tasks import demonstration, task_family
from rewards.rubric import Rubric, RubricError
from rollout.records import GenerationRequest, Generator, Sample, SamplingSpec


@dataclass(frozen=True)
class Turn:
    """One sampled response of a role, with its parse. Training uses prompt + sample tokens."""

    role: Role
    prompt_token_ids: tuple[int, ...]  # [P]
    sample: Sample
    parsed: Parsed
    temperature: float
    weight_version: int  # the weights that generated it


@dataclass(frozen=True)
class AnswerToJudge:
    question: str
    answer: str
    reference_answer: str | None


def distinct_seeds(requests: list[GenerationRequest]) -> list[GenerationRequest]:
    """Request i samples with seed + i: a seeded spec shared by identical prompts (the from-scratch proposals)
    would otherwise give them identical samples."""
    return [request if request.sampling.seed is None else
            replace(request, sampling=replace(request.sampling, seed=request.sampling.seed + index))
            for index, request in enumerate(requests)]


def _turns(generator: Generator, role: Role, requests: list[GenerationRequest], parse,
           temperature: float) -> list[list[Turn]]:
    requests = [replace(request, role=role.value) for request in distinct_seeds(requests)]  # served its adapter
    completions = generator.generate(requests) if requests else []
    return [[Turn(role, completion.prompt_token_ids, sample, parse(sample.text), temperature,
                  completion.weight_version)
             for sample in completion.samples] for completion in completions]


class Proposer:
    def __init__(self, generator: Generator, family: str = "math", markers: Collection[str] = ()) -> None:
        self.generator, self.family, self.markers = generator, task_family(family), frozenset(markers)

    def propose(self, references: Sequence[str | None], sampling: SamplingSpec) -> list[Turn]:
        """One question per entry: a harder rewrite of the reference, or from scratch where it is None, in the task
        family's format; each parses to a Proposal (agents.tasks). Request i is shown the family's demonstration
        seed + i, so a batch, and each seeded call, cycles through them."""
        offset = sampling.seed or 0
        requests = [GenerationRequest(tuple(proposer_messages(reference, self.family.proposer_system,
                                                              demonstration(self.family, offset + index),
                                                              self.markers)),
                                      sampling)
                    for index, reference in enumerate(references)]
        return [turns[0] for turns in _turns(self.generator, Role.PROPOSER, requests, self.family.parse_proposal,
                                             sampling.temperature)]


class Solver:
    def __init__(self, generator: Generator, markers: Collection[str] = ()) -> None:
        self.generator, self.markers = generator, frozenset(markers)

    def solve(self, questions: Sequence[str], sampling: SamplingSpec) -> list[list[Turn]]:
        """`sampling.n` answers per question (one GRPO group each)."""
        requests = [GenerationRequest(tuple(solver_messages(question, self.markers)), sampling)
                    for question in questions]
        return _turns(self.generator, Role.SOLVER, requests, parse_answer, sampling.temperature)


class Judge:
    def __init__(self, generator: Generator, markers: Collection[str] = ()) -> None:
        self.generator, self.markers = generator, frozenset(markers)

    def judge_questions(self, rubric: Rubric, questions: Sequence[str], sampling: SamplingSpec) -> list[Turn]:
        return self._verdicts(rubric, [lambda question=question: judge_question_messages(rubric, question,
                                                                                         self.markers)
                                       for question in questions], sampling)

    def judge_answers(self, rubric: Rubric, items: Sequence[AnswerToJudge], sampling: SamplingSpec) -> list[Turn]:
        return self._verdicts(rubric, [lambda item=item: judge_answer_messages(rubric, item.question, item.answer,
                                                                               item.reference_answer, self.markers)
                                       for item in items], sampling)

    def _verdicts(self, rubric: Rubric, prompts: list[Callable[[], list[ChatMessage]]],
                  sampling: SamplingSpec) -> list[Turn]:
        """One verdict per prompt. A prompt the rubric fails to render (its trial render at load passed, these
        values do not) gets no verdict: a turn without tokens, counted as the format failure `rubric_error`, and
        one line for the call."""
        rendered, errors = [], {}
        for index, build in enumerate(prompts):
            try:
                rendered.append(GenerationRequest(tuple(build()), sampling))
            except RubricError as error:
                errors[index] = error
        verdicts = iter(turns[0] for turns in _turns(self.generator, Role.JUDGE, rendered, parse_score,
                                                     sampling.temperature))
        if errors:
            print(f"judge: rubric {rubric.name} {rubric.version} failed on {len(errors)} of {len(prompts)} prompts, "
                  f"judged as format failures: {next(iter(errors.values()))}", file=sys.stderr, flush=True)
        return [_unrendered(sampling) if index in errors else next(verdicts) for index in range(len(prompts))]


def _unrendered(sampling: SamplingSpec) -> Turn:
    # no tokens: the learner skips it; weight version -1: no weights generated it
    return Turn(Role.JUDGE, (), Sample("", (), (), FormatFailure.RUBRIC_ERROR.value),
                Parsed(None, FormatFailure.RUBRIC_ERROR), sampling.temperature, -1)
