"""Evaluate the base model, a PEFT adapter or a run checkpoint on held-out questions with reference answers.

    python launch/eval.py --config configs/tiny-cpu.yaml --data gsm8k-test.jsonl [--limit 200] [key=value ...]
    python launch/eval.py --config runs/RUN/config.yaml --data gsm8k-test.jsonl --adapter runs/RUN
    python launch/eval.py --config configs/tiny-cpu.yaml --data gsm8k-test.jsonl --adapter exported/adapter-v3

One greedy answer per question from an in-process vLLM engine, graded with math-verify (selfplay/evaluation.py).
Per-example rows go to a JSONL file (--output; default next to the adapter, or `<run.output_dir>/eval-<time>.jsonl`)
and the last line of stdout is one JSON object: accuracy, n, correct, format_failures, ci95 (Wilson, 95 %), ...

--adapter takes a PEFT adapter directory (adapter_config.json), a run checkpoint (RUN_DIR/checkpoints/iter-N, whose
learner/ is a DeepSpeed checkpoint) or a run directory (its checkpoints/latest); a run with one adapter per role
(learner.adapters per_role) needs --role to pick one (usually solver). The adapter is merged into the
base model (config's model.path and learner.lora; a run's own config.yaml is checked to agree) in a temporary
directory that the engine then serves. Config, data and adapter problems exit with status 2 and one line.
Leaves out batching several checkpoints and sampling-based (pass@k) metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import _bootstrap  # noqa: F401

from selfplay.console import quiet_libraries  # noqa: E402

os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # keep stdout for the result line
quiet_libraries()

from rewards.grading_pool import GradingPool  # noqa: E402
from selfplay.adapters import (LEARNER_STATES, ROLES, AdapterError, check_run_lora,  # noqa: E402
                               read_learner_checkpoint, resolve_adapter, run_dir_of)
from selfplay.config import Config, ConfigError  # noqa: E402
from selfplay.embedded_model import resolve_model_path  # noqa: E402
from selfplay.evaluation import (EvalDataError, EvalResult, evaluate, load_eval_questions, paired_rows,  # noqa: E402
                                 summarize)
from selfplay.preflight import PreflightError, check_model_path, load_run_config  # noqa: E402
from selfplay.question_pool import PoolQuestion, SeedFileError  # noqa: E402


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Greedy held-out evaluation graded with math-verify")
    parser.add_argument("--config", required=True, help="YAML run config (a run's own RUN_DIR/config.yaml works)")
    parser.add_argument("--data", help="JSONL with question and answer (GSM8K '#### N' or plain); default eval.data")
    parser.add_argument("--adapter", help="PEFT adapter dir, run checkpoint RUN_DIR/checkpoints/iter-N, or RUN_DIR")
    parser.add_argument("--role", choices=ROLES, help="the role whose adapter to evaluate, in a run with one per role")
    parser.add_argument("--limit", type=positive_int, help=(
        "first N questions (default: the whole --data file; eval.limit when the file comes from eval.data)"))
    parser.add_argument("--output", help="per-example JSONL (default next to the adapter, or in run.output_dir)")
    parser.add_argument("--baseline", help=(
        "another evaluation's per-example JSONL of the same questions: adds the paired accuracy difference "
        "(95 %% interval, exact McNemar p), strict and lenient"))
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. eval.max_tokens=512 model.path=...")
    return parser.parse_args(argv)


def default_output(config: Config, adapter: Path | None) -> Path:
    stamp = f"{datetime.now():%Y%m%d-%H%M%S}"
    if adapter is None:
        return Path(config.run.output_dir) / f"eval-{stamp}.jsonl"
    if adapter.name == LEARNER_STATES.name:  # a run checkpoint: into its run directory
        return run_dir_of(adapter) / f"eval-{adapter.parents[2].name}-{stamp}.jsonl"
    return adapter.parent / f"eval-{adapter.name}-{stamp}.jsonl"


# -- merging the adapter into the base model -------------------------------------------------------------------------
def load_lora_tensors(model, tensors: dict[str, Any], source: Path) -> None:
    """Copy checkpoint LoRA tensors into a PEFT model built from the config, after checking names and shapes."""
    expected = {name: tuple(parameter.shape) for name, parameter in model.named_parameters() if ".lora_" in name}
    missing, unexpected = sorted(expected.keys() - tensors.keys()), sorted(tensors.keys() - expected.keys())
    if missing or unexpected:
        example = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise AdapterError(f"{source}: LoRA modules do not match learner.lora.target_modules of the config "
                           f"({example})")
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise AdapterError(f"{source}: {name} has shape {tuple(tensors[name].shape)}, learner.lora of the "
                               f"config expects {shape} (another rank?)")
    model.load_state_dict(tensors, strict=False)


def merge_adapter(config: Config, base_path: str, adapter: Path, target: Path) -> Path:
    """Write base + adapter as one model directory (weights, config, tokenizer) that vLLM can serve.

    A run checkpoint is merged the way its learner exported weights for the engines (same compute dtype, then
    cast to the engine dtype), so the result is bit-identical to what the run served; a PEFT adapter is merged in
    float32, then cast to the engine dtype.
    """
    import torch
    from peft import PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from learner.export import export_merged, peft_lora_config
    from rollout.config import resolve_engine_dtype

    if adapter.name == LEARNER_STATES.name:
        check_run_lora(adapter, config.learner.lora)
        tensors, compute_dtype = read_learner_checkpoint(adapter)
        base = AutoModelForCausalLM.from_pretrained(base_path, dtype=compute_dtype)
        model = get_peft_model(base, peft_lora_config(config.learner.lora))
        load_lora_tensors(model, tensors, adapter)
    else:
        compute_dtype = torch.float32
        base = AutoModelForCausalLM.from_pretrained(base_path, dtype=compute_dtype)
        model = PeftModel.from_pretrained(base, str(adapter))
    model.to(compute_dtype)  # PEFT may upcast adapter weights; the learner's DeepSpeed module does not
    export_merged(model, target, getattr(torch, resolve_engine_dtype(config.rollout, config.model.dtype)))
    AutoTokenizer.from_pretrained(base_path).save_pretrained(target)
    if base.generation_config is not None:
        base.generation_config.save_pretrained(target)
    return target


# -- the run ---------------------------------------------------------------------------------------------------------
def generate_and_grade(config: Config, model_path: str, questions: list[PoolQuestion]) -> list[EvalResult]:
    from learner.weights import SyncMode
    from rollout.config import engine_spec_from_config, resolve_engine_dtype
    from rollout.engine import Engine
    from rollout.host import bind_cpu_share

    engine_dtype = resolve_engine_dtype(config.rollout, config.model.dtype)
    spec = engine_spec_from_config(model_path, engine_dtype, config.model.max_model_len, config.rollout,
                                   SyncMode.MERGED, config.learner.lora.rank, config.run.seed)
    bind_cpu_share(0, 1)  # the engine takes every core (vLLM's default reserves one for its scheduler)
    engine = Engine(spec)
    try:
        with GradingPool(config.rewards.grading_workers, config.rewards.grading_timeout_s) as grader:
            return evaluate(engine, questions, config.eval.max_tokens, grader)
    finally:  # without it the process hangs at exit, waiting on vLLM's engine-core process
        engine.shutdown()


def load_inputs(args: argparse.Namespace) -> tuple[Config, Path, list[PoolQuestion], int, Path | None]:
    """Config, data path, questions and resolved adapter; raises the one-line errors main() reports. A file named
    with --data is evaluated whole unless --limit says otherwise; eval.data keeps the config's eval.limit."""
    config = load_run_config(args.config, args.overrides, resume_dir=None)
    check_model_path(config.model.path)
    data = args.data or config.eval.data
    if data is None:
        raise EvalDataError("no data: pass --data FILE.jsonl or set eval.data in the config")
    if not Path(data).is_file():
        raise EvalDataError(f"{data}: file not found")
    questions = load_eval_questions(data)
    limit = args.limit or (None if args.data else config.eval.limit)
    adapter = resolve_adapter(Path(args.adapter), args.role) if args.adapter else None
    return config, Path(data), questions if limit is None else questions[:limit], len(questions), adapter


