"""Build the shipped held-out arithmetic sets (configs/heldout/arithmetic.jsonl and, with --hard,
configs/heldout/arithmetic-hard.jsonl) from DeepMind's mathematics_dataset generator (Saxton et al., 2019,
Apache-2.0): a third-party source, unrelated to the seed files.

    pip install --target /tmp/mdl mathematics-dataset==1.0.1 absl-py sympy==1.5.1   # its code needs sympy < 1.6
    PYTHONPATH=/tmp/mdl python launch/build_heldout.py [--per-module 35] [--output configs/heldout/arithmetic.jsonl]
    PYTHONPATH=/tmp/mdl python launch/build_heldout.py --hard [--count 200] [--output FILE]

Default set: questions from six of its arithmetic modules at the easy end of their training difficulty, the same
number from each; only questions without negative numbers and with a whole-number answer of at most 4 digits are
kept (the arithmetic family's domain), each question once.

--hard: questions from its three multi-operation arithmetic modules (add_sub_multiple, mul_div_multiple, mixed; the
others ask one operation) in the upper half of their training difficulty, as evenly split between them as the count
allows; only bare calculations with three or more binary operations (counted on the parsed expression, see
operation_count), at least one number of 3+ digits in the question or a 3+ digit answer, no negative numbers and a
whole-number answer of at most 6 digits that the expression evaluates to are kept, each question once and none
equal to (or the same expression as) a question of configs/seeds/arithmetic.jsonl.

Seeded: the same command writes the same file.
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rewards.arithmetic import ArithmeticRefused, evaluate  # noqa: E402
from selfplay.curriculum import operations_and_largest  # noqa: E402

MODULES = ("add_or_sub", "mul", "div", "add_sub_multiple", "mul_div_multiple", "mixed")
HARD_MODULES = ("add_sub_multiple", "mul_div_multiple", "mixed")  # the arithmetic modules that chain operations
DIFFICULTY = (0.0, 0.3)  # the lower share of each module's training entropy range
HARD_DIFFICULTY = (0.5, 1.0)  # its upper half
HARD_COUNT = 200
SEED = 2026
DEFAULT_OUTPUT = ROOT / "configs" / "heldout" / "arithmetic.jsonl"
HARD_OUTPUT = ROOT / "configs" / "heldout" / "arithmetic-hard.jsonl"
SEEDS = ROOT / "configs" / "seeds" / "arithmetic.jsonl"

_SYMBOLS = {"\u00d7": "*", "\u22c5": "*", "\u00b7": "*", "\u00f7": "/", "\u2212": "-", "\u2013": "-", "\u2014": "-"}
_WORDS = re.compile(r"^(?:what is(?: the value of)?|evaluate|calculate|compute|work out)\s+", re.IGNORECASE)
_BINARY = (ast.Add, ast.Sub, ast.Mult, ast.Div)


def whole_numbers_only(question: str, answer: str, max_digits: int = 4) -> bool:
    """The arithmetic family's domain: no negative number in the question (a minus sign only between spaces, as
    subtraction), a whole-number answer of at most `max_digits` digits."""
    return "-" not in question.replace(" - ", " ") and answer.isdigit() and len(answer) <= max_digits


def expression_of(question: str) -> ast.Expression | None:
    """The arithmetic expression a bare-calculation question asks for, parsed: the generator's operator symbols
    normalised, a leading 'What is (the value of)' / 'Evaluate' / 'Calculate' / 'Compute' / 'Work out' and a closing
    '?' or '.' removed. None where what is left is not made only of whole numbers, brackets, unary signs and + - * /
    (a word problem, a decimal, a power, a name)."""
    text = question.strip()
    for symbol, ascii_symbol in _SYMBOLS.items():
        text = text.replace(symbol, ascii_symbol)
    text = _WORDS.sub("", text).rstrip("?. ")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp):
            if not isinstance(node.op, _BINARY):
                return None
        elif isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, (ast.USub, ast.UAdd)):
                return None
        elif isinstance(node, ast.Constant):
            if type(node.value) is not int:
                return None
        elif not isinstance(node, (ast.Expression, ast.operator, ast.unaryop)):
            return None
    return tree


def operation_count(question: str) -> int | None:
    """How many binary operations (+ - * /) the question's expression has; None where it has no parsable one."""
    tree = expression_of(question)
    return None if tree is None else operations_and_largest(ast.unparse(tree))[0]


