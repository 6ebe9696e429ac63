"""Checks that run before anything starts: files the config names exist and parse, the model spec is usable.

Each problem is one line naming the key and the file, so `ray job submit` shows it as the job's failure reason.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from selfplay.config import Config, ConfigError, load_config
from selfplay.embedded_model import EMBEDDED_MODELS, EMBEDDED_PREFIX
from selfplay.placement import Demand, Node, PlacementError, PlacementPlan, plan_placement

RESOLVED_CONFIG = "config.yaml"
LOCAL_OUTPUT_DIR = "runs"
RAY_JOB_OUTPUT_DIR = "~/selfplay-runs"
RAY_JOB_CONFIG_VARIABLE = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray's job supervisor for the job's driver


class PreflightError(ValueError):
    """A config value that is well-typed but points at something missing or broken."""


def load_run_config(config_path: str | None, overrides: list[str], resume_dir: str | None,
                    environ: Mapping[str, str] | None = None) -> Config:
    """A new run reads --config (its output directory made absolute); a resumed run reads the config saved in its
    run directory (plus overrides)."""
    if resume_dir is not None:
        saved = Path(resume_dir) / RESOLVED_CONFIG
        if not saved.is_file():
            raise ConfigError(f"--resume {resume_dir}: no {RESOLVED_CONFIG} there (not a run directory)")
        return load_config(saved, overrides)
    return resolve_output_dir(load_config(config_path, overrides), os.environ if environ is None else environ)


def wave_sequences_per_engine(config: Config) -> int:
    """The most sequences one generation wave asks of each engine (an upper bound: unparsed turns are not judged).
    Wave 2 holds the most: the judge scores the new questions, the anchors, every pool answer and every new answer
    while the solver answers the new questions."""
    proposals, answers = config.proposer.batch_size, config.solver.num_answers
    total = proposals + config.judge.anchor_questions + config.solver.batch_size * answers + 2 * proposals * answers
    return -(-total // config.rollout.num_engines)


def resolved_auto_values(config: Config, environ: Mapping[str, str]) -> dict[str, str]:
    """What each `auto` value of `config` resolves to on this machine (the driver's view: CPU actors are assumed
    to run on CPUs like this one), with the reason where there is one."""
    from learner.hardware import fast_dtype
    from rollout.config import (resolve_engine_dtype, resolve_max_num_seqs, resolve_seeded_requests,
                                resolve_sleep_while_training, resolve_sync_mode)
    from selfplay.tracking import choose_wandb_mode

    resolved = {}
    if config.rollout.max_num_seqs == "auto":
        resolved["rollout.max_num_seqs"] = str(resolve_max_num_seqs("auto", wave_sequences_per_engine(config)))
    if config.rollout.seeded_requests == "auto":
        resolved["rollout.seeded_requests"] = ("on" if resolve_seeded_requests("auto", config.rollout.gpus_per_engine > 0)
                                               else "off")
    if config.rollout.sleep_while_training == "auto":
        asleep = resolve_sleep_while_training("auto", config.rollout.gpus_per_engine, config.learner.gpus_per_worker)
        resolved["rollout.sleep_while_training"] = "on" if asleep else "off"
    if config.rollout.dtype == "auto":
        resolved["rollout.dtype"] = resolve_engine_dtype(config.rollout, config.model.dtype)
    if config.rollout.sync_mode == "auto":
        resolved["rollout.sync_mode"] = resolve_sync_mode("auto", config.rollout.gpus_per_engine > 0).value
    if config.learner.compute_dtype == "auto":
        resolved["learner.compute_dtype"] = fast_dtype(config.model.dtype, config.learner.gpus_per_worker > 0)
    if config.tracking.wandb == "auto":
        choice = choose_wandb_mode("auto", environ)
        resolved["tracking.wandb"] = f"{choice.mode} ({choice.reason})"
    return resolved


def ray_job_runtime_env(environ: Mapping[str, str]) -> dict | None:
    """The runtime env of the Ray job this process drives (from the variable Ray's job supervisor sets); None when
    this process is not a job's driver."""
    raw = environ.get(RAY_JOB_CONFIG_VARIABLE)
    if not raw:
        return None
    try:
        return json.loads(raw).get("runtime_env") or {}
    except (json.JSONDecodeError, AttributeError):
        return {}


def in_ray_job_working_copy(environ: Mapping[str, str]) -> bool:
    """Whether this process is the driver of a `ray job submit --working-dir` job: its working directory is then
    Ray's temporary copy of the user's directory, deleted with the job's files."""
    return bool((ray_job_runtime_env(environ) or {}).get("working_dir"))


def resolve_output_dir(config: Config, environ: Mapping[str, str]) -> Config:
    """`config` with `run.output_dir` absolute: the default lands where the user finds it (./runs, or
    ~/selfplay-runs inside a Ray job); a relative path inside a Ray job's temporary copy is refused."""
    output_dir = config.run.output_dir
    in_job = in_ray_job_working_copy(environ)
    if output_dir is None:
        output_dir = RAY_JOB_OUTPUT_DIR if in_job else LOCAL_OUTPUT_DIR
    elif in_job and not Path(output_dir).expanduser().is_absolute():
        raise ConfigError(f"run.output_dir={output_dir}: a relative path inside a `ray job submit` job lands in "
                          f"Ray's temporary copy of the working directory, which Ray deletes; give an absolute "
                          f"path, or leave it unset for {RAY_JOB_OUTPUT_DIR}")
    absolute = Path(output_dir).expanduser().resolve()
    return config.model_copy(update={"run": config.run.model_copy(update={"output_dir": str(absolute)})})


def check_model_path(spec: str) -> None:
    """An embedded model name must exist and a local path must be a directory (hub ids are checked on load)."""
    if spec.startswith(EMBEDDED_PREFIX):
        name = spec.removeprefix(EMBEDDED_PREFIX)
        if name not in EMBEDDED_MODELS:
            raise PreflightError(f"model.path: unknown embedded model {name!r} (known: {', '.join(EMBEDDED_MODELS)})")
    elif spec.startswith((".", "/", "~")) and not Path(spec).expanduser().is_dir():
        raise PreflightError(f"model.path: directory {spec!r} not found")


def trained_roles(config: Config) -> tuple[str, ...]:
    """The roles whose samples train the shared adapter: `run.train_roles`, less a frozen judge
    (`rollout.judge_model`), whose verdicts come from another model."""
    return tuple(role for role in config.run.train_roles if not (role == "judge" and config.rollout.judge_model))


def _check_sampling(config: Config) -> None:
    """Sampling settings that pass validation but break training."""
    for role in trained_roles(config):
        section = getattr(config, role)
        if section.temperature == 0:
            raise PreflightError(f"{role}.temperature: 0 (greedy) cannot train: the learner scales logits by "
                                 f"1/temperature; use a value above 0, e.g. 0.7")
        if section.top_p < 1:
            raise PreflightError(f"{role}.top_p={section.top_p}: the engine's logprobs would be renormalised over "
                                 f"the nucleus and the learner's over the whole vocabulary, biasing the importance "
                                 f"weights; use 1.0 for a role that trains")


def _check_lora_rank(config: Config) -> None:
    from learner.weights import SyncMode
    from rollout.config import resolve_sync_mode
    from rollout.engine import lora_rank_cap

    uses_gpu = config.rollout.gpus_per_engine > 0
    if resolve_sync_mode(config.rollout.sync_mode, uses_gpu=uses_gpu) is SyncMode.ADAPTER:
        try:
            lora_rank_cap(config.learner.lora.rank)
        except ValueError as error:
            raise PreflightError(f"learner.lora.rank: {error}; lower it or use rollout.sync_mode=merged") from None


def resources_needed(config: Config) -> dict[str, float]:
    """The Ray resources the run's actors reserve: engines (twice with a frozen judge's own engines) and learner
    ranks. Role actors reserve none."""
    engine_sets = 2 if config.rollout.judge_model else 1
    engines, workers = config.rollout.num_engines * engine_sets, config.learner.num_workers
    return {"CPU": engines * config.rollout.cpus_per_engine + workers * config.learner.cpus_per_worker,
            "GPU": engines * config.rollout.gpus_per_engine + workers * config.learner.gpus_per_worker}


def check_cluster_resources(needed: dict[str, float], available: dict[str, float]) -> None:
    """One line naming every resource the Ray cluster lacks; actors asking for it would wait forever."""
    short = [f"{amount:g} {name}s (the cluster has {available.get(name, 0.0):g})"
             for name, amount in needed.items() if amount > available.get(name, 0.0) + 1e-9]
    if short:
        raise PreflightError(f"rollout/learner: the run needs {' and '.join(short)}; lower rollout.num_engines, "
                             f"*_per_engine, learner.num_workers or *_per_worker, or add nodes")


def placement_demands(config: Config) -> tuple[Demand, list[Demand]]:
    """What the run reserves, for selfplay.placement: its learner ranks, its engines, a frozen judge's engines."""
    engines = Demand("engine", config.rollout.num_engines, config.rollout.cpus_per_engine,
                     config.rollout.gpus_per_engine)
    return (Demand("learner rank", config.learner.num_workers, config.learner.cpus_per_worker,
                   config.learner.gpus_per_worker),
            [engines] + ([replace(engines, kind="judge engine")] if config.rollout.judge_model else []))


def plan_run_placement(config: Config, nodes: list[Node]) -> PlacementPlan:
    """The run's placement plan on `nodes`, or one line saying what does not fit (PreflightError)."""
    learner, engines = placement_demands(config)
    try:
        return plan_placement(nodes, learner, config.learner.placement, engines)
    except PlacementError as error:
        raise PreflightError(str(error)) from None


def _check_pool_capacity(config: Config, seeds: list) -> None:
    anchored = sum(seed.answer is not None for seed in seeds)
    if anchored >= config.pool.capacity:
        raise PreflightError(f"pool.capacity: {config.pool.capacity} leaves no room beside the seed file's {anchored} "
                             f"seeds with reference answers, which are never evicted; raise it above {anchored}")


def preflight(config: Config) -> None:
    """Raise PreflightError (one line) for the first problem found."""
    from rewards.rubric import RubricError, load_rubric
    from selfplay.evaluation import EvalDataError, load_eval_questions
    from selfplay.question_pool import SeedFileError, load_seed_file

    _check_sampling(config)
    _check_lora_rank(config)
    check_model_path(config.model.path)
    if config.rollout.judge_model not in (None, "same"):
        check_model_path(config.rollout.judge_model)
    try:
        load_rubric(config.judge.rubric, config.judge.rubric_dir)
    except RubricError as error:
        raise PreflightError(f"judge.rubric: {error}") from None
    if config.rollout.weights_path is not None and not Path(config.rollout.weights_path).is_dir():
        raise PreflightError(f"rollout.weights_path: directory {config.rollout.weights_path!r} not found")
    eval_files = [("eval.data" if name == "data" else f"eval.sets.{name}.data", held_out.data, load_eval_questions)
                  for name, held_out in config.eval.named_sets().items()]
    for key, path, loader in [("pool.seed_file", config.pool.seed_file, load_seed_file), *eval_files]:
        if path is None:
            continue
        if not Path(path).is_file():
            raise PreflightError(f"{key}: file {path!r} not found")
        try:
            loaded = loader(path)
        except (SeedFileError, EvalDataError) as error:
            raise PreflightError(f"{key}: {error}") from None
        if key == "pool.seed_file":
            _check_pool_capacity(config, loaded)
