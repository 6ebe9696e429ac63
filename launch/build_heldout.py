"""Build the shipped held-out arithmetic set (configs/heldout/arithmetic.jsonl) from DeepMind's mathematics_dataset
generator (Saxton et al., 2019, Apache-2.0): a third-party source, unrelated to the seed files.

    pip install --target /tmp/mdl mathematics-dataset==1.0.1 absl-py sympy==1.5.1   # its code needs sympy < 1.6
    PYTHONPATH=/tmp/mdl python launch/build_heldout.py [--per-module 35] [--output configs/heldout/arithmetic.jsonl]

Questions come from six of its arithmetic modules at the easy end of their training difficulty, the same number
from each; only questions without negative numbers and with a whole-number answer of at most 4 digits are kept
(the arithmetic family's domain), each question once. Seeded: the
same command writes the same file.
"""

import argparse
import json
import random
from pathlib import Path

MODULES = ("add_or_sub", "mul", "div", "add_sub_multiple", "mul_div_multiple", "mixed")
DIFFICULTY = 0.3  # the lower share of each module's training entropy range
SEED = 2026
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "configs" / "heldout" / "arithmetic.jsonl"


def whole_numbers_only(question: str, answer: str) -> bool:
    """The arithmetic family's domain: no negative number in the question (a minus sign only between spaces, as
    subtraction), a whole-number answer of at most 4 digits."""
    return "-" not in question.replace(" - ", " ") and answer.isdigit() and len(answer) <= 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-module", type=int, default=35)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    import numpy as np
    from mathematics_dataset.modules import arithmetic

    random.seed(SEED)
    np.random.seed(SEED)
    modules = arithmetic.train(lambda low_high: (low_high[0], low_high[0] + DIFFICULTY * (low_high[1] - low_high[0])))
    rows, seen = [], set()
    for name in MODULES:
        kept = 0
        while kept < args.per_module:
            problem = modules[name]()
            question, answer = str(problem.question).strip(), str(problem.answer).strip()
            if question in seen or not whole_numbers_only(question, answer):
                continue
            seen.add(question)
            kept += 1
            rows.append({"question": question, "answer": answer, "source": f"mathematics_dataset arithmetic__{name}"})
    random.Random(SEED).shuffle(rows)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"wrote {len(rows)} questions to {args.output}")


if __name__ == "__main__":
    main()
