"""One vLLM engine: batched chat generation with per-request sampling, and in-place weight updates.

Plain class (usable in-process); `rollout.host` wraps it in a Ray actor. The same code runs the CPU build of vLLM
and CUDA vLLM; only `EngineSpec` values differ. Weight versions only ever increase: an adapter version gets a fresh
LoRA name and id (vLLM silently keeps serving an id it already holds), and older adapters are evicted.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace

from learner.weights import SyncMode, SyncProbe, WeightUpdate
from rollout.probe import GapBreaches, ProbeReading, read_probe, tolerated_breaches
from rollout.records import (PROMPT_TOO_LONG, Completion, GenerationRequest, Sample, SamplingSpec,
                             sample_seeds)
from rollout.shm_segments import mapped_segments, note_segments, noted_segments, remove_unmapped, sweep_dead_hosts
from rollout.worker_extension import WORKER_EXTENSION

GIB = 1 << 30
logger = logging.getLogger(__name__)
ENGINE_EXIT_S = 10.0  # for vLLM's processes to exit after its shutdown
CORE_WATCH_S = 1.0  # how often the watchdog reads vLLM's engine-dead flag
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the values vLLM accepts as max_lora_rank
CALIBRATION_ADAPTER_ID = 2**31 - 1  # the adapter a probe calibration reads through; versions count up from 1
ADAPTER_IDS_PER_VERSION = 8  # version v's adapters get the LoRA ids 8v, 8v + 1, ... (one per role)


def lora_rank_cap(rank: int) -> int:
    """vLLM's `max_lora_rank` for adapters of `rank`: the smallest value it accepts that holds the rank."""
    for cap in VLLM_LORA_RANKS:
        if cap >= rank:
            return cap
    raise ValueError(f"LoRA rank {rank} is above vLLM's largest max_lora_rank ({VLLM_LORA_RANKS[-1]})")


class SyncError(RuntimeError):
    """A weight update that cannot be applied (stale version, wrong mode, refused by vLLM)."""


class EngineDied(RuntimeError):
    """vLLM's engine-core process is gone (it crashed, or was killed: the OOM killer, a signal): this engine
    cannot serve again, and the pool replaces it."""


class ProbeMismatch(SyncError):
    """The engine loaded an update but does not serve it: its probe logprobs disagree with the learner's."""


@dataclass(frozen=True)
class EngineSpec:
    """How to build one engine (from the config's model and rollout sections)."""

    model_path: str
    dtype: str = "bfloat16"
    max_model_len: int = 2048
    enforce_eager: bool = True
    kv_cache_gb: float = 2.0
    gpu_memory_utilization: float = 0.5
    tensor_parallel_size: int = 1
    max_num_seqs: int = 256
    sync_mode: SyncMode = SyncMode.MERGED
    max_lora_rank: int = 16
    seed: int = 0  # the engine-wide generator's; requests without a seed of their own draw from it
    seeded_requests: bool = True  # honour each request's seed (rollout.seeded_requests); else sample unseeded
    sleep_mode: bool = False  # built able to sleep (vLLM's sleep mode) while the learner trains
    adapters_per_version: int = 1  # adapter sync: 1 (one adapter for every role) or one per role


def _whole_prompts_on_cpu(spec: EngineSpec) -> dict:
    """vLLM settings that keep every prompt's prefill in one scheduler step on CPU. With chunked prefill (vLLM's
    default) a prompt cut at a step's token budget (4096 on CPU) has its seeded sampler rewound, which a CPU torch
    Generator cannot do: "CPU Generator does not use offset" kills the engine whenever one batch of seeded requests
    holds more prompt tokens than the budget (a 16 x 8 solver batch did)."""
    return {"enable_chunked_prefill": False, "max_num_batched_tokens": max(4096, spec.max_model_len)}


@contextmanager
def _core_calls():
    """A call into vLLM's engine core that finds the core dead raises EngineDied, whichever call it is."""
    from vllm.v1.engine.exceptions import EngineDeadError

    try:
        yield
    except EngineDeadError:
        raise EngineDied("vLLM's engine core died (vLLM logs its cause)") from None


