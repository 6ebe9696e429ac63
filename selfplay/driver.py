"""The driver of a run: connect to Ray, start engines, learner and role actors, loop over iterations, log,
checkpoint, and resume from a run directory.

Only this module (and `launch/`) wires Ray, vLLM, DeepSpeed and W&B together; the iteration itself lives in
`selfplay.iteration`, scoring in `selfplay.scoring`.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import ray

from agents.players import Judge, Proposer, Solver
from rewards.grading_pool import GradingPool
from rewards.rubric import RubricError, load_rubric, reload_if_changed
from rollout.probe import SyncProbe
from selfplay.checkpoint import latest_checkpoint, load_state, save_checkpoint
from selfplay.config import Config, config_to_yaml
from selfplay.embedded_model import resolve_model_path
from selfplay.evaluation import eval_metrics, evaluate, load_eval_questions, summarize
from selfplay.iteration import Components, IterationResult, RunState, run_iteration, sync_weights
from selfplay.pool import QuestionPool, load_seed_file
from selfplay.preflight import RESOLVED_CONFIG, ray_job_runtime_env
from selfplay.samples import COLUMNS, exchanges, table_rows

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PROBE_MESSAGES = [{"role": "user", "content": "What is 12 + 30? Put the answer in <answer></answer> tags."}]
PROBE_RESPONSE = "12 + 30 = 42, so the answer is <answer>42</answer>."
ROLE_ACTOR_OPTIONS = {"num_cpus": 0, "max_concurrency": 16, "max_restarts": 3, "max_task_retries": 3}


def log(message: str) -> None:
    print(f"[selfplay {datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


@dataclass
class Run:
    config: Config
    run_dir: Path
    components: Components
    state: RunState
    tracker: Any
    engine_pools: list[Any]


def new_run_dir(config: Config) -> Path:
    run_dir = Path(config.run.output_dir) / f"{config.run.name}-{datetime.now():%Y%m%d-%H%M%S}"
    run_dir.mkdir(parents=True, exist_ok=False)
    (run_dir / RESOLVED_CONFIG).write_text(config_to_yaml(config))
    return run_dir


def actor_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """The runtime env for the run's actors: logs a user can act on (errors, not the libraries' start-up warnings
    and progress bars, repeated by every actor), no tokenizer threads.

    A variable the user already set (in the driver's environment, or in the job's runtime env, which Ray merges
    with this one and refuses a key set in both) stays the user's. Inside a job the job's working directory is
    already on the workers' path."""
    defaults = {"TOKENIZERS_PARALLELISM": "false", "VLLM_LOGGING_LEVEL": "ERROR", "TORCH_CPP_LOG_LEVEL": "ERROR",
                "TORCH_LOGS": "-torch", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "PYTHONWARNINGS": "ignore::FutureWarning"}
    job_runtime_env = ray_job_runtime_env(environ)
    job_variables = (job_runtime_env or {}).get("env_vars") or {}
    chosen = {key: value for key, value in defaults.items() if key not in environ and key not in job_variables}
    return {"env_vars": chosen if job_runtime_env is not None else chosen | {"PYTHONPATH": str(PROJECT_ROOT)}}


def connect_ray(config: Config) -> None:
    """Inside `ray job submit` (RAY_ADDRESS set) join that cluster; otherwise start a local Ray instance."""
    if ray.is_initialized():
        return
    environment = actor_environment(os.environ)
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], runtime_env=environment, logging_level="WARNING")
        return
    needed = (config.rollout.num_engines * config.rollout.cpus_per_engine * (2 if config.rollout.judge_model else 1)
              + config.learner.num_workers * config.learner.cpus_per_worker)
    ray.init(num_cpus=max(os.cpu_count() or 1, int(needed + 0.999)), include_dashboard=False,
             runtime_env=environment, logging_level="WARNING")


def probe_token_ids(model_path: str) -> list[int]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    prompt = tokenizer.apply_chat_template(PROBE_MESSAGES, add_generation_prompt=True, tokenize=False)
    return tokenizer(prompt + PROBE_RESPONSE, add_special_tokens=False)["input_ids"]


