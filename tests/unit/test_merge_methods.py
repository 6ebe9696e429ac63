"""learner/merge.py: each method against hand-computed cases on tiny tensors, and self-merges that give the input
back."""

import math

import pytest
import torch

from learner.merge import MergeError, factor, linear, lora_factors, merge_adapters, merge_deltas, slerp, ties


def test_linear_is_the_weighted_average_with_weights_normalised():
    first, second = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 6.0]])
    assert torch.allclose(linear([first, second], [1, 1]), torch.tensor([[2.0, 4.0]]))
    assert torch.allclose(linear([first, second], [3, 1]), torch.tensor([[1.5, 3.0]]))  # 0.75 * a + 0.25 * b


def test_slerp_follows_the_arc_between_orthogonal_deltas():
    # 90 degrees apart: at t = 0.5 both coefficients are sin(45 deg) / sin(90 deg) = 0.70711
    merged = slerp(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0]), 0.5)
    assert torch.allclose(merged, torch.tensor([math.sqrt(0.5), 2 * math.sqrt(0.5)]))
    # t = 1/3 of 90 degrees: sin(60)/1 and sin(30)/1
    merged = slerp(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), 1 / 3)
    assert torch.allclose(merged, torch.tensor([math.sqrt(3) / 2, 0.5]))


def test_slerp_of_parallel_deltas_is_linear_interpolation():
    assert torch.allclose(slerp(torch.tensor([1.0, 1.0]), torch.tensor([3.0, 3.0]), 0.25), torch.tensor([1.5, 1.5]))


def test_ties_trims_elects_signs_and_averages_the_agreeing_entries():
    first, second = torch.tensor([1.0, -2.0, 3.0]), torch.tensor([-1.0, 1.0, 1.0])
    # summed mass [0, -1, 4] -> signs [+, -, +]; entry 0 keeps only first's +1, entry 1 only first's -2,
    # entry 2 averages 3 and 1
    assert torch.allclose(ties([first, second], [1, 1], density=1.0), torch.tensor([1.0, -2.0, 2.0]))
    # weights 3:1 on entry 2: (3 * 3 + 1 * 1) / 4 = 2.5
    assert torch.allclose(ties([first, second], [3, 1], density=1.0), torch.tensor([1.0, -2.0, 2.5]))
    # density 1/3 keeps each delta's largest entry: first -> [0, 0, 3], second -> [-1, 0, 0]; masses [-1, 0, 3]
    assert torch.allclose(ties([first, second], [1, 1], density=1 / 3), torch.tensor([-1.0, 0.0, 3.0]))


@pytest.mark.parametrize("method", ["linear", "slerp", "ties"])
def test_merging_a_delta_with_itself_gives_it_back(method):
    delta = torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(merge_deltas([delta, delta.clone()], method), delta, atol=1e-6)


def adapter(seed: int, rank: int = 2, scaling: float = 2.0):
    generator = torch.Generator().manual_seed(seed)
    tensors = {"m.q_proj.lora_A.weight": torch.randn(rank, 6, generator=generator),
               "m.q_proj.lora_B.weight": torch.randn(4, rank, generator=generator)}
    return lora_factors(tensors, scaling)


def test_merged_adapters_are_factored_back_exactly_at_the_summed_rank():
    first, second = adapter(1), adapter(2)
    expected = 0.5 * first.deltas()["m.q_proj"] + 0.5 * second.deltas()["m.q_proj"]
    merged = merge_adapters([first, second], "linear")
    assert merged.factors.a["m.q_proj"].shape == (4, 6) and merged.factors.b["m.q_proj"].shape == (4, 4)
    assert torch.allclose(merged.factors.deltas()["m.q_proj"], expected, atol=1e-5)
    assert merged.relative_error < 1e-5
    same = merge_adapters([first, first], "slerp")
    assert torch.allclose(same.factors.deltas()["m.q_proj"], first.deltas()["m.q_proj"], atol=1e-5)


def test_factoring_below_the_rank_reports_the_truncation_error():
    delta = torch.diag(torch.tensor([3.0, 4.0]))
    merged = factor({"m": delta}, rank=1)
    assert torch.allclose(merged.factors.deltas()["m"], torch.diag(torch.tensor([0.0, 4.0])), atol=1e-6)
    assert merged.relative_error == pytest.approx(3 / 5)  # ||diag(3, 0)|| / ||diag(3, 4)||


def test_bad_merges_are_refused_with_one_line():
    with pytest.raises(MergeError, match="slerp merges exactly two adapters, got 3"):
        merge_adapters([adapter(1), adapter(2), adapter(3)], "slerp")
    with pytest.raises(MergeError, match="3 weights for 2 adapters"):
        merge_adapters([adapter(1), adapter(2)], "linear", weights=[1, 1, 1])
    with pytest.raises(MergeError, match="non-negative with a positive sum"):
        merge_adapters([adapter(1), adapter(2)], "linear", weights=[1, -1])
    with pytest.raises(MergeError, match="ties density must be in"):
        merge_adapters([adapter(1), adapter(2)], "ties", density=0)
    other = lora_factors({"m.k_proj.lora_A.weight": torch.ones(2, 6), "m.k_proj.lora_B.weight": torch.ones(4, 2)}, 1)
    with pytest.raises(MergeError, match="adapter 2 adapts other modules than adapter 1"):
        merge_adapters([adapter(1), other], "linear")
    wider = lora_factors({"m.q_proj.lora_A.weight": torch.ones(2, 8), "m.q_proj.lora_B.weight": torch.ones(4, 2)}, 1)
    with pytest.raises(MergeError, match="another shape"):
        merge_adapters([adapter(1), wider], "linear")
    with pytest.raises(MergeError, match="lora_A/lora_B pairs"):
        lora_factors({"m.lora_A.weight": torch.ones(1, 1)}, 1)
