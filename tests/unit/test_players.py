"""Players give every request its own sampling seed, so identical prompts are sampled independently."""

from agents.players import Proposer, distinct_seeds
from rollout.records import Completion, GenerationRequest, Sample, SamplingSpec


class RecordingGenerator:
    def __init__(self):
        self.requests = []

    def generate(self, requests):
        self.requests.extend(requests)
        return [Completion((1, 2), (Sample("<question>Q?</question>", (3,), (-0.5,), "stop"),), 0) for _ in requests]


def test_seeded_requests_get_seed_plus_index_and_unseeded_stay_unseeded():
    message = ({"role": "user", "content": "hi"},)
    seeded = [GenerationRequest(message, SamplingSpec(seed=10)) for _ in range(3)]
    assert [r.sampling.seed for r in distinct_seeds(seeded)] == [10, 11, 12]
    unseeded = [GenerationRequest(message, SamplingSpec()) for _ in range(2)]
    assert [r.sampling.seed for r in distinct_seeds(unseeded)] == [None, None]


def test_from_scratch_proposals_are_sampled_with_different_seeds():
    generator = RecordingGenerator()
    turns = Proposer(generator).propose([None, None, None], SamplingSpec(seed=7, max_tokens=16))
    assert [request.sampling.seed for request in generator.requests] == [7, 8, 9]
    assert all(request.messages == generator.requests[0].messages for request in generator.requests)
    assert [turn.parsed.value.text for turn in turns] == ["Q?"] * 3


def test_proposal_requests_cycle_through_the_family_demonstrations_from_the_seed():
    generator = RecordingGenerator()
    Proposer(generator, family="calculation").propose([None, None, "What is 2 + 2?"], SamplingSpec(seed=6))
    # the demonstration's answer is the third message (system, example request, example response, request)
    shown = [request.messages[2]["content"] for request in generator.requests]
    assert shown == ["<question>Compute (63 - 18) * 3 / 5.</question>",  # 6 % 8
                     "<question>What is the value of 8 * 8 - 7 * 5?</question>",  # 7 % 8
                     "<question>What is 24 - 3 * 6?</question>"]  # 8 % 8
