"""Package boundaries (DESIGN.md): components never import the coordinator, and the iteration never imports Ray."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = ("agents", "rewards", "rollout", "learner")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-local imports included)."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def top_level(module: str) -> str:
    return module.partition(".")[0]


@pytest.mark.parametrize("package", COMPONENTS)
def test_components_do_not_import_the_coordinator(package):
    offenders = {f"{path.relative_to(ROOT)}: {module}" for path in (ROOT / package).rglob("*.py")
                 for module in imported_modules(path) if top_level(module) in ("selfplay", "launch", "bench")}
    assert not offenders


def test_the_learner_does_not_depend_on_the_rollout():
    """The learner produces the weight records; the rollout consumes them (learner.weights), not the reverse."""
    offenders = {f"{path.relative_to(ROOT)}: {module}" for path in (ROOT / "learner").rglob("*.py")
                 for module in imported_modules(path) if top_level(module) in ("rollout", "agents")}
    assert not offenders


@pytest.mark.parametrize("module", ["selfplay/iteration.py", "selfplay/scoring.py", "selfplay/components.py"])
def test_the_loop_speaks_to_protocols_not_ray(module):
    assert not {name for name in imported_modules(ROOT / module) if top_level(name) in ("ray", "vllm", "deepspeed")}


def test_the_checker_sees_function_local_imports(tmp_path):
    source = tmp_path / "example.py"
    source.write_text("import os\n\ndef f():\n    from selfplay.config import Config\n    import ray.util\n")
    assert imported_modules(source) == {"os", "selfplay.config", "ray.util"}