def seed_expressions(path: Path = SEEDS) -> set[str]:
    """The seed questions as written, and each one's expression in one spelling (ast.unparse) where it has one
    (its question's or its `checkable`)."""
    keys = set()
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            keys.add(row["question"].strip())
            for text in (row["question"], row.get("checkable") or ""):
                tree = expression_of(text)
                if tree is not None:
                    keys.add(ast.unparse(tree))
    return keys


def hard_question(question: str, answer: str, seeds: set[str]) -> bool:
    """The --hard set's filter: three or more binary operations, larger numbers (one of 3+ digits in the question,
    or a 3+ digit answer), no negative number, a whole-number answer of at most 6 digits that the expression
    evaluates to, neither the question nor its expression among the seeds."""
    if not whole_numbers_only(question, answer, max_digits=6) or question in seeds:
        return False
    tree = expression_of(question)
    if tree is None or ast.unparse(tree) in seeds:
        return False
    operations, largest = operations_and_largest(ast.unparse(tree))
    if operations < 3 or (len(answer) < 3 and largest < 100):
        return False
    try:
        return evaluate(ast.unparse(tree)) == int(answer)
    except ArithmeticRefused:  # a division by zero, or past the evaluator's bounds
        return False


def build(modules: tuple[str, ...], counts: list[int], difficulty: tuple[float, float], keep) -> list[dict]:
    """`counts[i]` distinct questions from module `modules[i]` that `keep(question, answer)` accepts, sampled from the
    `difficulty` share (low, high) of each module's training entropy range, seeded, shuffled."""
    import numpy as np
    from mathematics_dataset.modules import arithmetic

    low_share, high_share = difficulty
    random.seed(SEED)
    np.random.seed(SEED)
    generators = arithmetic.train(lambda low_high: (low_high[0] + low_share * (low_high[1] - low_high[0]),
                                                    low_high[0] + high_share * (low_high[1] - low_high[0])))
    rows, seen = [], set()
    for name, count in zip(modules, counts):
        kept = 0
        while kept < count:
            problem = generators[name]()
            question, answer = str(problem.question).strip(), str(problem.answer).strip()
            if question in seen or not keep(question, answer):
                continue
            seen.add(question)
            kept += 1
            rows.append({"question": question, "answer": answer, "source": f"mathematics_dataset arithmetic__{name}"})
    random.Random(SEED).shuffle(rows)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hard", action="store_true",
                        help="write the harder set (3+ operations, larger numbers) to arithmetic-hard.jsonl")
    parser.add_argument("--per-module", type=int, default=35, help="questions per module (default set)")
    parser.add_argument("--count", type=int, default=HARD_COUNT,
                        help="questions in all, split evenly between the modules (--hard)")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    if args.hard:
        seeds = seed_expressions()
        counts = [args.count // len(HARD_MODULES) + (index < args.count % len(HARD_MODULES))
                  for index in range(len(HARD_MODULES))]
        rows = build(HARD_MODULES, counts, HARD_DIFFICULTY,
                     lambda question, answer: hard_question(question, answer, seeds))
        output = args.output or HARD_OUTPUT
    else:
        rows = build(MODULES, [args.per_module] * len(MODULES), DIFFICULTY, whole_numbers_only)
        output = args.output or DEFAULT_OUTPUT
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"wrote {len(rows)} questions to {output}")


if __name__ == "__main__":
    main()
