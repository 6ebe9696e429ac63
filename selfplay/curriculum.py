"""How hard the questions are, so a reader can see whether the proposer's questions get harder as the solver
improves: for questions with an arithmetic checkable form, the number of operations and the largest number in it,
over the pool and over this iteration's accepted proposals, and the accepted proposals' solve rate. Pure code.
"""

from __future__ import annotations

import ast
from statistics import fmean

from rewards.arithmetic import MAX_CHARS


def operations_and_largest(expression: str) -> tuple[int, float] | None:
    """(binary operations, largest number) of an arithmetic expression; None when it does not parse."""
    if len(expression) > MAX_CHARS:
        return None
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError):
        return None
    operations = sum(isinstance(node, ast.BinOp) for node in ast.walk(tree))
    numbers = [abs(node.value) for node in ast.walk(tree)
               if isinstance(node, ast.Constant) and type(node.value) in (int, float)]
    return operations, float(max(numbers, default=0))


def _means(prefix: str, expressions: list[str]) -> dict[str, float]:
    measured = [shape for shape in map(operations_and_largest, expressions) if shape is not None]
    if not measured:
        return {}
    return {f"{prefix}_operations_mean": fmean(operations for operations, _ in measured),
            f"{prefix}_largest_number_mean": fmean(largest for _, largest in measured)}


def curriculum_metrics(pool_checkables: list[str | None], accepted_checkables: list[str | None],
                       accepted_solve_rates: list[float | None]) -> dict[str, float]:
    """`curriculum/pool_*` over the pool's questions with a checkable form, `curriculum/accepted_*` over the
    proposals accepted this iteration (and their mean solve rate); a key is left out where nothing was measured."""
    metrics = _means("curriculum/pool", [text for text in pool_checkables if text])
    metrics |= _means("curriculum/accepted", [text for text in accepted_checkables if text])
    rates = [rate for rate in accepted_solve_rates if rate is not None]
    if rates:
        metrics["curriculum/accepted_solve_rate_mean"] = fmean(rates)
    return metrics
