"""Token logprobs from final hidden states without materialising the full [tokens, vocab] logits.

With a 49k-152k vocabulary the fp32 logits of one micro-batch, their log-softmax and its gradient are the
learner's largest tensors (4096 tokens x 49152 x 4 bytes = 0.8 GB each). Here the output layer runs on chunks of
positions under activation checkpointing: a chunk's logits exist only while that chunk is computed, and again
briefly in the backward pass. Pure torch.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.checkpoint import checkpoint


def _chunk_logprobs(output_layer: Callable[[torch.Tensor], torch.Tensor], hidden: torch.Tensor,
                    targets: torch.Tensor, temperatures: torch.Tensor) -> torch.Tensor:
    logits = output_layer(hidden).float() / temperatures  # [N, V]
    return logits.gather(-1, targets[:, None]).squeeze(-1) - logits.logsumexp(dim=-1)  # [N]


def token_logprobs(output_layer: Callable[[torch.Tensor], torch.Tensor], hidden: torch.Tensor,
                   targets: torch.Tensor, temperatures: torch.Tensor, chunk_tokens: int) -> torch.Tensor:
    """log softmax(output_layer(hidden) / T)[target] for every position.

    hidden: [B, R, H] final (normed) hidden states; targets: [B, R] token ids; temperatures: [B].
    Returns [B, R] fp32. Gradients flow to `hidden` and to the output layer's parameters.
    """
    batch, width, size = hidden.shape
    flat_hidden = hidden.reshape(batch * width, size)  # [N, H]
    flat_targets = targets.reshape(batch * width)  # [N]
    flat_temperatures = temperatures[:, None].expand(batch, width).reshape(batch * width, 1).float()  # [N, 1]
    pieces = []
    for start in range(0, batch * width, chunk_tokens):
        piece = slice(start, start + chunk_tokens)
        arguments = (output_layer, flat_hidden[piece], flat_targets[piece], flat_temperatures[piece])
        pieces.append(checkpoint(_chunk_logprobs, *arguments, use_reentrant=False)
                      if torch.is_grad_enabled() else _chunk_logprobs(*arguments))
    return torch.cat(pieces).reshape(batch, width)
