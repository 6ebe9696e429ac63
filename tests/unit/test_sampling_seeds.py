"""Sampling seeds: every sample of a run draws from its own random stream, whatever its iteration, role, request
and index; the same request in the same iteration draws the same one (a resumed run repeats its samples)."""

from agents.players import distinct_seeds
from rollout.records import GenerationRequest, SamplingSpec, sample_seeds
from selfplay.config import load_config
from selfplay.iteration import for_call, sampling_specs


def _call(spec: SamplingSpec, prompts: list[tuple[int, ...]]) -> list[int]:
    """The seeds one player call hands to vLLM: prompts stand for rendered chats (token ids)."""
    requests = [GenerationRequest(({"role": "user", "content": str(prompt)},), spec) for prompt in prompts]
    return [seed for request, prompt in zip(distinct_seeds(requests), prompts)
            for seed in sample_seeds(request.sampling.seed, prompt, spec.n)]


def _iteration(config, iteration: int) -> list[int]:
    specs = sampling_specs(config, iteration)
    return (_call(specs["proposer"], [(1, 2, 3)] * 3)  # three from-scratch proposals: one prompt
            + _call(for_call(specs["solver"], "pool"), [(4, 5), (4, 5)])  # one pool question drawn twice: 2 x 4
            + _call(for_call(specs["solver"], "new"), [(4, 5)])  # a new question as written as that one: 4
            + _call(for_call(specs["judge"], "quality"), [(8,), (9,)])  # quality verdicts on two questions
            # a call per question's answers, in the pool's call and the new questions': the same answer to both
            + _call(for_call(for_call(specs["judge"], "pool"), 0), [(10,)])
            + _call(for_call(for_call(specs["judge"], "new"), 0), [(10,)]))


def test_no_two_samples_of_neighbouring_iterations_share_a_seed():
    config = load_config(None, ["solver.num_answers=4"])
    seeds = _iteration(config, 1) + _iteration(config, 2)
    assert len(seeds) == 2 * (3 + 2 * 4 + 4 + 2 + 1 + 1) == 38
    assert len(set(seeds)) == 38
    assert all(0 <= seed < 2**63 for seed in seeds)  # what torch.Generator.manual_seed takes
    assert _iteration(config, 1) == seeds[:19]  # reproducible


def test_vllms_own_child_seeds_would_collide_and_these_do_not():
    # vLLM seeds sample j of an n > 1 request with seed + j: requests seeded 10 and 11 would share a stream
    prompt = (4, 5)
    assert sample_seeds(10, prompt, 2)[1] != sample_seeds(11, prompt, 2)[0]
    assert sample_seeds(10, prompt, 2) == sample_seeds(10, prompt, 2)
    assert sample_seeds(None, prompt, 3) == [None, None, None]