def read_baseline(path: Path, question_ids: list[str]) -> dict[str, dict[str, Any]]:
    """A previous evaluation's rows by question id; every question evaluated now must be among them."""
    try:
        rows = {row["id"]: row for row in map(json.loads, path.read_text().splitlines()) if row}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise EvalDataError(f"--baseline {path}: not an evaluation's rows ({brief(error)})") from None
    missing = [question_id for question_id in question_ids if question_id not in rows]
    if missing:
        raise EvalDataError(f"--baseline {path}: {len(missing)} of the {len(question_ids)} questions are not in it "
                            f"(first: {missing[0]}); compare evaluations of the same file")
    return rows


def baseline_comparison(results: list[EvalResult], baseline_path: Path,
                        rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Strict and lenient paired comparisons against a previous evaluation's rows, matched by question id."""
    return {"baseline": str(baseline_path)} | paired_rows([result.to_row() for result in results], rows)


def brief(error: Exception) -> str:
    """One line from a library's multi-line message (torch's state-dict errors say what broke on line 2)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {' '.join(lines[:2])[:400]}"


def fail(kind: str, error: Exception | str) -> int:
    print(f"{kind} error: {error}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config, data, questions, in_file, adapter = load_inputs(args)
        baseline = read_baseline(Path(args.baseline), [q.id for q in questions]) if args.baseline else {}
    except (ConfigError, PreflightError) as error:
        return fail("config", error)
    except (SeedFileError, EvalDataError) as error:
        return fail("data", error)
    except AdapterError as error:
        return fail("adapter", error)
    limited_by = " (--limit)" if args.limit else " (eval.limit)" if len(questions) < in_file else ""
    print(f"eval: {in_file} questions in {data}, evaluating {len(questions)}{limited_by}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    output = Path(args.output) if args.output else default_output(config, adapter)
    output.parent.mkdir(parents=True, exist_ok=True)
    base_path = resolve_model_path(config.model.path, config.model.cache_dir)
    with tempfile.TemporaryDirectory(prefix="selfplay-eval-") as scratch:
        model_path = base_path
        if adapter is not None:
            try:
                model_path = str(merge_adapter(config, base_path, adapter, Path(scratch) / "merged"))
            except AdapterError as error:
                return fail("adapter", error)
            except (ValueError, RuntimeError) as error:  # PEFT: no target modules; torch: tensor shapes differ
                return fail("adapter", f"{adapter}: {brief(error)}")
        results = generate_and_grade(config, model_path, questions)
    output.write_text("".join(json.dumps(result.to_row()) + "\n" for result in results))
    paired = {"vs_baseline": baseline_comparison(results, Path(args.baseline), baseline)} if args.baseline else {}
    summary = summarize(results) | {"data": str(data), "questions_in_file": in_file, "model": config.model.path,
                                    "adapter": str(adapter) if adapter else None, "output": str(output),
                                    "max_tokens": config.eval.max_tokens, "seconds": time.perf_counter() - started}
    summary |= paired
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":  # vLLM spawns worker processes that re-import this file
    from rollout.exit_cleanup import no_orphans

    with no_orphans():
        sys.exit(main())