def start_components(config: Config, export_dir: Path) -> tuple[Components, list[Any]]:
    from learner.group import LearnerGroup
    from learner.trainer import LearnerSetup
    from rollout.pool import RemoteEnginePool, engine_spec_from_config, resolve_engine_dtype, resolve_sync_mode

    model_path = resolve_model_path(config.model.path, config.model.cache_dir)
    sync_mode = resolve_sync_mode(config.rollout.sync_mode, uses_gpu=config.rollout.gpus_per_engine > 0)
    engine_dtype = resolve_engine_dtype(config.rollout, config.model.dtype)
    spec = engine_spec_from_config(model_path, engine_dtype, config.model.max_model_len, config.rollout,
                                   sync_mode, config.learner.lora.rank, config.run.seed)
    log(f"starting {config.rollout.num_engines} vLLM engine(s) for {model_path} ({engine_dtype}, "
        f"weight sync: {sync_mode.value})")
    pool = RemoteEnginePool.launch(spec, config.rollout, name="rollout")
    pools, judge_pool = [pool], pool
    if config.rollout.judge_model:
        judge_path = model_path if config.rollout.judge_model == "same" else resolve_model_path(
            config.rollout.judge_model, config.model.cache_dir)
        log(f"starting the frozen judge's engine(s) for {judge_path}")
        judge_spec = engine_spec_from_config(judge_path, engine_dtype, config.model.max_model_len,
                                             config.rollout, sync_mode, config.learner.lora.rank, config.run.seed)
        judge_pool = RemoteEnginePool.launch(judge_spec, config.rollout, name="judge_rollout")
    log(f"starting the learner ({config.learner.num_workers} DeepSpeed rank(s), ZeRO-{config.learner.zero_stage})")
    learner = LearnerGroup(config.learner, LearnerSetup(model_path=model_path, dtype=engine_dtype,
                                                        max_model_len=config.model.max_model_len,
                                                        seed=config.run.seed))
    role_actor = lambda cls: ray.remote(**ROLE_ACTOR_OPTIONS)(cls)  # noqa: E731
    grader = GradingPool(config.rewards.grading_workers, config.rewards.grading_timeout_s)
    components = Components(
        proposer=role_actor(Proposer).remote(pool), solver=role_actor(Solver).remote(pool),
        judge=role_actor(Judge).remote(judge_pool), learner=learner, grader=grader, pools=pools,
        sync_mode=sync_mode, export_dir=export_dir, probe=SyncProbe(tuple(probe_token_ids(model_path)), ()))
    components.probe = calibrate_probe(config, components)
    engine_pools = pools + ([judge_pool] if judge_pool is not pool else [])
    return components, engine_pools


def calibrate_probe(config: Config, components: Components) -> SyncProbe:
    """The probe's noise: learner and engines hold the same weights at start-up (adapter still zero), so their
    difference is pure kernel and precision difference (a mean 0.00002 for SmolLM2-135M in float32 on CPU, 0.06 in
    bf16 on CPU). The gap tolerance is the configured one or twice that mean, whichever is larger; the noise norm
    sets how large an update must be before the sync check tells it from the version before (rollout.probe)."""
    token_ids = components.probe.token_ids
    probe = SyncProbe(token_ids, tuple(components.learner.probe_logprobs(list(token_ids))))
    readings = [reading for pool in components.pools for reading in pool.read_probe(probe)]
    floor, noise = max(r.gap for r in readings), max(r.distance for r in readings)
    tolerance = max(config.rollout.sync_tolerance, 2 * floor)
    log(f"weight-sync probe: noise with identical weights {floor:.2g} mean, {noise:.2g} norm; gap tolerance "
        f"{tolerance:.4f}")
    return SyncProbe(token_ids, probe.expected, (), tolerance, noise)


def initial_state(config: Config) -> RunState:
    pool = QuestionPool(capacity=config.pool.capacity, duplicate_threshold=config.pool.duplicate_threshold,
                        solved_threshold=config.pool.solved_threshold,
                        solved_min_attempts=config.pool.solved_min_attempts, replay_ratio=config.pool.replay_ratio,
                        seed=config.run.seed)
    for question in load_seed_file(config.pool.seed_file):
        pool.add(question)
    return RunState(iteration=1, weight_version=0, pool=pool,
                    rubric=load_rubric(config.judge.rubric, Path(config.judge.rubric_dir)))


def restore_state(config: Config, run_dir: Path, components: Components) -> RunState | None:
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        return None
    saved = load_state(checkpoint)
    components.learner.load_checkpoint(str(checkpoint / "learner"))
    state = RunState(iteration=saved["iteration"] + 1, weight_version=saved["weight_version"],
                     pool=QuestionPool.from_state_dict(saved["pool"]),
                     rubric=load_rubric(config.judge.rubric, Path(config.judge.rubric_dir)))
    sync_weights(config, components, state)  # fresh engines serve the base model: give them the restored weights
    log(f"resumed {run_dir} from {checkpoint.name}: next iteration {state.iteration}, "
        f"weight version {state.weight_version}")
    return state


def summary_paragraph(iteration: int, total: int, metrics: dict[str, float]) -> str:
    def value(key: str, digits: int = 3) -> str:
        return f"{metrics[key]:.{digits}f}" if key in metrics else "n/a"

    return (f"iteration {iteration}/{total} done in {value('time/iteration', 1)} s "
            f"(propose+solve {value('time/wave1_propose_solve', 1)} s, "
            f"judge+solve {value('time/wave2_judge_solve', 1)} s, "
            f"train {value('time/train', 1)} s, sync {value('time/sync', 2)} s). "
            f"Rewards: proposer {value('proposer/reward_mean')}, solver {value('solver/reward_mean')}, "
            f"judge {value('judge/reward_mean')}. Format failures: proposer "
            f"{value('proposer/format_failure_rate', 2)}, solver {value('solver/format_failure_rate', 2)}, "
            f"judge {value('judge/format_failure_rate', 2)}. Pool {value('pool/size', 0)} questions "
            f"(+{value('pool/accepted', 0)}). Generation {value('rollout/tokens_per_second', 0)} tokens/s; "
            f"loss {value('learner/loss', 4)}, weight version {value('sync/version', 0)}, "
            f"probe gap {value('sync/probe_gap', 4)}, position {value('sync/probe_position', 2)}.")


