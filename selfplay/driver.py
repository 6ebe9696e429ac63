"""The driver of a run: loop over iterations, evaluate, log, checkpoint, and resume from a run directory.

Ray and the components it runs are wired in `selfplay.wiring`; the iteration itself lives in `selfplay.iteration`,
scoring in `selfplay.scoring`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from learner.memory import node_used_share
from rewards.rubric import RubricError, load_rubric, reload_if_changed
from rollout.probe import SEPARATION
from selfplay.checkpoint import checkpoint_name, checkpoint_root, load_state, save_checkpoint, start_point
from selfplay.config import Config, config_to_yaml, metrics_namespace
from selfplay.console import log
from selfplay.evaluation import (EvalExample, change_line, eval_metrics, evaluate, load_eval_questions, paired_rows,
                                 summarize)
from selfplay.guard import BestTracker
from selfplay.iteration import RunState, iteration_seed, run_iteration, sync_weights
from selfplay.run_end import RunEnded, ending_line
from selfplay.preflight import RESOLVED_CONFIG
from selfplay.progress import duration, eta_seconds, iteration_line
from selfplay.question_pool import QuestionPool, load_seed_file
from selfplay.samples import COLUMNS, PROPOSAL_COLUMNS, exchanges, proposal_rows, table_rows
from selfplay.wiring import Started, connect_ray, export_dir_for, start_components


ADAPTER_DIRECTORY = "adapter"  # RUN_DIR/adapter: the final weights as a standard PEFT adapter


def new_run_dir(config: Config) -> Path:
    run_dir = Path(config.run.output_dir) / f"{config.run.name}-{datetime.now():%Y%m%d-%H%M%S}"
    run_dir.mkdir(parents=True, exist_ok=False)
    (run_dir / RESOLVED_CONFIG).write_text(config_to_yaml(config))
    return run_dir


def initial_state(config: Config) -> RunState:
    questions = QuestionPool(capacity=config.pool.capacity, duplicate_threshold=config.pool.duplicate_threshold,
                        solved_threshold=config.pool.solved_threshold,
                        solved_min_attempts=config.pool.solved_min_attempts, replay_ratio=config.pool.replay_ratio,
                        seed=config.run.seed)
    for question in load_seed_file(config.pool.seed_file):
        questions.add(question)
    return RunState(iteration=1, weight_version=0, questions=questions,
                    rubric=load_rubric(config.judge.rubric, Path(config.judge.rubric_dir)))


def new_best_tracker(config: Config) -> BestTracker:
    guard = config.eval.guard
    return BestTracker(config.eval.metric, config.eval.watched_set(), guard.action, guard.margin, guard.patience)


def restore_state(config: Config, run_dir: Path, started: Started, best: BestTracker,
                  checkpoint: Path) -> RunState:
    saved = load_state(checkpoint)
    state = RunState(iteration=saved["iteration"] + 1, weight_version=saved["weight_version"],
                     questions=QuestionPool.from_state_dict(saved["pool"]),
                     rubric=load_rubric(config.judge.rubric, Path(config.judge.rubric_dir)))
    load_checkpoint_into(config, started, state, checkpoint, saved)
    best.load_state_dict(saved.get("best", {}))
    log(f"resumed {run_dir} from {checkpoint.name}: next iteration {state.iteration}, "
        f"weight version {state.weight_version}")
    return state


def load_checkpoint_into(config: Config, started: Started, state: RunState, checkpoint: Path,
                         saved: dict[str, Any]) -> dict[str, float]:
    """The checkpoint's adapter, optimizer and question pool (`saved`: its state file), synced to the engines as the
    next weight version (fresh engines serve the base model; after a rollback they serve later weights)."""
    started.learner.load_checkpoint(str(checkpoint / "learner"))
    state.questions = QuestionPool.from_state_dict(saved["pool"])
    state.diversity_start = saved.get("diversity_start")
    return sync_weights(config, started.components, state)


def cold_start(config: Config, started: Started, state: RunState, run_dir: Path,
               best: BestTracker, detail: Callable[[str], None] = log) -> dict[str, float]:
    """The SFT cold start (selfplay.sft), synced to the engines and checkpointed as iteration 0, so a crash after
    it resumes at iteration 1 without repeating it (and a crash before it, with no checkpoint, runs it again)."""
    from agents.tasks import task_family
    from selfplay.sft import run_sft, sft_examples

    examples = sft_examples(load_seed_file(config.pool.seed_file), task_family(config.task.family))
    log(f"SFT cold start: {config.sft.steps} steps of {config.sft.batch_size} on {len(examples)} seed examples")
    began = time.perf_counter()
    metrics = run_sft(started.learner, started.tokenizer, examples, config.sft.steps, config.sft.batch_size, detail)
    synced = sync_weights(config, started.components, state)
    log(f"  SFT done in {duration(time.perf_counter() - began)}: nll {metrics.get('sft/nll_first', math.nan):.3f} "
        f"-> {metrics.get('sft/nll_last', math.nan):.3f}")
    metrics |= {"time/sft": time.perf_counter() - began, "sft/probe_position": synced["sync/probe_position"]}
    metrics |= {key.replace("sync/", "sft/"): value for key, value in synced.items()
                if key.startswith("sync/probe_separation")}  # and, with one adapter per role, each one's
    save_checkpoint(run_dir, 0, started.learner.save_checkpoint, checkpoint_state(state, best) | {"iteration": 0},
                    config.run.keep_checkpoints, best.protected())
    return {key: value for key, value in metrics.items() if key.startswith(("sft/", "time/sft"))}


def detail_line(metrics: dict[str, float]) -> str:
    """The verbose console's second line per iteration: what the compact line leaves out."""
    def value(key: str, digits: int = 3) -> str:
        return f"{metrics[key]:.{digits}f}" if key in metrics else "n/a"

    return (f"  format failures: proposer {value('proposer/format_failure_rate', 2)}, solver "
            f"{value('solver/format_failure_rate', 2)}, judge {value('judge/format_failure_rate', 2)}; "
            f"loss {value('learner/loss', 4)}; weight version {value('sync/version', 0)}, "
            f"probe gap {value('sync/probe_gap', 4)}, {probe_position(metrics)}")


