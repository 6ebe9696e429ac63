"""Helpers shared by the learner benchmarks (`bench/learner.py`, `bench/vs_trl.py`): side processes in lockstep.

Each side of a comparison (ours, TRL) runs in its own child process, so neither sees the other's memory, threads
or process-group state (our learner calls `deepspeed.init_distributed`, which would make TRL's Accelerator
multi-process), and each has its own peak RSS. The children are alive together but step in lockstep: the parent
tells one side to run one step, waits for its timing, then tells the next side, rotating who goes first every
round. A side that is not stepping sleeps on its command pipe, so on a shared, busy machine both sides see the
same load over the same minutes instead of one side getting the quiet half of the run.

Protocol: the parent writes "step" or "done" lines to a child's stdin; the child answers each with one JSON line
on a pipe (`--reply-fd`). The child's stdout (vLLM and the HF Trainer print there) goes to the parent's stderr,
so the parent's stdout holds exactly one line, the final JSON. Leaves out the timed workloads themselves.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from selfplay.console import quiet_libraries  # noqa: E402

quiet_libraries()  # every benchmark imports this module before vLLM or torch: its log holds the lines a reader needs

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "WANDB_MODE": "disabled", "WANDB_DISABLED": "true",
               "DISABLE_MLFLOW_INTEGRATION": "TRUE"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def offline() -> None:
    """No network: local model paths only, no trackers."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (what `uptime` prints)."""
    return [round(value, 2) for value in os.getloadavg()]


def peak_rss_mb() -> float:
    """Peak resident memory of this process, in MiB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # ru_maxrss is KiB on Linux


def tree_cpu_seconds() -> float:
    """CPU seconds used so far by this process and all its live descendants (vLLM's engine core included)."""
    import psutil

    total = 0.0
    for process in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def run_arms(script: str, arms: list[str], arguments: list[str],
             environment: dict[str, dict[str, str]] | None = None) -> dict[str, dict]:
    """Each arm in its own child process (`script --arm ARM ARGUMENTS`, with `environment[ARM]` added to this
    process's environment), one after the other, so every arm has the whole machine and its own memory; the last
    line a child prints is its JSON result."""
    results = {}
    for arm in arms:
        child = subprocess.run([sys.executable, script, "--arm", arm, *arguments], stdout=subprocess.PIPE, text=True,
                               check=True, env=os.environ | (environment or {}).get(arm, {}))
        results[arm] = json.loads(child.stdout.strip().splitlines()[-1])
    return results


def resolve_dtype(name: str) -> str:
    """'auto': bfloat16 where it runs natively (a GPU, or a CPU with AVX-512 BF16 / AMX), else float32, the same
    rule as the product (learner.hardware.fast_dtype). On an AVX2-only CPU PyTorch's bf16 matmul falls back to a
    scalar loop, measured 0.1-0.3 GFLOP/s against 21-26 GFLOP/s in float32 (1024^3, 2 cores), which would turn these
    benchmarks into a bf16 emulation test."""
    import torch

    from learner.hardware import fast_dtype

    return fast_dtype("bfloat16", torch.cuda.is_available()) if name == "auto" else name


def release_free_memory() -> None:
    """glibc keeps freed heap pages (a step's activations, GBs in fp32); malloc_trim returns them to the OS. On a
    GPU, torch's caching allocator keeps freed blocks the same way: they go back too, for the other side's step."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


# -- child side -----------------------------------------------------------------------------------------------------
class Controller:
    """A side's end of the lockstep protocol."""

    def __init__(self, reply_fd: int) -> None:
        self._reply = os.fdopen(reply_fd, "w", buffering=1)
        self._idle_started = tree_cpu_seconds()
        self.idle_cpu_seconds = 0.0  # CPU this side's process tree burned while another side was stepping
        self.done = False

    def ready(self) -> None:
        """Tell the parent that set-up is over (it starts the next side only then)."""
        self.report({"ready": True})

    def next_step(self) -> bool:
        """Block until the parent says: True for one more step, False when done. Before blocking, hand freed
        heap back to the OS, so an idle side does not hold its step's peak memory while the other side steps."""
        release_free_memory()
        command = sys.stdin.readline().strip()
        self.idle_cpu_seconds += tree_cpu_seconds() - self._idle_started
        if command not in ("step", "done"):
            raise RuntimeError(f"unexpected command {command!r} from the benchmark parent")
        self.done = command == "done"
        return not self.done

    def report(self, payload: dict[str, Any]) -> None:
        self._reply.write(json.dumps(payload) + "\n")
        self._idle_started = tree_cpu_seconds()

    def finish(self, payload: dict[str, Any]) -> None:
        """Answer the final "done" with the side's summary (peak RSS and idle CPU added)."""
        if not self.done and self.next_step():
            raise RuntimeError("the benchmark parent asked for more steps than this side was built for")
        self.report({**payload, "peak_rss_mb": peak_rss_mb(), "idle_cpu_s": round(self.idle_cpu_seconds, 2)})


# -- parent side ----------------------------------------------------------------------------------------------------
@dataclass
class Side:
    name: str
    process: subprocess.Popen
    replies: Any  # file object on the reply pipe
    steps: list[dict[str, Any]] = field(default_factory=list)

    def command(self, word: str) -> dict[str, Any]:
        self.process.stdin.write(word + "\n")
        self.process.stdin.flush()
        line = self.replies.readline()
        if not line:
            code = self.process.wait()
            raise RuntimeError(f"side {self.name} exited with code {code} before answering (its log is above)")
        return json.loads(line)


def start_side(script: Path, name: str, arguments: list[str]) -> Side:
    read_fd, write_fd = os.pipe()
    command = [sys.executable, str(script), "--side", name, f"--reply-fd={write_fd}", *arguments]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=sys.stderr, text=True, cwd=ROOT,
                               env={**os.environ, **OFFLINE_ENV}, pass_fds=(write_fd,))
    os.close(write_fd)
    side = Side(name, process, os.fdopen(read_fd))
    started = time.perf_counter()
    line = side.replies.readline()
    if not line or not json.loads(line).get("ready"):
        raise RuntimeError(f"side {name} exited with code {process.wait()} during set-up (its log is above)")
    log(f"== side {name} ready after {time.perf_counter() - started:.1f} s, load {load_average()}")
    return side


