"""Ray at the edge: connect to the cluster, start engines, learner, role actors and grader, and hand them to the
iteration as `selfplay.components` Protocols; calibrate the weight-sync probe on them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from agents.parsing import special_markers
from agents.players import Judge, Proposer, Solver
from agents.roles import Role
from learner.config import LearnerConfig
from learner.hardware import alive_nodes, resolve_compute_dtype
from learner.memory import NATIVE_CACHE_LIMITS
from learner.weights import SyncMode, SyncProbe, process_scratch_dir
from rewards.grading_pool import GradingPool
from rollout.exit_cleanup import claim_signals
from rollout.probe import calibrated
from selfplay.components import Components
from selfplay.config import Config
from selfplay.console import QUIET_LIBRARIES, log, quiet_local_ray_start
from selfplay.drift import drift_examples
from selfplay.embedded_model import resolve_model_path
from selfplay.placement import Node, PlacementPlan, cluster_nodes
from selfplay.preflight import (PreflightError, check_cluster_resources, plan_run_placement, ray_job_runtime_env,
                                resources_needed, wave_sequences_per_engine)
from selfplay.sft import tokenized

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PROBE_MESSAGES = [{"role": "user", "content": "What is 12 + 30? Put the answer in <answer></answer> tags."}]
PROBE_RESPONSE = "12 + 30 = 42, so the answer is <answer>42</answer>."
ROLE_ACTOR_OPTIONS = {"num_cpus": 0, "max_concurrency": 16, "max_restarts": 3, "max_task_retries": 3}


class ActorCalls:
    """A Ray actor handle whose method calls return concurrent futures: `calls.solve(...)` runs
    `handle.solve.remote(...)` (the role Protocols of selfplay.components)."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._handle, name)
        return lambda *args: method.remote(*args).future()


@dataclass
class Started:
    """What the wiring started: the iteration's components, the learner group itself (checkpoints, probes), and
    every engine pool (a frozen judge's too) to shut down at the end."""

    components: Components
    learner: Any  # learner.group.LearnerGroup
    engine_pools: list[Any]  # rollout.engine_pool.RemoteEnginePool
    tokenizer: Any  # the base model's, as the engines render prompts

    def shutdown(self) -> None:
        """Engines, learner and grader, then this process's Ray connection (a local Ray instance ends with it)."""
        try:
            for pool in self.engine_pools:
                pool.shutdown()
            self.learner.shutdown()
            self.components.grader.close()
        finally:
            shutil.rmtree(self.components.export_dir, ignore_errors=True)  # where the learner ran here too
            ray.shutdown()


def actor_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """The runtime env for the run's actors: logs a user can act on (errors, not the libraries' start-up warnings
    and progress bars, repeated by every actor), no tokenizer threads, a bounded kernel cache (learner.memory).

    A variable the user already set (in the driver's environment, or in the job's runtime env, which Ray merges
    with this one and refuses a key set in both) stays the user's. Inside a job the job's working directory is
    already on the workers' path."""
    job_runtime_env = ray_job_runtime_env(environ)
    job_variables = (job_runtime_env or {}).get("env_vars") or {}
    chosen = {key: value for key, value in (QUIET_LIBRARIES | NATIVE_CACHE_LIMITS).items()
              if key not in environ and key not in job_variables}
    return {"env_vars": chosen if job_runtime_env is not None else chosen | {"PYTHONPATH": str(PROJECT_ROOT)}}


def local_cpus(config: Config) -> int:
    """The CPUs a local Ray instance declares: the machine's, or what the run reserves where that is more (engines
    and learner take turns on the cores)."""
    return max(os.cpu_count() or 1, int(resources_needed(config)["CPU"] + 0.999))


def dry_run_nodes(config: Config, environ: Mapping[str, str]) -> tuple[list[Node], str]:
    """The nodes a run would be placed on, and where they are: the live nodes of the cluster at RAY_ADDRESS (joined
    for the reading, then left), or this machine as the local Ray instance would declare it."""
    address = environ.get("RAY_ADDRESS")
    if not address:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return [Node("local", "this machine", float(local_cpus(config)), float(gpus))], "this machine"
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    except (ConnectionError, RuntimeError) as error:
        raise PreflightError(f"RAY_ADDRESS={address}: no Ray cluster answers there ({error})") from None
    try:
        return cluster_nodes(alive_nodes()), f"the cluster at {address}"
    finally:
        ray.shutdown()