GPU_HEADROOM = 0.02  # of a card's memory, left free beside what an engine asks for


def gpu_fraction_that_fits(configured: float, free_bytes: list[int], total_bytes: list[int]) -> float:
    """The share of each of its cards an engine asks vLLM for: `configured` (rollout.gpu_memory_utilization),
    lowered to what is free on the fullest card less GPU_HEADROOM. vLLM refuses to start when less than the
    configured share of the whole card is free, which is the case for an engine restarted beside a learner rank
    that holds its share of the card (one-GPU colocation). Raises RuntimeError when under half the configured share
    is free: the engine would start with too little KV cache to be of use."""
    fits = min(free / total for free, total in zip(free_bytes, total_bytes)) - GPU_HEADROOM
    if fits >= configured:
        return configured
    if fits < configured / 2:
        used = ", ".join(f"{(total - free) / GIB:.1f} of {total / GIB:.1f} GiB" for free, total in
                         zip(free_bytes, total_bytes))
        raise RuntimeError(f"an engine needs {configured:.0%} of its GPU and {max(fits, 0):.0%} is free ({used} "
                           f"in use by other processes, such as a learner rank on the same card)")
    return round(fits, 3)


def _gpu_memory_share(configured: float) -> float:
    """gpu_fraction_that_fits on this actor's cards (CUDA_VISIBLE_DEVICES, one per tensor-parallel shard)."""
    import torch

    info = [torch.cuda.mem_get_info(device) for device in range(torch.cuda.device_count())]
    share = gpu_fraction_that_fits(configured, [free for free, _ in info], [total for _, total in info])
    if share < configured:
        logger.warning("engine: %.0f%% of the GPU is free, not the %.0f%% configured; starting with %.1f%% "
                       "(less KV cache)", 100 * (share + GPU_HEADROOM), 100 * configured, 100 * share)
    return share


def _uses_gpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cuda_alike()


