"""Config loading: defaults, overrides, and the one-line errors (unknown key, wrong type, out of range)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from selfplay.config import ConfigError, config_to_yaml, load_config, parse_override
from selfplay.preflight import load_run_config

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_configs_load():
    tiny = load_config(ROOT / "configs/tiny-cpu.yaml")
    assert tiny.model.path == "embedded:smollm2-135m"
    assert tiny.solver.num_answers == 4
    gpu = load_config(ROOT / "configs/gpu-qwen2.5-3b.yaml")
    assert gpu.model.path == "Qwen/Qwen2.5-3B-Instruct"
    assert gpu.proposer.batch_size == 128


def test_overrides_are_typed_and_nested():
    config = load_config(ROOT / "configs/tiny-cpu.yaml", ["learner.lr=2e-5", "judge.rubric=lenient",
                                                         "learner.lora.rank=8", "rollout.enforce_eager=false"])
    assert config.learner.lr == pytest.approx(2e-5)
    assert config.judge.rubric == "lenient"
    assert config.learner.lora.rank == 8
    assert config.rollout.enforce_eager is False


def test_parse_override_values():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("a=1e-6") == (["a"], 1e-6)
    assert parse_override("a=text") == (["a"], "text")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("no-equals-sign")


@pytest.mark.parametrize("body, message", [
    ("learner:\n  lrr: 0.1\n", "learner.lrr: unknown key"),
    ("bogus: {}\n", "bogus: unknown key"),
    ("learner:\n  lr: fast\n", "learner.lr: Input should be a valid number"),
    ("solver:\n  num_answers: 1\n", "solver.num_answers: Input should be greater than or equal to 2"),
    ("rollout:\n  sync_mode: teleport\n", "rollout.sync_mode: Input should be 'auto', 'adapter' or 'merged'"),
    ("- a\n- b\n", "top level must be a mapping"),
    ("eval:\n  every: 2\n", "eval.data or eval.sets: required when eval.every > 0"),
    ("eval:\n  every: 2\n  data: a.jsonl\n  guard:\n    set: gsm8k\n", "eval.guard.set: 'gsm8k' is not an eval set"),
    ("eval:\n  guard:\n    action: stop\n", "the guard needs eval.every > 0"),
    ("rollout:\n  gpus_per_engine: 1\n  tensor_parallel_size: 2\n",
     "rollout.gpus_per_engine (1) must equal rollout.tensor_parallel_size (2): one GPU per shard"),
    ("eval:\n  sets:\n    data:\n      data: a.jsonl\n", "set name 'data'"),
])
def test_bad_config_is_one_line_naming_file_and_key(tmp_path, body, message):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith(str(path))
    assert message in text


def test_bad_override_names_key():
    with pytest.raises(ConfigError, match=r"learner\.nope: unknown key"):
        load_config(None, ["learner.nope=1"])
    with pytest.raises(ConfigError, match=r"learner\.lr: Input should be less than 1"):
        load_config(None, ["learner.lr=5"])


def test_choice_words_are_text_numbers_fit_text_fields_and_a_word_is_a_one_item_list(tmp_path):
    path = tmp_path / "words.yaml"
    path.write_text("eval:\n  guard:\n    action: off\nsolver:\n  verifiable: off\nrollout:\n  enforce_eager: no\n")
    config = load_config(path, ["run.name=1.5", "run.train_roles=solver", "learner.lora.target_modules=q_proj, v_proj",
                                "tracking.wandb=disabled"])
    assert config.eval.guard.action == "off" and config.solver.verifiable == "off"
    assert config.rollout.enforce_eager is False  # a bool field still reads no/off/yes/on
    assert config.run.name == "1.5"
    assert config.run.train_roles == ("solver",)
    assert config.learner.lora.target_modules == ("q_proj", "v_proj")
    assert load_config(None, ["run.train_roles=[solver, judge]"]).run.train_roles == ("solver", "judge")


def test_an_unknown_key_gets_the_nearest_name_and_where_it_was_typed(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("judge:\n  rubrik: lenient\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: judge.rubrik: unknown key (did you mean judge.rubric?)"
    with pytest.raises(ConfigError) as caught:
        load_config(ROOT / "configs/tiny-cpu.yaml", ["learner.lrr=1e-5"])
    assert str(caught.value) == "command line 'learner.lrr=1e-5': learner.lrr: unknown key (did you mean learner.lr?)"
    with pytest.raises(ConfigError) as caught:  # a bad value under a section typed whole on the command line
        load_config(None, ["learner.lora={rank: 0}"])
    assert str(caught.value).startswith("command line 'learner.lora={rank: 0}': learner.lora.rank: Input should be")


def test_missing_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("/nonexistent/x.yaml")


def test_resolved_yaml_round_trips(tmp_path):
    config = load_config(ROOT / "configs/tiny-cpu.yaml", ["learner.lr=3e-5"])
    saved = tmp_path / "config.yaml"
    saved.write_text(config_to_yaml(config))
    assert load_config(saved) == config


def _evolve(*args):
    return subprocess.run([sys.executable, str(ROOT / "launch/evolve.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_dry_run_prints_resolved_config_and_exits_0():
    result = _evolve("--config", "configs/tiny-cpu.yaml", "--dry-run", "judge.rubric=lenient")
    assert result.returncode == 0, result.stderr
    assert "rubric: lenient" in result.stdout
    assert "num_answers: 4" in result.stdout


def test_dry_run_says_what_each_auto_value_resolves_to_here():
    result = _evolve("--config", "configs/tiny-cpu.yaml", "--dry-run", "rollout.sync_mode=adapter")
    assert result.returncode == 0, result.stderr
    resolved = result.stdout.split("# auto values on this machine:\n")[1]
    assert "#   rollout.dtype: " in resolved and "#   learner.compute_dtype: " in resolved
    assert "rollout.sync_mode" not in resolved  # set, not auto
    assert "#   tracking.wandb: " in resolved
    assert "#   rollout.max_num_seqs: 256\n" in resolved and "#   rollout.seeded_requests: on\n" in resolved


def test_dry_run_prints_the_placement_plan_on_this_machine_and_says_where_a_gpu_config_would_stop(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    result = _evolve("--config", "configs/tiny-cpu.yaml", "--dry-run")
    assert result.returncode == 0, result.stderr
    cpus = max(os.cpu_count() or 1, 2)  # the local Ray instance declares at least what the run reserves
    assert result.stdout.endswith("# placement plan on this machine:\n"
                                  f"#   this machine: learner ranks 0; engines 0 (0 of 0 GPUs, 2 of {cpus} CPUs)\n")
    gpu = _evolve("--config", "configs/gpu-qwen2.5-3b.yaml", "--dry-run")
    assert gpu.returncode == 0, gpu.stderr  # the config is valid; this machine is not where it runs
    assert "#   a run here would stop: placement: 4 learner ranks of 1 GPUs and 4 CPUs do not fit" in gpu.stdout


def test_help_shows_usage_and_the_shipped_configs_and_config_with_resume_is_one_line():
    result = _evolve("--help")
    assert result.returncode == 0
    assert "--resume RUN_DIR" in result.stdout and "docs/config-reference.md" in result.stdout
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        assert f"configs/{path.name}" in result.stdout
    result = _evolve("--config", "configs/tiny-cpu.yaml", "--resume", "runs/any")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "evolve.py: --config with --resume: a resumed run reads the config.yaml saved in its run directory; give "
        "changes as key=value overrides"]


def test_dry_run_bad_key_exits_2_with_one_line(tmp_path):
    result = _evolve("--config", "configs/tiny-cpu.yaml", "--dry-run", "learner.warp=9")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0] == "config error: command line 'learner.warp=9': learner.warp: unknown key"


def test_dry_run_missing_rubric_and_seed_file_exit_2():
    result = _evolve("--config", "configs/tiny-cpu.yaml", "--dry-run", "judge.rubric=no-such-rubric")
    assert result.returncode == 2 and "judge.rubric" in result.stderr
    result = _evolve("--config", "configs/tiny-cpu.yaml", "--dry-run", "pool.seed_file=missing.jsonl")
    assert result.returncode == 2 and "pool.seed_file: file 'missing.jsonl' not found" in result.stderr


RAY_JOB_ENVIRON = {"RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps(
    {"runtime_env": {"working_dir": "gcs://_ray_pkg_0123.zip"}, "metadata": {}})}


def test_output_dir_defaults_to_runs_here_and_home_inside_a_ray_job(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert load_run_config(None, [], None, environ={}).run.output_dir == str(tmp_path / "runs")
    assert load_run_config(None, [], None, environ=RAY_JOB_ENVIRON).run.output_dir == str(
        tmp_path / "home" / "selfplay-runs")
    assert load_run_config(None, ["run.output_dir=out"], None, environ={}).run.output_dir == str(tmp_path / "out")
    absolute = str(tmp_path / "elsewhere")
    assert load_run_config(None, [f"run.output_dir={absolute}"], None, environ=RAY_JOB_ENVIRON).run.output_dir == (
        absolute)
    # a job submitted without --working-dir runs where it was started: relative paths are the user's own
    no_copy = {"RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps({"runtime_env": {}})}
    assert load_run_config(None, ["run.output_dir=out"], None, environ=no_copy).run.output_dir == str(
        tmp_path / "out")


def test_relative_output_dir_inside_a_ray_job_copy_is_refused_in_one_line():
    with pytest.raises(ConfigError) as error:
        load_run_config(None, ["run.output_dir=runs"], None, environ=RAY_JOB_ENVIRON)
    message = str(error.value)
    assert message.startswith("run.output_dir=runs: a relative path inside a `ray job submit` job")
    assert "\n" not in message and "~/selfplay-runs" in message


def test_actor_environment_leaves_keys_the_user_or_the_job_sets_to_them():
    from selfplay.wiring import PROJECT_ROOT, actor_environment

    local = actor_environment({})["env_vars"]
    assert local["VLLM_LOGGING_LEVEL"] == "ERROR" and local["PYTHONPATH"] == str(PROJECT_ROOT)
    assert "VLLM_LOGGING_LEVEL" not in actor_environment({"VLLM_LOGGING_LEVEL": "INFO"})["env_vars"]
    job = {"RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps(
        {"runtime_env": {"working_dir": "gcs://x.zip", "env_vars": {"VLLM_LOGGING_LEVEL": "DEBUG"}}})}
    in_job = actor_environment(job)["env_vars"]
    assert "VLLM_LOGGING_LEVEL" not in in_job and "PYTHONPATH" not in in_job  # Ray refuses a key set twice
    assert in_job["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    assert local["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "64" and local["LRU_CACHE_CAPACITY"] == "64"
    assert "ONEDNN_PRIMITIVE_CACHE_CAPACITY" not in actor_environment({"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "1024"})[
        "env_vars"]


def test_quiet_libraries_sets_what_the_user_left_unset(monkeypatch):
    from selfplay.console import QUIET_LIBRARIES, quiet_libraries

    for key in QUIET_LIBRARIES:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "DEBUG")
    quiet_libraries()
    assert os.environ["VLLM_LOGGING_LEVEL"] == "DEBUG"
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1" and os.environ["TORCH_CPP_LOG_LEVEL"] == "ERROR"


@pytest.mark.parametrize(("overrides", "message"), [
    (["solver.temperature=0"], "solver.temperature: 0 (greedy) cannot train"),
    (["judge.temperature=0"], "judge.temperature: 0 (greedy) cannot train"),
    (["proposer.top_p=0.9"], "proposer.top_p=0.9: the engine's logprobs would be renormalised"),
    (["rollout.sync_mode=adapter", "learner.lora.rank=600"], "learner.lora.rank: LoRA rank 600 is above vLLM's"),
    (["pool.capacity=10"], "pool.capacity: 10 leaves no room beside the seed file's 43 seeds with reference answers"),
])
def test_settings_that_would_break_training_are_refused_before_anything_starts(overrides, message):
    from selfplay.preflight import PreflightError, preflight

    with pytest.raises(PreflightError) as error:
        preflight(load_config(ROOT / "configs" / "tiny-cpu.yaml", overrides))
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_a_frozen_judge_may_sample_greedily_and_zero_3_is_refused_by_the_schema():
    from selfplay.preflight import preflight, trained_roles

    frozen = load_config(ROOT / "configs" / "tiny-cpu.yaml", ["rollout.judge_model=same", "judge.temperature=0"])
    preflight(frozen)  # the frozen judge does not train
    assert trained_roles(frozen) == ("proposer", "solver")
    solver_only = load_config(None, ["run.train_roles=[solver]", "solver.temperature=0.7"])
    assert trained_roles(solver_only) == ("solver",)
    with pytest.raises(ConfigError, match="learner.zero_stage: Input should be 0, 1 or 2"):
        load_config(None, ["learner.zero_stage=3"])


def test_lora_rank_cap_is_the_smallest_vllm_value_that_holds_the_rank():
    from rollout.engine import lora_rank_cap

    assert [lora_rank_cap(rank) for rank in (1, 4, 8, 9, 16, 24, 300, 512)] == [1, 8, 8, 16, 16, 32, 320, 512]


def test_dry_run_greedy_solver_exits_2_with_one_line():
    result = _evolve("--config", "configs/tiny-cpu.yaml", "--dry-run", "solver.temperature=0")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "solver.temperature: 0 (greedy) cannot train" in result.stderr


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda path: path.name)
def test_every_shipped_config_loads_and_passes_preflight(path):
    from selfplay.preflight import preflight

    preflight(load_config(path))


def test_resources_needed_count_engines_learner_and_a_frozen_judges_engines():
    from selfplay.preflight import resources_needed

    gpu = load_config(ROOT / "configs/gpu-qwen2.5-3b.yaml")
    assert resources_needed(gpu) == {"CPU": 4 * 4 + 4 * 4, "GPU": 4 * 1 + 4 * 1}
    one_gpu = load_config(ROOT / "configs/gpu-1x.yaml")  # engine and learner split one GPU
    assert resources_needed(one_gpu) == {"CPU": 4 + 4, "GPU": 0.5 + 0.5}
    judged = load_config(None, ["rollout.judge_model=same", "rollout.num_engines=2", "learner.cpus_per_worker=2"])
    assert resources_needed(judged) == {"CPU": 2 * 2 * 1.0 + 1 * 2, "GPU": 0.0}


def test_a_cluster_without_the_resources_is_refused_with_one_line():
    from selfplay.preflight import PreflightError, check_cluster_resources

    check_cluster_resources({"CPU": 4, "GPU": 0}, {"CPU": 4.0})
    with pytest.raises(PreflightError, match=r"^rollout/learner: the run needs 8 GPUs \(the cluster has 0\); lower"):
        check_cluster_resources({"CPU": 2, "GPU": 8}, {"CPU": 16.0})


def test_an_actor_larger_than_every_node_or_too_few_nodes_to_spread_is_refused():
    from selfplay.placement import Node
    from selfplay.preflight import PreflightError, plan_run_placement

    two_gpu_nodes = [Node("a", "10.0.0.1", 8.0, 2.0), Node("b", "10.0.0.2", 8.0, 2.0)]
    fits = load_config(None, ["rollout.gpus_per_engine=2", "rollout.tensor_parallel_size=2",
                              "learner.gpus_per_worker=1", "learner.num_workers=2", "learner.placement=STRICT_SPREAD"])
    with pytest.raises(PreflightError, match=r"^placement: engine 0 needs 2 GPUs and 1 CPUs on one node; free after "
                                             r"what was placed before it: 10.0.0.1 1 GPUs and 7 CPUs, 10.0.0.2 1 "
                                             r"GPUs and 7 CPUs"):
        plan_run_placement(fits, two_gpu_nodes)  # 2 + 2 GPUs in all, but spread ranks leave no node 2 GPUs
    packed = load_config(None, ["rollout.gpus_per_engine=2", "rollout.tensor_parallel_size=2",
                                "learner.gpus_per_worker=1", "learner.num_workers=2"])
    assert plan_run_placement(packed, two_gpu_nodes).lines() == [
        "10.0.0.1: learner ranks 0-1 (2 of 2 GPUs, 2 of 8 CPUs)", "10.0.0.2: engines 0 (2 of 2 GPUs, 1 of 8 CPUs)"]
    wide = load_config(None, ["rollout.gpus_per_engine=4", "rollout.tensor_parallel_size=4"])
    with pytest.raises(PreflightError, match=r"^placement: engine 0 needs 4 GPUs and 1 CPUs on one node"):
        plan_run_placement(wide, two_gpu_nodes)
    spread = load_config(None, ["learner.num_workers=3", "learner.placement=STRICT_SPREAD"])
    with pytest.raises(PreflightError, match=r"^placement: 3 learner ranks of 0 GPUs and 1 CPUs each need a node of "
                                             r"their own \(learner.placement=STRICT_SPREAD\); 2 node\(s\) can hold one"):
        plan_run_placement(spread, two_gpu_nodes)
@pytest.mark.integration  # starts a local Ray instance
def test_a_gpu_config_on_this_cpu_machine_fails_within_30_seconds(tmp_path):
    import os
    import time

    started = time.monotonic()
    result = subprocess.run([sys.executable, str(ROOT / "launch/evolve.py"), "--config", "configs/gpu-qwen2.5-3b.yaml",
                             f"run.output_dir={tmp_path}", "tracking.wandb=disabled"], capture_output=True, text=True,
                            cwd=ROOT, timeout=120, env=os.environ | {"RAY_ADDRESS": ""})
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Token authentication" not in result.stderr  # Ray's warning at every local start (console.py)
    assert result.stderr.strip().splitlines()[-1] == (
        "config error: rollout/learner: the run needs 8 GPUs (the cluster has 0); lower rollout.num_engines, "
        "*_per_engine, learner.num_workers or *_per_worker, or add nodes")
    assert time.monotonic() - started < 30 and not any(tmp_path.iterdir())


def test_zero_iterations_runs_only_the_sft_cold_start_and_needs_one():
    sft_only = load_config(None, ["run.iterations=0", "sft.steps=3"])
    assert sft_only.run.iterations == 0 and sft_only.sft.steps == 3
    assert load_config(None, ["run.iterations=1000", "run.iterations=0", "sft.steps=3"]).run.iterations == 0
    with pytest.raises(ConfigError, match="run.iterations: 0 runs only the SFT cold start, but sft.steps is 0"):
        load_config(None, ["run.iterations=0"])