def held_out_eval(config: Config, components: Components, questions: list) -> dict[str, float]:
    """Greedy solver accuracy on the held-out file with the weights just synced (`eval/*`)."""
    started = time.perf_counter()
    summary = summarize(evaluate(components.pools[0], questions, config.eval.max_tokens, components.grader))
    metrics = eval_metrics(summary) | {"time/eval": time.perf_counter() - started}
    log(f"  eval: accuracy {summary['accuracy']:.3f} on {summary['n']} held-out questions "
        f"(95% CI {summary['ci95'][0]:.3f}-{summary['ci95'][1]:.3f})")
    return metrics


def checkpoint_state(state: RunState) -> dict[str, Any]:
    return {"iteration": state.iteration, "weight_version": state.weight_version,
            "pool": state.pool.state_dict(), "rubric": {"name": state.rubric.name, "version": state.rubric.version}}


def refresh_rubric(state: RunState, tracker: Any) -> bool:
    """Re-read the rubric file at the iteration boundary. A broken edit keeps the current rubric (logged)."""
    try:
        refreshed = reload_if_changed(state.rubric)
    except RubricError as error:
        log(f"rubric edit ignored, keeping version {state.rubric.version}: {error}")
        return False
    if refreshed is state.rubric:
        return False
    log(f"rubric {refreshed.name} changed on disk: version {refreshed.version} from iteration {state.iteration}")
    tracker.log_text("judge/rubric", f"# {refreshed.name} {refreshed.version}\n{refreshed.text}", step=state.iteration)
    state.rubric = refreshed
    return True


def run(config: Config, resume_dir: str | None = None) -> Path:
    """Run (or resume) the self-play loop; returns the run directory."""
    from selfplay.plots import write_plots
    from selfplay.tracking import build_tracker

    run_dir = Path(resume_dir) if resume_dir else new_run_dir(config)
    log(f"run directory: {run_dir}")
    connect_ray(config)
    export_root = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    export_dir = Path(tempfile.mkdtemp(prefix="selfplay-weights-", dir=export_root))
    components, engine_pools = start_components(config, export_dir)
    try:
        state = (restore_state(config, run_dir, components) if resume_dir else None) or initial_state(config)
        tracker = build_tracker(run_dir, config.tracking, run_dir.name, config.model_dump(mode="json"))
        log(f"W&B {tracker.wandb_choice.mode}: {tracker.wandb_choice.reason}")
        eval_questions = load_eval_questions(config.eval.data, config.eval.limit) if config.eval.every else []
        if state.iteration <= config.run.iterations:
            tracker.log_text("judge/rubric", f"# {state.rubric.name} {state.rubric.version}\n{state.rubric.text}",
                             step=state.iteration)
        if config.eval.every and state.iteration == 1:
            log("held-out evaluation of the base model (step 0)")
            tracker.log(held_out_eval(config, components, eval_questions), step=0)
        while state.iteration <= config.run.iterations:
            rubric_changed = refresh_rubric(state, tracker)
            log(f"iteration {state.iteration}/{config.run.iterations}: propose, judge, solve")
            result = run_iteration(config, components, state, progress=log)
            if config.eval.every and state.iteration % config.eval.every == 0:
                result.metrics |= held_out_eval(config, components, eval_questions)
            started = time.perf_counter()
            if state.iteration % config.run.checkpoint_every == 0 or state.iteration == config.run.iterations:
                save_checkpoint(run_dir, state.iteration, components.learner.save_checkpoint,
                                checkpoint_state(state))
            result.metrics["time/checkpoint"] = time.perf_counter() - started
            result.metrics["judge/rubric_changed"] = float(rubric_changed)
            tracker.log(result.metrics, step=state.iteration)
            tracker.log_table("samples", COLUMNS, table_rows(exchanges(state.iteration, result.turns, result.scores),
                                                             config.tracking.sample_rows), step=state.iteration)
            log(summary_paragraph(state.iteration, config.run.iterations, result.metrics))
            state.iteration += 1
        summary = tracker.summary()
        tracker.finish()
        plots = write_plots(run_dir) if (run_dir / "metrics.jsonl").is_file() else []
        log(f"plots: {', '.join(str(p) for p in plots) or 'none'}")
        if summary.get("wandb_sync_command"):
            log(f"W&B offline run; upload it later with: {summary['wandb_sync_command']}")
        if summary.get("wandb_url"):
            log(f"W&B run: {summary['wandb_url']}")
    finally:
        for pool in engine_pools:
            pool.shutdown()
        components.learner.shutdown()
        components.grader.close()
    return run_dir
