"""General exchanges far from the task: the adapter's drift from the base model on them (`learner/drift_kl`, the
token-mean KL of the current model from the base on these answers) is logged every iteration next to the held-out
accuracies, a forgetting signal that needs no labels. They are the solver's: with one adapter per role, the solver's
adapter answers them."""

from __future__ import annotations

from agents.prompts import ChatMessage
from selfplay.sft import SFTExample

GENERAL_EXCHANGES = (
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Give a synonym for 'happy'.", "A synonym for happy is joyful."),
    ("Translate 'good morning' into Spanish.", "Good morning in Spanish is 'buenos dias'."),
    ("Why do leaves change colour in autumn?",
     "In autumn trees stop making chlorophyll, so the green fades and yellow and red pigments show."),
    ("Write one sentence about the ocean.", "The ocean covers most of the Earth and is home to countless creatures."),
    ("Who wrote 'Romeo and Juliet'?", "William Shakespeare wrote 'Romeo and Juliet'."),
    ("What do bees make?", "Bees make honey and beeswax."),
    ("Name three primary colours.", "Red, blue and yellow are the three primary colours."),
)


def drift_examples() -> list[SFTExample]:
    return [SFTExample("solver", (ChatMessage(role="user", content=prompt),), answer)
            for prompt, answer in GENERAL_EXCHANGES]