def run_lockstep(script: Path, names: list[str], arguments: list[str], total_steps: int) -> dict[str, dict]:
    """Start every side, run `total_steps` rounds (one step per side per round, the first mover rotating),
    then collect each side's summary. Returns {name: {"steps": [step replies], **summary}}."""
    sides: list[Side] = []
    try:
        for name in names:  # one at a time: set-up (model loads, engine start) does not overlap
            sides.append(start_side(script, name, arguments))
        for round_index in range(total_steps):
            shift = round_index % len(sides)
            for side in sides[shift:] + sides[:shift]:
                reply = side.command("step")
                side.steps.append(reply)
                log(f"== round {round_index + 1}, {side.name}: {reply['seconds']:.2f} s, load {reply['load']}")
        results = {}
        for side in sides:
            summary = side.command("done")
            side.process.wait(timeout=300)
            results[side.name] = {"steps": side.steps, **summary}
        return results
    finally:
        for side in sides:
            if side.process.poll() is None:
                side.process.kill()


def spread(values: list[float], digits: int = 3) -> dict[str, Any]:
    """Minimum, median and maximum of repeated measurements, so a reader can tell a difference from noise."""
    return {"n": len(values), "min": round(min(values), digits), "median": round(statistics.median(values), digits),
            "max": round(max(values), digits)}


def round_ratios(faster: list[dict[str, Any]], slower: list[dict[str, Any]], warmup: int) -> dict[str, Any]:
    """The spread over lockstep rounds of slower_seconds / faster_seconds (a speedup of `faster` when above 1):
    each round ran both sides under the same load, so each round is one paired measurement."""
    return spread([peer["seconds"] / ours["seconds"] for ours, peer in zip(faster[warmup:], slower[warmup:])])