class Engine:
    def __init__(self, spec: EngineSpec) -> None:
        import psutil
        from vllm import LLM

        sweep_dead_hosts()  # segments of engines whose host was killed before its shutdown
        self.spec = spec
        memory = ({"gpu_memory_utilization": _gpu_memory_share(spec.gpu_memory_utilization)} if _uses_gpu()
                  else {"kv_cache_memory_bytes": int(spec.kv_cache_gb * GIB)} | _whole_prompts_on_cpu(spec))
        # room for two versions (the served one stays loaded until the next one has passed its probes) and a
        # calibration adapter
        lora = ({"enable_lora": True, "max_lora_rank": lora_rank_cap(spec.max_lora_rank),
                 "max_loras": spec.adapters_per_version,
                 "max_cpu_loras": 2 * spec.adapters_per_version + 1}
                if spec.sync_mode is SyncMode.ADAPTER else {})
        # the shards as processes under this actor, which holds their GPUs: inside the run's placement group vLLM
        # would otherwise pick its Ray executor and ask Ray for GPUs this actor already holds
        shards = {"distributed_executor_backend": "mp"} if spec.tensor_parallel_size > 1 else {}
        sleep = {"enable_sleep_mode": True} if spec.sleep_mode else {}
        self.llm = LLM(model=spec.model_path, dtype=spec.dtype, max_model_len=spec.max_model_len,
                       enforce_eager=spec.enforce_eager, tensor_parallel_size=spec.tensor_parallel_size,
                       max_num_seqs=spec.max_num_seqs, seed=spec.seed, logprobs_mode="processed_logprobs",
                       use_tqdm_on_load=False, worker_extension_cls=WORKER_EXTENSION, **memory, **lora, **shards, **sleep)
        engine_processes = [child.pid for child in psutil.Process().children(recursive=True)]
        self.segment_note = note_segments(os.getpid(), engine_processes)  # removed by shutdown
        self.tokenizer = self.llm.get_tokenizer()
        self.weight_version = 0
        self._served: dict[str, object] = {}  # adapter mode: the LoRARequest each role's requests use ("": all roles)
        self._gap_breaches: dict[str, GapBreaches] = {}  # by role, as `_served`
        self._closing = threading.Event()
        threading.Thread(target=self._watch_core, name="engine-core-watch", daemon=True).start()

    def _watch_core(self) -> None:
        """vLLM's monitor marks its client dead when the engine-core process dies, but a call already waiting for
        outputs then waits forever: the sync client's output thread ends without queueing an error. Queue the error
        vLLM gives later calls, so the waiting call raises it too (EngineDied) instead of hanging."""
        from vllm.v1.engine.exceptions import EngineDeadError

        client = self.llm.llm_engine.engine_core
        resources, outputs = getattr(client, "resources", None), getattr(client, "outputs_queue", None)
        if resources is None or outputs is None:  # an in-process core: no process of its own to die
            return
        while not self._closing.wait(CORE_WATCH_S):
            if resources.engine_dead:
                outputs.put_nowait(EngineDeadError(suppress_context=True))
                return

    # -- generation ---------------------------------------------------------------------------------------------
    def render(self, request: GenerationRequest) -> list[int]:
        ids = self.tokenizer.apply_chat_template(list(request.messages), add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)

    def generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        from vllm import SamplingParams, TokensPrompt

        rendered = [self.render(request) for request in requests]
        # vLLM fails a whole batch, every caller's requests, for one prompt that leaves no room to answer: such a
        # request is not sent, and answers with empty samples whose finish reason says why (a format failure).
        fits = [len(ids) + 1 <= self.spec.max_model_len for ids in rendered]
        prompts, params = [], []
        for request, ids, fit in zip(requests, rendered, fits):
            # one vLLM request per sample, each with its own seed (sample_seeds): vLLM's n > 1 seeds overlap
            base_seed = request.sampling.seed if self.spec.seeded_requests else None
            for seed in sample_seeds(base_seed, ids, request.sampling.n) if fit else ():
                prompts.append(TokensPrompt(prompt_token_ids=ids))
                params.append(_sampling_params(SamplingParams, replace(request.sampling, n=1, seed=seed),
                                               self.spec.max_model_len - len(ids)))
        adapters = [self._adapter_of(request.role) for request, fit in zip(requests, fits) if fit
                    for _ in range(request.sampling.n)]
        outputs = iter(self._generate(prompts, params, adapters) if prompts else [])
        return [_completion([next(outputs) for _ in range(request.sampling.n)], self.weight_version) if fit else
                _prompt_too_long(ids, request.sampling.n, self.weight_version)
                for request, ids, fit in zip(requests, rendered, fits)]

    def _adapter_of(self, role: str):
        """The LoRARequest serving `role`'s requests: the shared adapter, the role's own, or None (no adapter: the
        base model before the first adapter sync, or merged weights)."""
        if not self._served or "" in self._served:
            return self._served.get("")
        if role not in self._served:
            raise ValueError(f"this engine serves adapters for roles {', '.join(self._served)}, none for a request "
                             f"of role {role!r}")
        return self._served[role]

    def _generate(self, prompts: list, params: list, lora_request) -> list:
        """`lora_request`: a LoRARequest (or None) for all prompts, or one per prompt."""
        with _core_calls():
            outputs = self.llm.generate(prompts, params, use_tqdm=False, lora_request=lora_request)
            self._release_worker_heap()
            return outputs

    def _release_worker_heap(self) -> None:
        """Give the pages the worker freed back to the operating system (rollout.worker_extension)."""
        self.llm.collective_rpc("release_free_heap")

    def shutdown(self) -> None:
        """End vLLM's engine-core process now, and remove the shared memory its processes leave behind
        (rollout.shm_segments). An in-process engine left to the interpreter's exit makes the process wait on it,
        and vLLM then logs into streams that may already be closed."""
        import psutil

        self._closing.set()
        mapped = {child: mapped_segments([child.pid]) for child in psutil.Process().children(recursive=True)}
        engine_processes = [child for child, found in mapped.items() if found]  # not the resource tracker
        # the note also names segments of engine processes that died before this shutdown (a killed core)
        segments = set().union(*mapped.values()) | noted_segments(self.segment_note)
        self.llm.llm_engine.engine_core.shutdown()
        # vLLM kills the engine core; its worker notices and exits on its own a moment later, still mapping
        _, stuck = psutil.wait_procs(engine_processes, timeout=ENGINE_EXIT_S)
        for process in stuck:
            process.kill()
        psutil.wait_procs(stuck, timeout=ENGINE_EXIT_S)
        remove_unmapped(segments)
        if self.segment_note is not None:
            self.segment_note.unlink(missing_ok=True)

    def prompt_logprobs(self, token_ids: list[int], lora_request=None) -> list[float]:
        """Logprob of each token 1..P-1 given its prefix, under the weights being served with `lora_request`'s
        adapter (None: none). [P - 1]"""
        from vllm import SamplingParams, TokensPrompt

        params = SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=0, detokenize=False)
        output = self._generate([TokensPrompt(prompt_token_ids=list(token_ids))], [params], lora_request)[0]
        return [position[token].logprob for token, position in zip(token_ids[1:], output.prompt_logprobs[1:])]

    def sleep(self) -> None:
        """Free the GPU for the learner: weights to host memory, KV cache dropped (vLLM sleep level 1)."""
        with _core_calls():
            self.llm.sleep(level=1)

    def wake_up(self) -> None:
        """Take the GPU back: weights restored, KV cache allocated anew."""
        with _core_calls():
            self.llm.wake_up()

    # -- weight sync --------------------------------------------------------------------------------------------
    def apply_update(self, update: WeightUpdate) -> dict[str, float]:
        """Serve `update` from now on and verify it took effect, each of its adapters on its probe. Returns sync
        metrics (the worst adapter's gap and position); raises SyncError, still serving the previous version where
        the new adapters did not load or did not pass."""
        if update.version <= self.weight_version:
            raise SyncError(f"weight version {update.version} is not newer than the served {self.weight_version}")
        if update.mode is not self.spec.sync_mode:
            raise SyncError(f"engine built for {self.spec.sync_mode.value} sync got a {update.mode.value} update")
        adapters = update.adapters()
        if len(adapters) > self.spec.adapters_per_version:
            raise SyncError(f"weight version {update.version} has {len(adapters)} adapters; this engine serves "
                            f"{self.spec.adapters_per_version} per version")
        started = time.perf_counter()
        loaded: dict[str, object] = {}
        with _core_calls():
            if update.mode is SyncMode.ADAPTER:
                try:
                    for index, (role, path, _) in enumerate(adapters):
                        loaded[role] = self._add_adapter(update.version, path,
                                                         update.version * ADAPTER_IDS_PER_VERSION + index)
                except SyncError:
                    self._remove_adapters(keep=self._served.values())
                    raise
            else:
                self._reload_merged(update)
            self.llm.reset_prefix_cache()  # cached prompt KV was computed with the old weights
        load_seconds = time.perf_counter() - started
        readings = {role: read_probe(self.prompt_logprobs(list(probe.token_ids), loaded.get(role)), probe)
                    for role, _, probe in adapters if probe is not None}
        verdicts = {role: self._gap_breaches.setdefault(role, GapBreaches(tolerated_breaches(self.spec.dtype)))
                    .verdict(reading, update.probes()[role].tolerated_breaches) for role, reading in readings.items()}
        failed = [role for role, verdict in verdicts.items() if verdict == "fail"]
        if failed:
            if update.mode is SyncMode.ADAPTER:  # the previous version was never removed: it stays served
                self._remove_adapters(keep=self._served.values())
            raise ProbeMismatch(f"weight version {update.version}: " + "; ".join(
                f"{role + ' adapter: ' if role else ''}{readings[role].problem}" for role in failed))
        if update.mode is SyncMode.ADAPTER:
            self._served = loaded
            self._remove_adapters(keep=loaded.values())
        self.weight_version = update.version
        # an adapter whose step was within the probe's noise (say, of a role that did not train) is not placed
        placed = [reading.position for reading in readings.values() if not math.isnan(reading.position)]
        return {"load_seconds": load_seconds, "version": float(update.version),
                "probe_gap": max((reading.gap for reading in readings.values()), default=math.nan),
                "probe_position": min(placed, default=math.nan),
                "probe_warning": float("warning" in verdicts.values())}

    def _reload_merged(self, update: WeightUpdate) -> None:
        """Serve the base model with `update`'s adapter merged into it by the worker (rollout.worker_extension)."""
        from vllm.v1.engine.exceptions import EngineDeadError

        try:
            self.llm.collective_rpc("reload_merged", kwargs={"base_path": self.spec.model_path,
                                                             "adapter_path": update.path})
        except EngineDeadError:
            raise
        except Exception as error:  # what the merge or vLLM's loader raised (missing files, a foreign adapter, ...)
            raise SyncError(f"merging weight version {update.version} from {update.path} failed: "
                            f"{type(error).__name__}: {error}") from None
        self._release_worker_heap()

    def _add_adapter(self, version: int, path: str, adapter_id: int):
        """Load the adapter in `path` beside those served, as `adapter_id`; a refused load leaves them served
        (SyncError)."""
        from vllm.lora.request import LoRARequest
        from vllm.v1.engine.exceptions import EngineDeadError

        request = LoRARequest(lora_name=f"selfplay-{adapter_id}", lora_int_id=adapter_id, lora_path=path)
        try:
            added = self.llm.llm_engine.add_lora(request)
        except EngineDeadError:
            raise
        except Exception as error:  # vLLM raises what its loader raised (missing files, wrong rank, ...)
            raise SyncError(f"vLLM refused adapter version {version} from {path}: "
                            f"{type(error).__name__}: {error}") from None
        if not added:
            raise SyncError(f"vLLM refused adapter version {version} from {path}")
        return request

    def _remove_adapters(self, keep) -> None:
        """Unload every adapter but those in `keep` (LoRARequests)."""
        engine = self.llm.llm_engine
        kept = {request.lora_int_id for request in keep}
        for adapter_id in list(engine.list_loras()):
            if adapter_id not in kept:
                engine.remove_lora(adapter_id)

    def read_probe(self, probe: SyncProbe, through: WeightUpdate | None = None, role: str = "") -> ProbeReading:
        """How the weights serving `role`'s requests (or the first adapter of `through`, loaded for this reading
        only) compare with the learner's on `probe` (rollout.probe). `through` calibrates the probe on the path
        adapter syncs serve by: vLLM's LoRA kernels, with the learner's current weights exported as an adapter."""
        if through is None:
            return read_probe(self.prompt_logprobs(list(probe.token_ids), self._adapter_of(role)), probe)
        with _core_calls():
            request = self._add_adapter(through.version, through.adapters()[0][1], CALIBRATION_ADAPTER_ID)
        try:
            return read_probe(self.prompt_logprobs(list(probe.token_ids), request), probe)
        finally:
            with _core_calls():
                self.llm.llm_engine.remove_lora(CALIBRATION_ADAPTER_ID)


