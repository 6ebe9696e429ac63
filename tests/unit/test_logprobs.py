"""Chunked token logprobs equal the full log-softmax, in value and in gradient."""

import math

import pytest
import torch

from learner.logprobs import token_logprobs


def test_hand_computed_two_token_vocabulary():
    # identity output layer: logits = hidden; log softmax([0, ln 3])[1] = ln(3/4); at T=2: softmax([0, ln3 / 2])
    hidden = torch.tensor([[[0.0, math.log(3.0)]], [[0.0, math.log(3.0)]]])  # [2, 1, 2]
    targets = torch.tensor([[1], [0]])
    result = token_logprobs(lambda h: h, hidden, targets, torch.tensor([1.0, 2.0]), chunk_tokens=1)
    assert result[0, 0].item() == pytest.approx(math.log(3 / 4))
    assert result[1, 0].item() == pytest.approx(-math.log(1 + math.sqrt(3)))


@pytest.mark.parametrize("chunk_tokens", [1, 5, 64])
def test_matches_full_log_softmax_and_its_gradients(chunk_tokens):
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 50, bias=False)
    hidden = torch.randn(3, 7, 8, requires_grad=True)  # [B, R, H]
    targets = torch.randint(0, 50, (3, 7))
    temperatures = torch.tensor([1.0, 0.7, 1.3])
    weights = torch.randn(3, 7)

    full = torch.log_softmax(layer(hidden) / temperatures[:, None, None], -1).gather(-1, targets[..., None])[..., 0]
    (full * weights).sum().backward()
    expected_hidden, expected_layer = hidden.grad.clone(), layer.weight.grad.clone()
    hidden.grad, layer.weight.grad = None, None

    chunked = token_logprobs(layer, hidden, targets, temperatures, chunk_tokens)
    (chunked * weights).sum().backward()
    assert torch.allclose(chunked, full, atol=1e-5)
    assert torch.allclose(hidden.grad, expected_hidden, atol=1e-5)
    assert torch.allclose(layer.weight.grad, expected_layer, atol=1e-5)