def connect_ray(config: Config) -> PlacementPlan:
    """Inside `ray job submit` (RAY_ADDRESS set) join that cluster; otherwise start a local Ray instance of its own,
    also where a cluster started with `ray start` runs on this machine (which ray.init would otherwise join).
    Returns the run's placement plan on the cluster's nodes; a cluster that cannot hold it is refused in one line
    (PreflightError), before anything starts."""
    if ray.is_initialized():
        return plan_run_placement(config, cluster_nodes(alive_nodes()))
    environment = actor_environment(os.environ)
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], runtime_env=environment, logging_level="WARNING")
    else:
        quiet_local_ray_start()
        ray.init(address="local", num_cpus=local_cpus(config), include_dashboard=False, runtime_env=environment,
                 logging_level="WARNING")
    claim_signals()  # ray.init replaced the entry point's SIGTERM handler (rollout.exit_cleanup)
    try:
        check_cluster_resources(resources_needed(config), ray.cluster_resources())
        return plan_run_placement(config, cluster_nodes(alive_nodes()))
    except PreflightError:
        ray.shutdown()
        raise


def probe_token_ids(tokenizer: Any) -> list[int]:
    prompt = tokenizer.apply_chat_template(PROBE_MESSAGES, add_generation_prompt=True, tokenize=False)
    return tokenizer(prompt + PROBE_RESPONSE, add_special_tokens=False)["input_ids"]


def export_dir_for(config: Config, run_dir: Path | None = None) -> Path:
    """A new directory for the learner's weight exports, in rollout.weights_path (shared storage) or this node's
    /dev/shm, named after this machine and the run (`run_dir`'s name; without it, run.name). Making it removes what
    this run's earlier processes left there on this machine (after a crash or a kill), and nothing else."""
    owner = run_dir.name if run_dir is not None else config.run.name
    return process_scratch_dir("selfplay-weights-", config.rollout.weights_path, owner=owner)


def learner_adapters(learner: LearnerConfig) -> tuple[str, ...]:
    """The adapters the learner trains (learner.adapters): one shared, or one named after each role."""
    from learner.trainer import SHARED_ADAPTER

    return tuple(role.value for role in Role) if learner.adapters == "per_role" else (SHARED_ADAPTER,)


