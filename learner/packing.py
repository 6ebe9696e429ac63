"""Micro-batch packing by length bucketing, and an even split of micro-batches across ranks.

A micro-batch is padded to its longest sample, so it costs `len(indices) * max_length` tokens of
compute. Sorting samples by length and filling greedily keeps that padded size within a token
budget while wasting little padding. A packed micro-batch (`packed=True`) is one row holding its
samples end to end, so it costs just its tokens. Left out: the tensors themselves (the learner
lays out the samples of each micro-batch).
"""

from dataclasses import dataclass, replace
from typing import Sequence


@dataclass(frozen=True)
class MicroBatch:
    """Sample indices into the global batch and their lengths, longest first.

    The learner pads it to [len(indices), max_length], or lays it out as one row when `packed`.
    """

    indices: tuple[int, ...]
    lengths: tuple[int, ...]
    filler: bool = False  # a copy of a real sample that only keeps a rank in step: its loss counts zero
    packed: bool = False
    pad_multiple: int = 1  # padded rows are this many tokens wide, rounded up (few shapes: learner.pad_multiple)

    def __post_init__(self) -> None:
        if not self.indices or len(self.indices) != len(self.lengths):
            raise ValueError(f"a micro-batch needs one length per index, got {self.indices} and {self.lengths}")

    @property
    def max_length(self) -> int:
        return max(self.lengths)

    @property
    def padded_length(self) -> int:
        return round_up(self.max_length, self.pad_multiple)

    @property
    def token_count(self) -> int:
        """Real (unpadded) tokens."""
        return sum(self.lengths)

    @property
    def padded_tokens(self) -> int:
        """Tokens the learner computes: every sample padded to the longest, or just the tokens when packed."""
        return self.token_count if self.packed else len(self.indices) * self.padded_length


def round_up(length: int, multiple: int) -> int:
    return -(-length // multiple) * multiple


def _micro_batch(indices: Sequence[int], lengths: Sequence[int], packed: bool, pad_multiple: int) -> MicroBatch:
    return MicroBatch(indices=tuple(indices), lengths=tuple(lengths[index] for index in indices), packed=packed,
                      pad_multiple=pad_multiple)


def pack_micro_batches(lengths: Sequence[int], token_budget: int, packed: bool = False,
                       pad_multiple: int = 1) -> list[MicroBatch]:
    """Pack samples (given their sequence lengths) into micro-batches of padded size <= token_budget.

    Samples are sorted longest first (ties by index, so the result is deterministic); each
    micro-batch opens with the longest remaining sample, which fixes its padded length, and takes
    following samples while `count * max_length <= token_budget` (`packed`: while the sum of their
    lengths is; `max_length` rounded up to a multiple of `pad_multiple`). A sample longer than the budget gets a
    micro-batch of its own.
    """
    if token_budget <= 0:
        raise ValueError(f"token_budget must be positive, got {token_budget}")
    for index, length in enumerate(lengths):
        if length <= 0:
            raise ValueError(f"sequence length must be positive, sample {index} has {length}")
    order = sorted(range(len(lengths)), key=lambda index: (-lengths[index], index))
    micro_batches: list[MicroBatch] = []
    current: list[int] = []
    for index in order:
        grown = current + [index]
        size = (sum(lengths[member] for member in grown) if packed
                else len(grown) * round_up(lengths[grown[0]], pad_multiple))
        if current and size > token_budget:
            micro_batches.append(_micro_batch(current, lengths, packed, pad_multiple))
            grown = [index]
        current = grown
    if current:
        micro_batches.append(_micro_batch(current, lengths, packed, pad_multiple))
    return micro_batches


def padding_fraction(micro_batches: Sequence[MicroBatch]) -> float:
    """Share of the padded tokens that are padding (0 when there are no micro-batches)."""
    padded = sum(micro_batch.padded_tokens for micro_batch in micro_batches)
    if padded == 0:
        return 0.0
    return 1.0 - sum(micro_batch.token_count for micro_batch in micro_batches) / padded


def _split_in_two(micro_batch: MicroBatch) -> tuple[MicroBatch, MicroBatch]:
    middle = len(micro_batch.indices) // 2
    return (
        replace(micro_batch, indices=micro_batch.indices[:middle], lengths=micro_batch.lengths[:middle]),
        replace(micro_batch, indices=micro_batch.indices[middle:], lengths=micro_batch.lengths[middle:]),
    )


def split_across_ranks(micro_batches: Sequence[MicroBatch], world_size: int) -> list[list[MicroBatch]]:
    """Give each data-parallel rank the same number of micro-batches and roughly equal tokens.

    DeepSpeed's gradient accumulation needs the same number of steps on every rank, and an empty
    micro-batch is not allowed. So when the count is not a multiple of `world_size`, the micro-batch
    with the most padded tokens among those holding two or more samples is split in two (each half
    stays within the budget) until it is. When no split is left (fewer samples than ranks, or an odd
    count of single-sample micro-batches) the shortest sample is repeated as `filler` micro-batches,
    whose loss the learner counts as zero. Then micro-batches go, largest padded size first, to the
    rank with the fewest padded tokens among those not yet full (ties to the lowest rank).
    """
    if world_size <= 0:
        raise ValueError(f"world_size must be positive, got {world_size}")
    if not micro_batches:
        return [[] for _ in range(world_size)]
    pending = list(micro_batches)
    while len(pending) % world_size != 0:
        splittable = [position for position, micro_batch in enumerate(pending) if len(micro_batch.indices) > 1]
        if not splittable:
            length, index = min((length, index) for batch in pending
                                for index, length in zip(batch.indices, batch.lengths))
            filler = MicroBatch((index,), (length,), filler=True, packed=pending[0].packed,
                                pad_multiple=pending[0].pad_multiple)
            pending += [filler] * (-len(pending) % world_size)
            break
        largest = max(splittable, key=lambda position: (pending[position].padded_tokens, -position))
        pending[largest : largest + 1] = _split_in_two(pending[largest])

    per_rank = len(pending) // world_size
    ranks: list[list[MicroBatch]] = [[] for _ in range(world_size)]
    rank_tokens = [0] * world_size
    for micro_batch in sorted(pending, key=lambda micro_batch: -micro_batch.padded_tokens):
        open_ranks = [rank for rank in range(world_size) if len(ranks[rank]) < per_rank]
        rank = min(open_ranks, key=lambda rank: (rank_tokens[rank], rank))
        ranks[rank].append(micro_batch)
        rank_tokens[rank] += micro_batch.padded_tokens
    return ranks
