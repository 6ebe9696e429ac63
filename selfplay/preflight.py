"""Checks that run before anything starts: files the config names exist and parse, the model spec is usable.

Each problem is one line naming the key and the file, so `ray job submit` shows it as the job's failure reason.
"""

from __future__ import annotations

from pathlib import Path

from selfplay.config import Config, ConfigError, load_config
from selfplay.embedded_model import EMBEDDED_MODELS, EMBEDDED_PREFIX

RESOLVED_CONFIG = "config.yaml"


class PreflightError(ValueError):
    """A config value that is well-typed but points at something missing or broken."""


def load_run_config(config_path: str | None, overrides: list[str], resume_dir: str | None) -> Config:
    """A new run reads --config; a resumed run reads the config saved in its run directory (plus overrides)."""
    if resume_dir is not None:
        saved = Path(resume_dir) / RESOLVED_CONFIG
        if not saved.is_file():
            raise ConfigError(f"--resume {resume_dir}: no {RESOLVED_CONFIG} there (not a run directory)")
        return load_config(saved, overrides)
    return load_config(config_path, overrides)


def _check_model(spec: str) -> None:
    if spec.startswith(EMBEDDED_PREFIX):
        name = spec.removeprefix(EMBEDDED_PREFIX)
        if name not in EMBEDDED_MODELS:
            raise PreflightError(f"model.path: unknown embedded model {name!r} (known: {', '.join(EMBEDDED_MODELS)})")
    elif spec.startswith((".", "/", "~")) and not Path(spec).expanduser().is_dir():
        raise PreflightError(f"model.path: directory {spec!r} not found")


def preflight(config: Config) -> None:
    """Raise PreflightError (one line) for the first problem found."""
    from rewards.rubric import RubricError, load_rubric
    from selfplay.evaluation import EvalDataError, load_eval_questions
    from selfplay.pool import SeedFileError, load_seed_file

    _check_model(config.model.path)
    if config.rollout.judge_model not in (None, "same"):
        _check_model(config.rollout.judge_model)
    try:
        load_rubric(config.judge.rubric, config.judge.rubric_dir)
    except RubricError as error:
        raise PreflightError(f"judge.rubric: {error}") from None
    for key, path, loader in (("pool.seed_file", config.pool.seed_file, load_seed_file),
                              ("eval.data", config.eval.data, load_eval_questions)):
        if path is None:
            continue
        if not Path(path).is_file():
            raise PreflightError(f"{key}: file {path!r} not found")
        try:
            loader(path)
        except (SeedFileError, EvalDataError) as error:
            raise PreflightError(f"{key}: {error}") from None
