"""Length-bucketed micro-batches and the equal-count split across data-parallel ranks."""

import random

import pytest

from learner.packing import MicroBatch, pack_micro_batches, padding_fraction, split_across_ranks


def test_pack_micro_batches_hand_computed() -> None:
    lengths = [5, 9, 3, 9, 2, 7]
    micro_batches = pack_micro_batches(lengths, token_budget=20)
    # Longest first: 9, 9 (2 x 9 = 18; a third row would pad to 27), then 7, 5 (14; 3 more is 21), then 3, 2.
    assert [micro_batch.indices for micro_batch in micro_batches] == [(1, 3), (5, 0), (2, 4)]
    assert [micro_batch.padded_tokens for micro_batch in micro_batches] == [18, 14, 6]
    assert [micro_batch.token_count for micro_batch in micro_batches] == [18, 12, 5]
    assert padding_fraction(micro_batches) == pytest.approx(3 / 38)


def test_packed_micro_batches_count_tokens_not_padding() -> None:
    micro_batches = pack_micro_batches([5, 9, 3, 9, 2, 7], token_budget=20, packed=True)
    # Longest first: 9 + 9 = 18 (7 more is 25), then 7 + 5 + 3 + 2 = 17: one row each, nothing padded.
    assert [micro_batch.indices for micro_batch in micro_batches] == [(1, 3), (5, 0, 2, 4)]
    assert [micro_batch.padded_tokens for micro_batch in micro_batches] == [18, 17]
    assert all(micro_batch.packed for micro_batch in micro_batches)
    assert padding_fraction(micro_batches) == 0.0


def test_split_across_ranks_keeps_micro_batches_packed() -> None:
    packed = pack_micro_batches([5, 9, 3, 9, 2, 7], token_budget=20, packed=True)  # 18 and 17 tokens
    halves = split_across_ranks(packed, world_size=3)
    # Two for three ranks: the one with more tokens, (1, 3), is split into (1,) and (3,), 9 tokens each.
    assert [[(batch.indices, batch.packed) for batch in rank] for rank in halves] == [
        [((5, 0, 2, 4), True)], [((1,), True)], [((3,), True)]]
    fillers = split_across_ranks(pack_micro_batches([30, 20], token_budget=40, packed=True), world_size=3)
    assert [[(batch.indices, batch.filler, batch.packed) for batch in rank] for rank in fillers] == [
        [((0,), False, True)], [((1,), False, True)], [((1,), True, True)]]


def test_sample_longer_than_budget_gets_its_own_micro_batch() -> None:
    micro_batches = pack_micro_batches([4, 30, 4], token_budget=10)
    assert [micro_batch.indices for micro_batch in micro_batches] == [(1,), (0, 2)]


def test_budget_is_inclusive_and_empty_input_packs_to_nothing() -> None:
    assert [batch.indices for batch in pack_micro_batches([5, 5, 5, 5], token_budget=20)] == [(0, 1, 2, 3)]
    assert pack_micro_batches([], token_budget=20) == []
    assert padding_fraction([]) == 0.0


@pytest.mark.parametrize("lengths, budget, message", [([3, 0], 10, "sample 1"), ([3], 0, "token_budget")])
def test_pack_micro_batches_rejects_bad_input(lengths: list[int], budget: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pack_micro_batches(lengths, budget)


def test_micro_batch_needs_one_length_per_index() -> None:
    with pytest.raises(ValueError, match="one length per index"):
        MicroBatch(indices=(0, 1), lengths=(3,))


def test_split_across_ranks_hand_computed() -> None:
    micro_batches = pack_micro_batches([5, 9, 3, 9, 2, 7], token_budget=20)  # padded 18, 14, 6
    ranks = split_across_ranks(micro_batches, world_size=2)
    # Three micro-batches for two ranks: the largest, (1, 3), is split into (1,) and (3,), 9 tokens each.
    # Then largest first to the lighter open rank: 14 -> rank 0, 9 -> rank 1, 9 -> rank 1 (now full), 6 -> rank 0.
    assert [[batch.indices for batch in rank] for rank in ranks] == [[(5, 0), (2, 4)], [(1,), (3,)]]
    assert [sum(batch.padded_tokens for batch in rank) for rank in ranks] == [20, 18]


def test_split_across_ranks_pads_with_filler_copies_of_the_shortest_sample() -> None:
    singletons = pack_micro_batches([30, 20, 30], token_budget=40)  # three single-sample micro-batches
    ranks = split_across_ranks(singletons, world_size=2)
    # Four places: the shortest sample (index 1, 20 tokens) is repeated once as a filler. Largest first to the
    # lighter open rank, ties to the lower: 30 (0) -> rank 0, 30 (2) -> rank 1, 20 (1) -> rank 0, filler -> rank 1.
    assert [[(batch.indices, batch.filler) for batch in rank] for rank in ranks] == [
        [((0,), False), ((1,), False)], [((2,), False), ((1,), True)]]
    one_sample = split_across_ranks(pack_micro_batches([7], token_budget=40), world_size=4)
    assert [[(batch.indices, batch.filler) for batch in rank] for rank in one_sample] == [
        [((0,), False)], [((0,), True)], [((0,), True)], [((0,), True)]]
    assert split_across_ranks([], world_size=2) == [[], []]


@pytest.mark.parametrize("world_size", [1, 2, 4, 8])
def test_split_across_ranks_invariants_on_random_batches(world_size: int) -> None:
    generator = random.Random(world_size)
    for _ in range(20):
        lengths = [generator.randint(1, 300) for _ in range(world_size * generator.randint(1, 12))]
        budget = generator.randint(200, 1200)
        ranks = split_across_ranks(pack_micro_batches(lengths, budget, packed=generator.random() < 0.5), world_size)
        assert len({len(rank) for rank in ranks}) == 1
        assert sorted(index for rank in ranks for batch in rank for index in batch.indices) == list(
            range(len(lengths))
        )
        for rank in ranks:
            for batch in rank:
                assert batch.padded_tokens <= budget or len(batch.indices) == 1
                assert batch.lengths == tuple(lengths[index] for index in batch.indices)


def test_rows_padded_to_a_multiple_count_that_padding_against_the_budget() -> None:
    # lengths 5 9 3 9 2 7, rows 8 wide: 9 -> 16, 7 -> 8, 5 -> 8; budget 32 holds two 16-wide rows
    micro_batches = pack_micro_batches([5, 9, 3, 9, 2, 7], token_budget=32, pad_multiple=8)
    assert [batch.indices for batch in micro_batches] == [(1, 3), (5, 0, 2, 4)]
    assert [batch.padded_length for batch in micro_batches] == [16, 8]
    assert [batch.padded_tokens for batch in micro_batches] == [32, 32]
    assert padding_fraction(micro_batches) == pytest.approx(1 - 35 / 64)
    assert pack_micro_batches([5, 9], token_budget=32, packed=True, pad_multiple=8)[0].padded_tokens == 14