def _sampling_params(factory, spec: SamplingSpec, room: int | None = None):
    """vLLM's sampling parameters; `room` (context left after the prompt) caps max_tokens."""
    max_tokens = spec.max_tokens if room is None else min(spec.max_tokens, room)
    return factory(n=spec.n, temperature=spec.temperature, top_p=spec.top_p, max_tokens=max_tokens,
                   stop=list(spec.stop) or None, seed=spec.seed, ignore_eos=spec.ignore_eos, logprobs=0)


def _prompt_too_long(prompt_token_ids: list[int], n: int, weight_version: int) -> Completion:
    empty = Sample(text="", token_ids=(), logprobs=(), finish_reason=PROMPT_TOO_LONG)
    return Completion(prompt_token_ids=tuple(prompt_token_ids), samples=(empty,) * n, weight_version=weight_version)


def _completion(outputs: list, weight_version: int) -> Completion:
    """One request's samples from its vLLM outputs (one per sample)."""
    samples = []
    for choice in (choice for output in outputs for choice in output.outputs):
        token_ids = tuple(choice.token_ids)
        logprobs = tuple(step[token].logprob for token, step in zip(token_ids, choice.logprobs))
        samples.append(Sample(text=choice.text, token_ids=token_ids, logprobs=logprobs,
                              finish_reason=str(choice.finish_reason)))
    return Completion(prompt_token_ids=tuple(outputs[0].prompt_token_ids), samples=tuple(samples),
                      weight_version=weight_version)
