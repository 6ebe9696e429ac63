"""Builds the tiny random Llama used by tests and quick benchmarks (no hub: tokenizer from the embedded model)."""

from __future__ import annotations

from pathlib import Path


def build_tiny_model(tokenizer_dir: Path, output: Path, seed: int = 0) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=64, max_position_embeddings=2048,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, torch_dtype=torch.bfloat16,
        initializer_range=0.1,  # peaked (not near-uniform) next-token distributions: GRPO tests can move them
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    return output
