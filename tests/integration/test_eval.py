"""launch/eval.py end to end with the tiny model (vLLM in-process), its one-line data errors, and the adapter merge
it serves: a run checkpoint merges to exactly the weights the learner itself exported for the engines."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SUMMARY_KEYS = {"accuracy", "n", "correct", "format_failures", "ci95", "failures"}


def _eval(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "launch/eval.py"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=os.environ | {"RAY_ADDRESS": ""})


def _launch_eval_module():
    """launch/eval.py as a module (it imports `_bootstrap` from its own directory, as scripts there do)."""
    sys.path.insert(0, str(ROOT / "launch"))
    spec = importlib.util.spec_from_file_location("launch_eval", ROOT / "launch/eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_eval_prints_summary_last_and_writes_rows(tiny_model_dir, tmp_path):
    output = tmp_path / "rows.jsonl"
    result = _eval("--config", "configs/tiny-cpu.yaml", "--data", "configs/seeds/tiny-math.jsonl", "--limit", "4",
                   "--output", str(output), f"model.path={tiny_model_dir}", "model.max_model_len=512",
                   "rollout.kv_cache_gb=0.25", "eval.max_tokens=12")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert SUMMARY_KEYS <= summary.keys()
    assert summary["n"] == 4 and summary["questions_in_file"] == 43
    assert "eval: 43 questions in configs/seeds/tiny-math.jsonl, evaluating 4 (--limit)" in result.stderr
    library_lines = [line for line in result.stderr.splitlines() if " INFO " in line or "Loading weights" in line]
    assert library_lines == [], library_lines[:5]  # vLLM's start-up info and progress bars stay out of the log
    assert "Traceback" not in result.stderr and "resource_tracker" not in result.stderr, result.stderr[-3000:]
    assert 0.0 <= summary["ci95"][0] <= summary["accuracy"] <= summary["ci95"][1] <= 1.0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == 4
    assert [row["id"] for row in rows] == [f"seed:tiny-math:{line}" for line in (1, 2, 3, 4)]
    assert rows[0]["reference"] == "18"
    assert all(0 < row["response_tokens"] <= 12 for row in rows)
    assert sum(row["correct"] for row in rows) == summary["correct"]
    assert sum(row["failure"] is not None for row in rows) == summary["format_failures"]


def test_a_data_file_is_evaluated_whole_unless_limited():
    module = _launch_eval_module()
    whole = module.load_inputs(module.parse_args(["--config", "configs/tiny-cpu.yaml", "--data",
                                                  "configs/seeds/tiny-math.jsonl"]))
    assert (len(whole[2]), whole[3]) == (43, 43)  # not eval.limit (64 by default; 2 below)
    limited = module.load_inputs(module.parse_args(["--config", "configs/tiny-cpu.yaml", "--data",
                                                    "configs/seeds/tiny-math.jsonl", "--limit", "5"]))
    assert (len(limited[2]), limited[3]) == (5, 43)
    from_config = module.load_inputs(module.parse_args(["--config", "configs/tiny-cpu.yaml",
                                                        "eval.data=configs/seeds/tiny-math.jsonl", "eval.limit=2"]))
    assert (len(from_config[2]), from_config[3]) == (2, 43)


def test_a_baseline_pairs_by_question_id_and_a_foreign_one_exits_2(tmp_path):
    from selfplay.evaluation import EvalExample, EvalResult

    module = _launch_eval_module()
    examples = [EvalExample(f"seed:tiny-math:{line}", "q", "1") for line in (1, 2, 3)]
    now = [EvalResult(example, "", "1", None, correct, 1, "stop", lenient)
           for example, correct, lenient in zip(examples, (True, True, False), (True, True, True))]
    baseline = tmp_path / "before.jsonl"
    baseline.write_text("".join(json.dumps({"id": f"seed:tiny-math:{line}", "correct": correct}) + "\n"
                                for line, correct in ((3, True), (1, False), (2, True), (9, False))))
    rows = module.read_baseline(baseline, [example.id for example in examples])
    paired = module.baseline_comparison(now, baseline, rows)
    assert (paired["strict"]["gained"], paired["strict"]["lost"], paired["strict"]["difference"]) == (1, 1, 0.0)
    assert paired["lenient"]["gained"] == 3  # the baseline file has no lenient grades: read as wrong
    result = _eval("--config", "configs/tiny-cpu.yaml", "--data", "configs/seeds/tiny-math.jsonl", "--baseline",
                   str(baseline), timeout=300)
    assert result.returncode == 2 and result.stderr.strip() == (
        f"data error: --baseline {baseline}: 39 of the 43 questions are not in it (first: seed:tiny-math:4); "
        "compare evaluations of the same file")


def test_malformed_data_line_exits_2_with_one_line(tmp_path):
    data = tmp_path / "heldout.jsonl"
    data.write_text('{"question": "What is 2 + 2?", "answer": "4"}\n{"question": "What is 3 + 3?", "answer": \n')
    result = _eval("--config", "configs/tiny-cpu.yaml", "--data", str(data), timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert result.stderr.startswith(f"data error: {data}:2: ")
    assert result.stdout == ""


def test_question_without_answer_and_bad_adapter_exit_2(tmp_path):
    data = tmp_path / "unanswered.jsonl"
    data.write_text('{"question": "What is 2 + 2?"}\n')
    result = _eval("--config", "configs/tiny-cpu.yaml", "--data", str(data), timeout=300)
    assert (result.returncode, result.stderr.strip()) == (2, f"data error: {data}:1: no 'answer' field "
                                                              "(evaluation needs a reference answer on every line)")
    result = _eval("--config", "configs/tiny-cpu.yaml", "--data", "configs/seeds/tiny-math.jsonl",
                   "--adapter", str(tmp_path), timeout=300)
    assert result.returncode == 2 and result.stderr.startswith(f"adapter error: {tmp_path}: neither")


def test_checkpoint_and_adapter_merge_to_the_learners_export(tiny_model_dir, tmp_path):
    """One GRPO step moves the LoRA; the run checkpoint (DeepSpeed module state) merges to exactly the tensors of
    the learner's own merge, and the adapter a sync ships (merged by launch/eval.py, or by an engine's worker from
    the base files) to the same up to bf16 rounding."""
    import torch
    from safetensors.torch import load_file

    from learner.config import LearnerConfig
    from learner.export import export_merged, merged_from_adapter
    from learner.records import TrainBatch, TrainSample
    from learner.trainer import Learner, LearnerSetup, plan_step
    from learner.weights import SyncMode
    from rollout.config import resolve_engine_dtype
    from selfplay.checkpoint import save_checkpoint
    from selfplay.config import config_to_yaml, load_config

    config = load_config(None, [f"model.path={tiny_model_dir}", "learner.lora.rank=4", "learner.lora.alpha=8"])
    engine_dtype = resolve_engine_dtype(config.rollout, config.model.dtype)  # what the driver gives the learner
    learner = Learner(LearnerConfig(lr=1e-2, lora=config.learner.lora),
                      LearnerSetup(model_path=str(tiny_model_dir), dtype=config.model.dtype, export_dtype=engine_dtype))
    prompt, response = (1, 17, 300, 42), (500, 501, 502)
    logprobs = tuple(learner.sequence_logprobs(list(prompt + response))[len(prompt) - 1:])
    plan, _ = plan_step(TrainBatch((TrainSample(prompt, response, logprobs, 1.0),)), 4096, world_size=1)
    learner.train_step(plan[0], len(response))
    assert any(bool(value.abs().sum()) for name, value in learner.lora_parameters().items() if "lora_B" in name)

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(config_to_yaml(config))
    save_checkpoint(run_dir, 1, learner.save_checkpoint, {"iteration": 1})
    reference = load_file(export_merged(learner.model, tmp_path / "learner-merged", getattr(torch, engine_dtype))
                          / "model.safetensors")  # the learner's own merge
    adapter_dir = Path(learner.export(2, SyncMode.MERGED, str(tmp_path / "export")).path)  # what a sync ships
    engine_side = dict(merged_from_adapter(str(tiny_model_dir), str(adapter_dir), getattr(torch, engine_dtype)))
    assert engine_side.keys() == reference.keys()  # what a merged-sync engine's worker serves
    for name in reference:
        torch.testing.assert_close(engine_side[name].float(), reference[name].float(), rtol=2 ** -7, atol=1e-4)

    launch_eval = _launch_eval_module()
    merged = launch_eval.merge_adapter(config, str(tiny_model_dir), launch_eval.resolve_adapter(run_dir),
                                       tmp_path / "from-checkpoint")
    from_checkpoint = load_file(merged / "model.safetensors")
    assert from_checkpoint.keys() == reference.keys()
    different = [name for name in reference if not torch.equal(from_checkpoint[name], reference[name])]
    assert not different, f"the checkpoint merge differs from the learner's export in {different[:3]}"

    # The exported adapter holds engine-dtype LoRA tensors (bf16 or fp32): its merge agrees to bf16 rounding.
    merged = launch_eval.merge_adapter(config, str(tiny_model_dir), launch_eval.resolve_adapter(adapter_dir),
                                       tmp_path / "from-adapter")
    from_adapter = load_file(merged / "model.safetensors")
    for name in reference:
        torch.testing.assert_close(from_adapter[name].float(), reference[name].float(), rtol=2 ** -7, atol=1e-4)
    base = load_file(tiny_model_dir / "model.safetensors")
    assert not torch.equal(from_adapter["model.layers.0.self_attn.q_proj.weight"],
                           base["model.layers.0.self_attn.q_proj.weight"])
    assert (merged / "tokenizer.json").is_file() and (merged / "config.json").is_file()

    mismatched = load_config(None, [f"model.path={tiny_model_dir}", "learner.lora.rank=4", "learner.lora.alpha=16"])
    with pytest.raises(launch_eval.AdapterError, match="learner.lora of the config differs from the run's"):
        launch_eval.merge_adapter(mismatched, str(tiny_model_dir), launch_eval.resolve_adapter(run_dir),
                                  tmp_path / "never")
