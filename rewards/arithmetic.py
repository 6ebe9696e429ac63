"""A safe evaluator for arithmetic expressions written by the model: the ground truth of a grounded question.

Model text is never executed. It is parsed into Python's syntax tree only after cheap checks on its length and
nesting, and every node must be on an allow-list: integer or decimal literals, + - * / // % and ** with small
exponents, unary minus and plus, parentheses. Names, calls, attributes, subscripts, comparisons and everything
else are refused. Arithmetic is exact (fractions), and every intermediate value is bounded, so an evaluation costs
at most a few microseconds per node; a deadline backs that up. Refusals raise `ArithmeticRefused` with one line.
"""

from __future__ import annotations

import ast
import operator
import time
from fractions import Fraction

MAX_CHARS = 200  # longer text is refused before parsing
MAX_PARENTHESES = 12  # nesting depth, checked on the text before parsing
MAX_DEPTH = 32  # depth of the syntax tree (a sum of n terms is n deep)
MAX_NODES = 64
MAX_MAGNITUDE = 10**12  # literals, intermediate values and the result
MAX_EXPONENT = 12
MAX_DENOMINATOR = 10**6
DEADLINE_S = 0.05  # of this thread's CPU time: a busy machine that deschedules it does not refuse a sum

BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
          ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}
ALLOWED_TEXT = set("0123456789+-*/%(). \t")


class ArithmeticRefused(ValueError):
    """An expression that is not allowed, too large, or not computable (division by zero); one line."""


def evaluate(text: str) -> Fraction:
    """The exact value of `text`; raises ArithmeticRefused."""
    if len(text) > MAX_CHARS:
        raise ArithmeticRefused(f"expression longer than {MAX_CHARS} characters")
    if not text.strip():
        raise ArithmeticRefused("empty expression")
    unknown = next((character for character in text if character not in ALLOWED_TEXT), None)
    if unknown is not None:
        raise ArithmeticRefused(f"character {unknown!r} is not arithmetic")
    depth = deepest = 0
    for character in text:
        depth += (character == "(") - (character == ")")
        deepest = max(deepest, depth)
    if deepest > MAX_PARENTHESES:
        raise ArithmeticRefused(f"parentheses nested deeper than {MAX_PARENTHESES}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise ArithmeticRefused("not a well-formed expression") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ArithmeticRefused(f"more than {MAX_NODES} syntax nodes")
    return _value(tree.body, depth=0, deadline=time.thread_time() + DEADLINE_S)


def _bounded(value: Fraction) -> Fraction:
    if abs(value) > MAX_MAGNITUDE:
        raise ArithmeticRefused(f"a value beyond {MAX_MAGNITUDE:.0e}")
    if value.denominator > MAX_DENOMINATOR:
        raise ArithmeticRefused("a fraction with a denominator beyond 10^6")
    return value


def _value(node: ast.AST, depth: int, deadline: float) -> Fraction:
    if depth > MAX_DEPTH:
        raise ArithmeticRefused(f"expression nested deeper than {MAX_DEPTH}")
    if time.thread_time() > deadline:
        raise ArithmeticRefused("evaluation took too long")
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        literal = Fraction(node.value) if isinstance(node.value, int) else Fraction(repr(node.value))
        return _bounded(literal)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        operand = _value(node.operand, depth + 1, deadline)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        base, exponent = _value(node.left, depth + 1, deadline), _value(node.right, depth + 1, deadline)
        if exponent.denominator != 1 or not 0 <= exponent <= MAX_EXPONENT:
            raise ArithmeticRefused(f"exponents must be whole numbers from 0 to {MAX_EXPONENT}")
        if base != 0 and abs(base.numerator) ** int(exponent) > MAX_MAGNITUDE * base.denominator ** int(exponent):
            raise ArithmeticRefused(f"a value beyond {MAX_MAGNITUDE:.0e}")
        return _bounded(base ** int(exponent))
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        left, right = _value(node.left, depth + 1, deadline), _value(node.right, depth + 1, deadline)
        if right == 0 and isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)):
            raise ArithmeticRefused("division by zero")
        return _bounded(Fraction(BINARY[type(node.op)](left, right)))
    raise ArithmeticRefused(f"{type(node).__name__} is not allowed in arithmetic")


def as_answer(value: Fraction) -> str:
    """The value as a reference answer: an integer, or a decimal when it terminates within 6 places, else a/b."""
    if value.denominator == 1:
        return str(value.numerator)
    scaled = value * 10**6
    if scaled.denominator == 1:
        whole = f"{abs(scaled.numerator) // 10**6}.{abs(scaled.numerator) % 10**6:06d}".rstrip("0")
        return ("-" if value < 0 else "") + whole
    return f"{value.numerator}/{value.denominator}"
