"""SFT cold start (`sft.steps`, 0 = off): before the first self-play iteration, the shared adapter learns the roles'
output format from the seed file, with the same learner.

Examples: the solver answering each seed question that has a reference answer (the family's `worked_answer`: the
calculation, where the seed gives its checkable form, then `<answer>...</answer>`), and the proposer writing the
seed question in its task family's format where the family can (`proposal_text`). The loss is
the learner's own with advantage 1 on every response token and the importance weight 1 (the rollout logprobs
are the learner's): its gradient is that of the token-mean cross-entropy on response tokens only. `sft/nll` is that
cross-entropy before each step.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from statistics import fmean
from typing import Any, Callable

from agents.prompts import ChatMessage, proposer_messages, solver_messages
from agents.tasks import TaskFamily, demonstration
from learner.records import TrainBatch, TrainSample
from selfplay.question_pool import PoolQuestion


@dataclass(frozen=True)
class SFTExample:
    role: str
    messages: tuple[ChatMessage, ...]
    response: str


def sft_examples(questions: list[PoolQuestion], family: TaskFamily) -> list[SFTExample]:
    examples, proposals = [], 0
    for question in questions:
        try:
            if question.answer is not None:
                examples.append(SFTExample("solver", tuple(solver_messages(question.text)),
                                           family.worked_answer(question.answer, question.checkable)))
            proposal = family.proposal_text(question.text, question.checkable)
        except ValueError as error:
            raise ValueError(f"seed {question.id}: {error}") from None
        if proposal is not None:
            messages = proposer_messages(None, family.proposer_system, demonstration(family, proposals))
            proposals += 1
            examples.append(SFTExample("proposer", tuple(messages), proposal))
    return examples


def step_examples(examples: list[SFTExample], step: int, batch_size: int) -> list[SFTExample]:
    """The examples of optimizer step `step`: the next `batch_size` in order, wrapping around."""
    return [examples[(step * batch_size + offset) % len(examples)] for offset in range(batch_size)]


def tokenized(example: SFTExample, tokenizer: Any) -> TrainSample:
    """Prompt rendered as the engines render it; response tokens end with the end-of-turn token, so the model also
    learns to stop."""
    prompt = tokenizer.apply_chat_template(list(example.messages), add_generation_prompt=True, tokenize=True)
    prompt = list(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)
    response = tokenizer(example.response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return TrainSample(tuple(prompt), tuple(response), (0.0,) * len(response), advantage=1.0, role=example.role)


def run_sft(learner: Any, tokenizer: Any, examples: list[SFTExample], steps: int, batch_size: int,
            progress: Callable[[str], None]) -> dict[str, float]:
    """`steps` optimizer steps on `learner` (learner.group.LearnerGroup); returns the `sft/*` metrics."""
    if not examples:
        raise ValueError("sft.steps > 0, but the seed file has no example to learn from (no reference answers)")
    first = last = float("nan")
    for step in range(steps):
        samples = [tokenized(example, tokenizer) for example in step_examples(examples, step, batch_size)]
        current = learner.policy_logprobs(samples)
        nll = -fmean(value for logprobs in current for value in logprobs)
        learner.train(TrainBatch(tuple(replace(sample, rollout_logprobs=tuple(logprobs))
                                       for sample, logprobs in zip(samples, current))))
        first = nll if step == 0 else first
        last = nll
        progress(f"  sft step {step + 1}/{steps}: nll {nll:.3f}")
    return {"sft/steps": float(steps), "sft/examples": float(len(examples)), "sft/nll_first": first,
            "sft/nll_last": last}
