"""learner.adapters per_role end to end, with real vLLM and DeepSpeed on the tiny model: the SFT cold start and an
iteration train each role's adapter on its own samples, the engine serves each role its adapter and verifies
each on its own probe, a checkpoint holds one DeepSpeed checkpoint per adapter, a resumed run continues from them,
and launch/eval.py evaluates the solver's adapter (--role solver) and asks for a role where none is given."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.integration.test_selfplay import ROOT, _evolve, _finish, _metrics, _overrides

pytestmark = pytest.mark.integration
ROLES = ("proposer", "solver", "judge")


def test_one_adapter_per_role_trains_syncs_checkpoints_resumes_and_evaluates(tiny_model_dir, tmp_path):
    output_dir = tmp_path / "runs"
    per_role = ["learner.adapters=per_role", "rollout.sync_mode=adapter", "model.dtype=float32",
                "sft.steps=2", "sft.batch_size=4", "tracking.wandb=disabled"]
    # float32: in bf16 two SFT steps of the tiny model sit inside the engines' noise (test_cluster.py)
    first = _evolve(tmp_path / "first.log", "--config", "configs/tiny-cpu.yaml",
                    *_overrides(tiny_model_dir, output_dir, iterations=1), *per_role)
    output = _finish(first, tmp_path / "first.log", timeout=900)
    assert first.returncode == 0, output[-4000:]
    run_dir = next(output_dir.iterdir())
    sft = _metrics(run_dir)[0]
    # the SFT cold start trains the solver's and the proposer's adapters (its examples are theirs), not the judge's
    assert sft["sft/probe_separation"] >= 4
    assert sft["sft/probe_separation_judge"] == pytest.approx(0.0, abs=1e-6)
    checkpoint = run_dir / "checkpoints" / "iter-000001" / "learner"
    assert sorted(path.name for path in checkpoint.iterdir() if path.is_dir()) == sorted(
        f"learner-{role}" for role in ROLES)

    resumed = _evolve(tmp_path / "resume.log", "--resume", str(run_dir), "run.iterations=2")
    output = _finish(resumed, tmp_path / "resume.log", timeout=900)
    assert resumed.returncode == 0, output[-4000:]
    assert [row["step"] for row in _metrics(run_dir)] == [1, 2]
    # 1: SFT, 2: iteration 1, 3: the resumed weights synced to the new engine, 4: iteration 2
    assert _metrics(run_dir)[-1]["sync/version"] == 4.0

    held_out = tmp_path / "held-out.jsonl"
    held_out.write_text("".join(json.dumps({"question": f"What is {i} + 2?", "answer": str(i + 2)}) + "\n"
                                for i in range(3)))

    def evaluate(*role: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "launch/eval.py", "--config", str(run_dir / "config.yaml"),
                               "--data", str(held_out), "--adapter", str(run_dir), *role, "eval.max_tokens=8",
                               "tracking.wandb=disabled"], cwd=ROOT, capture_output=True, text=True, timeout=600)

    refused = evaluate()
    assert refused.returncode == 2 and "one adapter per role (proposer, solver, judge): choose one with --role" in (
        refused.stderr)
    solver = evaluate("--role", "solver")
    assert solver.returncode == 0, solver.stderr[-3000:]
    assert json.loads(solver.stdout.strip().splitlines()[-1])["n"] == 3
