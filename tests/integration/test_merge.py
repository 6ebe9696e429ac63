"""launch/merge.py on real run checkpoints of a DeepSpeed learner: a self-merge gives the checkpoint back, a merge
of two checkpoints is a standard PEFT adapter that launch/eval.py serves through vLLM, bad requests are one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=os.environ | {"RAY_ADDRESS": ""})


@pytest.fixture(scope="module")
def run_with_two_checkpoints(tiny_model_dir, tmp_path_factory):
    """A run directory holding checkpoints of iterations 1 and 2, one real GRPO step apart."""
    from learner.config import LearnerConfig
    from learner.records import TrainBatch, TrainSample
    from learner.trainer import Learner, LearnerSetup, plan_step
    from selfplay.checkpoint import save_checkpoint
    from selfplay.config import config_to_yaml, load_config

    config = load_config(None, [f"model.path={tiny_model_dir}", "learner.lora.rank=4", "learner.lora.alpha=8"])
    learner = Learner(LearnerConfig(lr=1e-2, lora=config.learner.lora),
                      LearnerSetup(model_path=str(tiny_model_dir), dtype="float32"))
    run_dir = tmp_path_factory.mktemp("merge") / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(config_to_yaml(config))
    prompt = (1, 17, 300, 42)
    for iteration, response in ((1, (500, 501, 502)), (2, (600, 601))):
        logprobs = tuple(learner.sequence_logprobs(list(prompt + response))[len(prompt) - 1:])
        plan, _ = plan_step(TrainBatch((TrainSample(prompt, response, logprobs, 1.0),)), 4096, world_size=1)
        learner.train_step(plan[0], len(response))
        save_checkpoint(run_dir, iteration, learner.save_checkpoint, {"iteration": iteration})
    return run_dir


def _deltas(path: Path):
    from learner.merge import lora_factors
    from selfplay.adapters import read_adapter, resolve_adapter

    adapter = read_adapter(resolve_adapter(path))
    return lora_factors(adapter.tensors, adapter.scaling).deltas()


def test_a_checkpoint_merged_with_itself_comes_back(run_with_two_checkpoints, tmp_path):
    import torch

    checkpoint = run_with_two_checkpoints / "checkpoints" / "iter-000001"
    for method in ("linear", "slerp", "ties"):
        result = _run("launch/merge.py", str(checkpoint), str(checkpoint), "--method", method,
                      "--output", str(tmp_path / method))
        assert result.returncode == 0, result.stderr[-2000:]
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        assert summary["rank"] == 8 and summary["relative_error"] < 1e-5
        merged, original = _deltas(tmp_path / method), _deltas(checkpoint)
        assert merged.keys() == original.keys() and len(merged) == 7 * 2  # 7 target modules, 2 layers
        for name in original:
            torch.testing.assert_close(merged[name], original[name], rtol=1e-4, atol=1e-6)


def test_two_checkpoints_merge_into_an_adapter_that_eval_serves(run_with_two_checkpoints, tiny_model_dir, tmp_path):
    import torch

    result = _run("launch/merge.py", str(run_with_two_checkpoints), "--iterations", "1,2", "--method", "linear",
                  "--weights", "1,3", "--output", str(tmp_path / "merged"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert {"adapter_config.json", "adapter_model.safetensors", "merge.json"} <= {
        path.name for path in (tmp_path / "merged").iterdir()}
    first, second = (_deltas(run_with_two_checkpoints / "checkpoints" / f"iter-00000{i}") for i in (1, 2))
    merged = _deltas(tmp_path / "merged")
    for name in first:
        torch.testing.assert_close(merged[name], 0.25 * first[name] + 0.75 * second[name], rtol=1e-4, atol=1e-6)

    evaluated = _run("launch/eval.py", "--config", "configs/tiny-cpu.yaml", "--data", "configs/seeds/tiny-math.jsonl",
                     "--limit", "2", "--adapter", str(tmp_path / "merged"), "--output", str(tmp_path / "rows.jsonl"),
                     f"model.path={tiny_model_dir}", "model.max_model_len=512", "rollout.kv_cache_gb=0.25",
                     "eval.max_tokens=8", timeout=900)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads(evaluated.stdout.strip().splitlines()[-1])["n"] == 2


def test_bad_merge_requests_are_one_line(run_with_two_checkpoints, tmp_path):
    result = _run("launch/merge.py", str(run_with_two_checkpoints), "--iterations", "1,7", "--output",
                  str(tmp_path / "never"))
    assert (result.returncode, result.stderr.strip()) == (
        2, f"merge: {run_with_two_checkpoints}: no checkpoint of iteration 7 (kept: iter-000001, iter-000002; "
           "run.keep_checkpoints sets how many)")
    result = _run("launch/merge.py", str(run_with_two_checkpoints), "--iterations", "1,2", "--method", "slerp",
                  "--weights", "1,2,3", "--output", str(tmp_path / "never"))
    assert (result.returncode, result.stderr.strip()) == (2, "merge: 3 weights for 2 adapters")
    assert not (tmp_path / "never").exists()