def probe_position(metrics: dict[str, float]) -> str:
    """Where the engines sit between the previous weights (0) and these (1); a step within the probe's noise is
    not placed (rollout/probe.py), and saying so beats printing nan."""
    if "sync/probe_position" not in metrics:
        return "no probe reading"
    position = metrics["sync/probe_position"]
    if math.isfinite(position):
        return f"position {position:.2f}"
    separation = metrics.get("sync/probe_separation", math.nan)
    return f"step within the probe's noise (separation {separation:.2f} of the {SEPARATION:.2f} needed to place it)"


def held_out_eval(config: Config, started: Started, eval_sets: dict[str, list[EvalExample]], run_dir: Path,
                  step: int) -> tuple[dict[str, float], dict[str, float], list[str]]:
    """Greedy solver accuracy on each held-out set with the weights just synced: the tracker's metrics (`eval/*` for
    eval.data, `eval/NAME/*` for eval.sets), each set's score (eval.metric), and for each set a line comparing it
    with the base model's evaluation (step 0), paired by question. Each evaluation's rows go to
    eval/NAME-STEP.jsonl in the run directory."""
    began = time.perf_counter()
    metrics, scores, changes = {}, {}, []
    (run_dir / "eval").mkdir(exist_ok=True)
    for name, questions in eval_sets.items():
        results = evaluate(started.engine_pools[0], questions, config.eval.max_tokens, started.components.grader)
        rows = [result.to_row() for result in results]
        (run_dir / "eval" / f"{name}-{step}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        summary = summarize(results)
        namespace = metrics_namespace(name)
        metrics |= eval_metrics(summary, namespace)
        scores[name] = float(summary[config.eval.metric])
        log(f"  eval {name}: accuracy {summary['accuracy']:.3f} on {summary['n']} held-out questions "
            f"(95% CI {summary['ci95'][0]:.3f}-{summary['ci95'][1]:.3f}), lenient (last number) "
            f"{summary['lenient_accuracy']:.3f}")
        base_file = run_dir / "eval" / f"{name}-0.jsonl"
        if step == 0 or not base_file.is_file():
            continue
        base = [json.loads(line) for line in base_file.read_text().splitlines()]
        base_by_id = {row["id"]: row for row in base}
        if any(row["id"] not in base_by_id for row in rows):  # the set or its limit changed since step 0
            log(f"  eval {name}: not paired with the base model (its questions differ from {base_file}'s)")
            continue
        paired = paired_rows(rows, base_by_id)
        for kind, key in (("strict", "correct"), ("lenient", "lenient_correct")):
            metrics[f"{namespace}/vs_base_{kind}"] = paired[kind]["difference"]
        before = {key: sum(bool(row[key]) for row in base) / len(base) for key in ("correct", "lenient_correct")}
        changes.append(f"held-out {name} (n={len(rows)}, paired with the base model): accuracy "
                       f"{change_line(before['correct'], summary['accuracy'], paired['strict'])}, lenient "
                       f"{change_line(before['lenient_correct'], summary['lenient_accuracy'], paired['lenient'])}")
    for line in changes:
        log(f"  {line}")
    return metrics | {"time/eval": time.perf_counter() - began}, scores, changes


def closing_summary(run_dir: Path, iterations: int, seconds: float, changes: list[str], best: dict[str, dict],
                    adapter: Path) -> list[str]:
    """The run's last words: what ran, what the held-out sets say against the base model, the best held-out
    scores, where the adapter is, and what to do next."""
    lines = [f"done: {iterations} iteration(s) in {duration(seconds)}", *changes]
    for name, entry in best.items():
        where = entry["checkpoint"] or "the base model"
        lines.append(f"best {name} {entry['metric']}: {entry['score']:.3f} at iteration {entry['iteration']} "
                     f"({where}; RUN_DIR/best.json)")
    return [*lines, f"adapter (standard PEFT, the final weights): {adapter}",
            f"evaluate it: python launch/eval.py --config {run_dir / 'config.yaml'} --data FILE --adapter {adapter}"]


def checkpoint_state(state: RunState, best: BestTracker) -> dict[str, Any]:
    return {"iteration": state.iteration, "weight_version": state.weight_version,
            "pool": state.questions.state_dict(), "diversity_start": state.diversity_start,
            "rubric": {"name": state.rubric.name, "version": state.rubric.version}, "best": best.state_dict()}


def write_best(run_dir: Path, best: BestTracker) -> None:
    if best.best:
        (run_dir / "best.json").write_text(json.dumps(best.summary(), indent=2) + "\n")


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
    from selfplay.tracking import build_tracker, drop_metrics_after

    plan = connect_ray(config)  # first: a cluster that cannot hold the run fails here, before any run directory
    run_dir = Path(resume_dir) if resume_dir else new_run_dir(config)
    log(f"run directory: {run_dir}")
    started = start_components(config, export_dir_for(config, run_dir), plan)
    components = started.components
    best = new_best_tracker(config)
    tracker = None
    try:
        started.learner.check_shared_directory(str(run_dir))
        start = start_point(run_dir)
        state = (restore_state(config, run_dir, started, best, start.checkpoint) if start.checkpoint
                 else initial_state(config))
        if resume_dir and start.fresh:
            log(f"resumed {run_dir} before its first checkpoint: starting over from the base model"
                + (", SFT cold start included" if config.sft.steps else ""))
        if dropped := drop_metrics_after(run_dir, start.last_kept_step):
            log(f"metrics.jsonl: removed the {dropped} rows logged after the checkpoint; they are logged again")
        tracker = build_tracker(run_dir, config.tracking, run_dir.name, config.model_dump(mode="json"))
        log(f"W&B {tracker.wandb_choice.mode}: {tracker.wandb_choice.reason}")
        if url := tracker.summary().get("wandb_url"):
            log(f"W&B run: {url}")
        eval_sets = {name: load_eval_questions(held_out.data, held_out.limit)
                     for name, held_out in config.eval.named_sets().items()} if config.eval.every else {}
        detail = log if config.tracking.console == "verbose" else (lambda message: None)
        if state.iteration <= config.run.iterations:
            tracker.log_text("judge/rubric", f"# {state.rubric.name} {state.rubric.version}\n{state.rubric.text}",
                             step=state.iteration)
        if config.eval.every and start.fresh:
            log("held-out evaluation of the base model (step 0)")
            metrics, scores, _ = held_out_eval(config, started, eval_sets, run_dir, 0)
            best.observe(0, scores)
            tracker.log(metrics, step=0)
        sft_metrics = (cold_start(config, started, state, run_dir, best, detail) if config.sft.steps and start.fresh
                       else {})
        began_loop, first_iteration, changes = time.monotonic(), state.iteration, []
        while state.iteration <= config.run.iterations:
            rubric_changed = refresh_rubric(state, tracker)
            detail(f"iteration {state.iteration}/{config.run.iterations}: propose, judge, solve")
            result = run_iteration(config, components, state, progress=detail, alert=log)
            result.metrics |= sft_metrics  # logged with the first iteration
            sft_metrics = {}
            improved, trip = [], None
            if config.eval.every and (state.iteration % config.eval.every == 0
                                      or state.iteration == config.run.iterations):
                metrics, scores, changes = held_out_eval(config, started, eval_sets, run_dir, state.iteration)
                result.metrics |= metrics
                improved = best.observe(state.iteration, scores)
                best.saved(improved, checkpoint_name(state.iteration))  # saved just below
                trip = best.trip()
            began = time.perf_counter()
            if (improved or state.iteration % config.run.checkpoint_every == 0
                    or state.iteration == config.run.iterations):
                save_checkpoint(run_dir, state.iteration, started.learner.save_checkpoint,
                                checkpoint_state(state, best), config.run.keep_checkpoints, best.protected())
                write_best(run_dir, best)
            result.metrics["time/checkpoint"] = time.perf_counter() - began
            result.metrics["judge/rubric_changed"] = float(rubric_changed)
            result.metrics["memory/node_used_share"] = node_used_share()
            tracker.log(result.metrics, step=state.iteration)
            rows = table_rows(exchanges(state.iteration, result.turns, result.scores), config.tracking.sample_rows,
                              iteration_seed(config, state.iteration) + 6)
            tracker.log_table("samples", COLUMNS, rows, step=state.iteration)
            tracker.log_table("proposals", PROPOSAL_COLUMNS, proposal_rows(state.iteration, result.turns, result.scores),
                              step=state.iteration)
            elapsed = time.monotonic() - began_loop
            remaining = eta_seconds(state.iteration - first_iteration + 1, config.run.iterations - state.iteration,
                                    elapsed)
            log(iteration_line(state.iteration, config.run.iterations, result.metrics, elapsed, remaining))
            detail(detail_line(result.metrics))
            if config.tracking.plot_every and state.iteration % config.tracking.plot_every == 0:
                refresh_plots(run_dir)
            state.iteration += 1
            if trip is not None:
                log(trip.message)
                if trip.action == "stop":
                    break
                best_checkpoint = checkpoint_root(run_dir) / trip.best.checkpoint
                load_checkpoint_into(config, started, state, best_checkpoint, load_state(best_checkpoint))
        if sft_metrics:  # run.iterations=0: no iteration to log them with
            tracker.log(sft_metrics, step=0)
        adapter = Path(started.learner.save_adapter(str(run_dir / ADAPTER_DIRECTORY)))
        for line in closing_summary(run_dir, state.iteration - first_iteration, time.monotonic() - began_loop,
                                    changes, best.summary(), adapter):
            log(line)
    except Exception as error:
        if line := ending_line(error, run_dir):
            raise RunEnded(line) from error
        raise
    finally:  # also when stopped (SIGTERM, Ctrl-C) or failed: what the finished iterations logged is kept
        try:
            if tracker is not None:
                finish_tracking(tracker, run_dir)
        finally:
            started.shutdown()
    return run_dir


def refresh_plots(run_dir: Path) -> None:
    """Redraw RUN_DIR/plots from the metrics logged so far; a plot that fails says so and the run goes on."""
    from selfplay.plots import write_plots

    try:
        write_plots(run_dir)
    except Exception as error:  # a plot is a view: it must not end a run that trains fine
        log(f"plots not refreshed: {type(error).__name__}: {error}")


def finish_tracking(tracker: Any, run_dir: Path) -> None:
    """Close the tracker (W&B included) and write the run's plots from its metrics file."""
    from selfplay.plots import write_plots

    summary = tracker.summary()
    tracker.finish()
    plots = write_plots(run_dir) if (run_dir / "metrics.jsonl").is_file() else []
    log(f"plots: {', '.join(str(p) for p in plots) or 'none'}")
    if summary.get("wandb_sync_command"):
        log(f"W&B offline run; upload it later with: {summary['wandb_sync_command']}")
    if summary.get("wandb_url"):
        log(f"W&B run: {summary['wandb_url']}")
