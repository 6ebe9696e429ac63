"""Chat messages for each role: short, concrete instructions a 135M model can follow.

Returns messages as {"role", "content"} dicts; the rollout engine applies the tokenizer's chat template. The
output format (the tags agents/parsing.py reads) is fixed here, in system messages, and rubrics only supply the
judge's criteria, so no rubric edit can break the parser. Leaves out parsing and generation settings.
"""

from typing import TypedDict

from rewards.rubric import Rubric, render_answer, render_question


class ChatMessage(TypedDict):
    """One chat turn, as tokenizer chat templates expect it."""

    role: str
    content: str


PROPOSER_SYSTEM = (
    "You write one new question for a student. The question must be clear, self-contained (give every fact "
    "needed), solvable, and have one short final answer. Write only the question, inside <question></question> "
    "tags. Do not answer it."
)
PROPOSER_FROM_SCRATCH = "Write a new question that takes a few steps of reasoning to solve."
PROPOSER_REWRITE = (
    "Reference question:\n{reference_question}\n\n"
    "Write a harder, self-contained rewrite of it: add a step or change the numbers, keep it solvable."
)
SOLVER_SYSTEM = (
    "Solve the question. Reason step by step, then give only the final answer inside <answer></answer> tags, "
    "for example <answer>42</answer>."
)
JUDGE_SYSTEM = (
    "You are a careful grader. First write a short analysis of two or three sentences. Then give one whole-number "
    "score from 1 to 10 inside <score></score> tags, for example <score>4</score>. Write the score tag once."
)


def proposer_messages(reference_question: str | None) -> list[ChatMessage]:
    """Ask for a new question from scratch (`reference_question` None) or a harder rewrite of the reference."""
    if reference_question is None:
        request = PROPOSER_FROM_SCRATCH
    else:
        request = PROPOSER_REWRITE.format(reference_question=reference_question)
    return [_message("system", PROPOSER_SYSTEM), _message("user", request)]


def solver_messages(question: str) -> list[ChatMessage]:
    """Ask for reasoning, then the final answer in one answer tag."""
    return [_message("system", SOLVER_SYSTEM), _message("user", question)]


def judge_question_messages(rubric: Rubric, question: str) -> list[ChatMessage]:
    """Ask the judge to score a question's quality under `rubric`."""
    return [_message("system", JUDGE_SYSTEM), _message("user", render_question(rubric, question))]


def judge_answer_messages(
    rubric: Rubric, question: str, answer: str, reference_answer: str | None
) -> list[ChatMessage]:
    """Ask the judge to score an answer under `rubric`.

    `answer` is what the judge should read, typically the solver's whole response (reasoning and final answer);
    `reference_answer` is None when the question has no known answer.
    """
    content = render_answer(rubric, question, answer, reference_answer)
    return [_message("system", JUDGE_SYSTEM), _message("user", content)]


def _message(role: str, content: str) -> ChatMessage:
    return {"role": role, "content": content}