def start_components(config: Config, export_dir: Path, plan: PlacementPlan) -> Started:
    """Everything the run reserves, where `plan` puts it (engines, a frozen judge's engines, learner ranks)."""
    from transformers import AutoTokenizer

    from learner.group import LearnerGroup
    from learner.trainer import LearnerSetup
    from rollout.config import (engine_spec_from_config, frozen_engine_spec, resolve_engine_dtype,
                                resolve_sleep_while_training, resolve_sync_mode)
    from rollout.engine_pool import RemoteEnginePool

    model_path = resolve_model_path(config.model.path, config.model.cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    sync_mode = resolve_sync_mode(config.rollout.sync_mode, uses_gpu=config.rollout.gpus_per_engine > 0)
    engine_dtype = resolve_engine_dtype(config.rollout, config.model.dtype)
    asleep = resolve_sleep_while_training(config.rollout.sleep_while_training, config.rollout.gpus_per_engine,
                                          config.learner.gpus_per_worker)
    adapters = learner_adapters(config.learner)
    spec = engine_spec_from_config(model_path, engine_dtype, config.model.max_model_len, config.rollout,
                                   sync_mode, config.learner.lora.rank, config.run.seed,
                                   wave_sequences_per_engine(config), sleep_mode=asleep,
                                   adapters_per_version=len(adapters))
    seeds = "a seed per sequence" if spec.seeded_requests else f"engine seed {spec.seed}"
    log(f"starting {config.rollout.num_engines} vLLM engine(s) for {model_path} ({engine_dtype}, "
        f"weight sync: {sync_mode.value}, {seeds}, at most {spec.max_num_seqs} sequences at once"
        + (", asleep while the learner trains" if asleep else "") + ")")
    for line in plan.lines():
        log(f"placement plan: {line}")
    pool = RemoteEnginePool.launch(spec, config.rollout, name="rollout", nodes=plan.nodes_of("engine"))
    markers = special_markers(tokenizer)
    judge_pool, judge_markers = pool, markers
    if config.rollout.judge_model:
        judge_path = model_path if config.rollout.judge_model == "same" else resolve_model_path(
            config.rollout.judge_model, config.model.cache_dir)
        log(f"starting the frozen judge's engine(s) for {judge_path}")
        judge_spec = frozen_engine_spec(engine_spec_from_config(
            judge_path, resolve_engine_dtype(config.rollout, config.model.dtype, synced=False),
            config.model.max_model_len, config.rollout, sync_mode, config.learner.lora.rank,
            config.run.seed, wave_sequences_per_engine(config)))
        judge_pool = RemoteEnginePool.launch(judge_spec, config.rollout, name="judge_rollout",
                                             nodes=plan.nodes_of("judge engine"))
        judge_markers = special_markers(AutoTokenizer.from_pretrained(judge_path))
    log(f"starting the learner ({config.learner.num_workers} DeepSpeed rank(s), ZeRO-{config.learner.zero_stage})")
    several_nodes = len(alive_nodes()) > 1
    learner = LearnerGroup(config.learner, LearnerSetup(model_path=model_path, dtype=config.model.dtype,
                                                        export_dtype=engine_dtype,
                                                        max_model_len=config.model.max_model_len,
                                                        seed=config.run.seed, adapters=adapters),
                           ship_exports=several_nodes and config.rollout.weights_path is None,
                           nodes=plan.nodes_of("learner rank"))
    pools = [pool] if judge_pool is pool else [pool, judge_pool]
    engine_nodes = ray.get([handle.node_id.remote() for each in pools for handle in each.engine_handles()])
    log(f"placement: {config.learner.num_workers} learner rank(s) on {len(set(learner.rank_nodes()))} node(s), "
        f"{len(engine_nodes)} engine(s) on {len(set(engine_nodes))} node(s)"
        + (", weights shipped to other nodes through Ray's object store" if learner.ship_exports else ""))
    def role(cls: type, *arguments: Any) -> ActorCalls:
        return ActorCalls(ray.remote(**ROLE_ACTOR_OPTIONS)(cls).remote(*arguments))

    grader = GradingPool(config.rewards.grading_workers, config.rewards.grading_timeout_s)
    components = Components(
        proposer=role(Proposer, pool, config.task.family, markers), solver=role(Solver, pool, markers),
        judge=role(Judge, judge_pool, judge_markers),
        learner=learner,
        grader=grader, engine_pools=[pool], sync_mode=sync_mode, export_dir=export_dir,
        probe=calibrate_probe(config, learner, [pool], probe_token_ids(tokenizer), sync_mode, export_dir),
        drift_samples=tuple(tokenized(example, tokenizer) for example in drift_examples()),
        sleep_while_training=asleep)
    return Started(components, learner, [pool] + ([judge_pool] if judge_pool is not pool else []), tokenizer)


def calibrate_probe(config: Config, learner: Any, engine_pools: list[Any], token_ids: list[int],
                    sync_mode: SyncMode, export_dir: Path) -> SyncProbe:
    """The probe's noise: learner and engines hold the same weights at start-up, so their difference is pure
    kernel and precision difference (a mean 0.00002 for SmolLM2-135M in float32 on CPU, 0.06 in bf16 on CPU),
    measured on the path later syncs take: in adapter mode through vLLM's LoRA kernels, with the learner's weights
    exported as an adapter (version 0, its delta still zero at start-up). rollout.probe.calibrated sets the gap
    tolerance and the noise norm from it."""
    from rollout.config import resolve_engine_dtype

    probe = SyncProbe(tuple(token_ids), tuple(learner.probe_logprobs(token_ids)))
    through = learner.export(0, sync_mode, str(export_dir)) if sync_mode is SyncMode.ADAPTER else None
    readings = [reading for pool in engine_pools for reading in pool.read_probe(probe, through)]
    learner_dtype = resolve_compute_dtype(config.learner.compute_dtype, config.model.dtype,
                                          uses_gpu=config.learner.gpus_per_worker > 0)
    dtypes = (learner_dtype, resolve_engine_dtype(config.rollout, config.model.dtype))
    calibrated_probe = calibrated(probe, readings, config.rollout.sync_tolerance, dtypes)
    log(f"weight-sync probe{' through a zero-delta adapter' if through else ''}: noise with identical weights "
        f"{max(r.gap for r in readings):.2g} mean, {calibrated_probe.noise:.2g} norm; gap tolerance "
        f"{calibrated_probe.tolerance:.4f}")
    return calibrated_probe


