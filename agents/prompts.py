"""Chat messages for each role: short, concrete instructions a 135M model can follow.

Returns messages as {"role", "content"} dicts; the rollout engine applies the tokenizer's chat template. The
output format (the tags agents/parsing.py reads) is fixed here, in system messages, and rubrics only supply the
judge's criteria, so no rubric edit can break the parser. Every request passes through `neutralise_markers` with
`markers`, the serving tokenizer's special strings (`agents.parsing.special_markers`): text another role wrote (a
question, an answer) cannot open or close a turn. Leaves out parsing and generation settings.
"""

from collections.abc import Collection, Sequence
from typing import TypedDict

from agents.parsing import neutralise_markers, neutralise_tags
from rewards.rubric import Rubric, render_answer, render_question


class ChatMessage(TypedDict):
    """One chat turn, as tokenizer chat templates expect it."""

    role: str
    content: str


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


# One worked exchange per role, shown before the real request. Small models copy a demonstrated format far more
# often than a described one: on SmolLM2-135M-Instruct (temperature 1.0) tagged responses went from 0 of 16 to
# about 2-3 of 8 per role with these, enough reward variance for GRPO to learn the format from.
SOLVER_DEMONSTRATION = (
    "Tom has 5 apples and buys 3 more. How many apples does he have?",
    "Tom starts with 5 apples and buys 3 more, so 5 + 3 = 8.\n<answer>8</answer>",
)
JUDGE_DEMONSTRATION = (  # the judge reads responses with their tags neutralised (`neutralise_tags`)
    "Question:\nWhat is 2 + 3?\n\nAnswer:\n2 + 3 = 6, so the answer is [answer]6[/answer]",
    "The final answer is wrong: 2 + 3 is 5, not 6.\n<score>2</score>",
)
# A question verdict is shown question verdicts, rendered by the run's rubric like the real request: one question
# missing a fact, one well-posed, so that neither score is the only one shown. Shown the answer verdict above
# instead, the judge often answered the question ("The answer is [answer]6[/answer]") and gave no score
# (bench/judge_format.py measures both).
JUDGE_QUESTION_DEMONSTRATIONS = (
    ("A box holds some pens. How many pens are in 4 boxes?",
     "The question does not say how many pens one box holds, so it cannot be solved.\n<score>2</score>"),
    ("A box holds 6 pens and a bag holds 5. How many pens are in 4 boxes and 2 bags?",
     "The question is clear, gives every fact needed and takes two steps to solve.\n<score>8</score>"),
)


def _demonstrated(system: str, demonstrations: Sequence[tuple[str, str]], request: str,
                  markers: Collection[str]) -> list[ChatMessage]:
    """The system message, each (request, response) demonstration as a past exchange, then the request."""
    shown = [_message(role, text) for exchange in demonstrations for role, text in zip(("user", "assistant"), exchange)]
    # the whole request, not each value: two values side by side could spell a marker between them
    return [_message("system", system), *shown, _message("user", neutralise_markers(request, markers))]


def proposer_messages(reference_question: str | None, system: str, demonstration: tuple[str, str],
                      markers: Collection[str] = ()) -> list[ChatMessage]:
    """Ask for a new question from scratch (`reference_question` None) or a harder rewrite of the reference, in the
    output format a task family's `system` message and `demonstration` (request, response) set."""
    if reference_question is None:
        request = PROPOSER_FROM_SCRATCH
    else:
        request = PROPOSER_REWRITE.format(reference_question=reference_question)
    return _demonstrated(system, [demonstration], request, markers)


def solver_messages(question: str, markers: Collection[str] = ()) -> list[ChatMessage]:
    """Ask for reasoning, then the final answer in one answer tag."""
    return _demonstrated(SOLVER_SYSTEM, [SOLVER_DEMONSTRATION], question, markers)


def judge_question_messages(rubric: Rubric, question: str, markers: Collection[str] = ()) -> list[ChatMessage]:
    """Ask the judge to score a question's quality under `rubric`, after two question verdicts rendered the same
    way; the question is shown with its tags neutralised, so no tag in it can speak for the judge."""
    shown = [(render_question(rubric, example), verdict) for example, verdict in JUDGE_QUESTION_DEMONSTRATIONS]
    return _demonstrated(JUDGE_SYSTEM, shown, render_question(rubric, neutralise_tags(question)), markers)


def judge_answer_messages(
    rubric: Rubric, question: str, answer: str, reference_answer: str | None, markers: Collection[str] = ()
) -> list[ChatMessage]:
    """Ask the judge to score an answer under `rubric`.

    `answer` is what the judge should read, typically the solver's whole response (reasoning and final answer);
    `reference_answer` is None when the question has no known answer. Every text is shown with its tags
    neutralised: a verdict tag written by the solver reaches the judge as plain words.
    """
    content = render_answer(rubric, neutralise_tags(question), neutralise_tags(answer),
                            None if reference_answer is None else neutralise_tags(reference_answer))
    return _demonstrated(JUDGE_SYSTEM, [JUDGE_DEMONSTRATION], content, markers)


def _message(role: str, content: str) -> ChatMessage:
    return {"role": role, "content": content}