def timed_summary(steps: list[dict[str, Any]], warmup: int) -> dict[str, Any]:
    """Mean and median seconds over the steps after the warm-up, with each step's time and load. The median
    resists the odd step slowed by a burst of other work on a shared machine."""
    timed = steps[warmup:]
    seconds = [step["seconds"] for step in timed]
    return {"step_s": [round(value, 2) for value in seconds], "mean_step_s": round(mean(seconds), 3),
            "median_step_s": round(statistics.median(seconds), 3), "load_1m": [step["load"][0] for step in timed]}


# -- TRL --------------------------------------------------------------------------------------------------------------
def peft_lora_config():
    """Our learner's LoRA settings (selfplay.config.LoRAConfig defaults) as a PEFT config for TRL."""
    from learner.config import LoRAConfig
    from learner.export import peft_lora_config as from_section

    return from_section(LoRAConfig())


def lockstep_settings(args) -> dict:
    """The settings both lockstep benchmarks report: LoRA, steps, threads, schedule, machine."""
    return {"lora": {"rank": 16, "alpha": 32, "targets": "q,k,v,o,gate,up,down"}, "warmup_steps": args.warmup,
            "timed_steps": args.steps, "torch_threads": args.threads or "default",
            "schedule": "lockstep, one step per side per round, first mover rotating", "cpu_cores": os.cpu_count(),
            "quick": args.quick}


def trl_lockstep_callback(controller: Controller, on_step=None):
    """A TrainerCallback that waits for the parent's "step" in `on_step_begin`, then times the optimizer step up
    to `on_step_end`: `training_step` (its `_prepare_inputs`, hence any generation and scoring, then forward +
    backward), gradient clipping, `optimizer.step`, the scheduler and `zero_grad`. Logging and checkpointing run
    after `on_step_end` and are left out. `on_step()` may add fields to each step's reply; `.logs` keeps the
    trainer's per-step logs."""
    from transformers import TrainerCallback

    class LockstepTimer(TrainerCallback):
        def __init__(self) -> None:
            self._started = 0.0
            self.logs: list[dict[str, float]] = []  # the trainer's per-step logs (loss, grad_norm, ...)

        def on_step_begin(self, args, state, control, **kwargs):
            if not controller.next_step():
                raise RuntimeError("the benchmark parent stopped before TRL's max_steps")
            self._started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            seconds = time.perf_counter() - self._started
            extra = on_step() if on_step else {}
            controller.report({"seconds": seconds, "load": load_average(), **extra})

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.logs.append({key: float(value) for key, value in logs.items()
                                  if isinstance(value, (int, float))})

    return LockstepTimer()


def trl_grpo_config(output_dir: str, dtype: str, **values):
    """GRPOConfig for a single-process CPU run with our learner's optimisation settings (lr, clip range, grad
    clip, no KL, token-level loss normalised by the batch's completion tokens = TRL's 'dapo', constant lr);
    `dtype` 'bfloat16' turns on TRL's bf16 mixed precision (the model is loaded in that dtype too).
    Gradient checkpointing is off by default here (TRL turns it on by default; our learner does not use it), so
    both sides do the same arithmetic; pass gradient_checkpointing=True for TRL's default."""
    from trl import GRPOConfig

    from learner.config import LearnerConfig

    learner = LearnerConfig()
    settings = dict(output_dir=output_dir, bf16=dtype == "bfloat16", use_cpu=True, report_to=[], save_strategy="no",
                    learning_rate=learner.lr, weight_decay=learner.weight_decay, max_grad_norm=learner.grad_clip,
                    lr_scheduler_type="constant", epsilon=learner.clip_low, epsilon_high=learner.clip_high,
                    beta=learner.kl_coef, loss_type="dapo", gradient_checkpointing=False, disable_dropout=True,
                    dataloader_num_workers=0, disable_tqdm=True, logging_steps=1, seed=0)
    settings.update(values)
    return GRPOConfig(**settings)


def side_setup(threads: int, reply_fd: int, model: str | None = None) -> tuple[str, Controller]:
    """A side's process: offline, `threads` torch threads (0: torch's default), `model` or else the embedded model
    (prepared only then: a bare GPU box has a model directory and no converter), its reply pipe."""
    import torch

    from selfplay.embedded_model import prepare_embedded_model

    offline()
    if threads:
        torch.set_num_threads(threads)
    return model or str(prepare_embedded_model("smollm2-135m")), Controller(reply_fd)
