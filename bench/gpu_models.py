"""Random-weight Qwen2.5-shaped models with the embedded SmolLM2 tokenizer, built on a GPU box that has no model
hub, for the learner checks of bench/gpu_check.sh. bench/gpu_kit.sh copies this file into .gpu/ beside the
tokenizer (.gpu/tok).

    python .gpu/make_models.py [--3b]     # /tmp/qwen05b, and with --3b /tmp/qwen3b
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

SHAPES = {  # hidden, intermediate, layers, heads, kv heads: Qwen2.5's published configs
    "/tmp/qwen05b": (896, 4864, 24, 14, 2),
    "/tmp/qwen3b": (2048, 11008, 36, 16, 2),
}


def build(path: str, hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int) -> None:
    config = Qwen2Config(vocab_size=151936, hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         max_position_embeddings=32768, tie_word_embeddings=True, rope_theta=1e6,
                         rms_norm_eps=1e-6, torch_dtype="bfloat16")
    began = time.time()
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(Path(__file__).parent / "tok").save_pretrained(path)
    billions = sum(parameter.numel() for parameter in model.parameters()) / 1e9
    print(f"built {path}: {billions:.2f} B params in {time.time() - began:.1f} s", flush=True)
    del model
    torch.cuda.empty_cache()


if __name__ == "__main__":
    build("/tmp/qwen05b", *SHAPES["/tmp/qwen05b"])
    if "--3b" in sys.argv:
        build("/tmp/qwen3b", *SHAPES["/tmp/qwen3b"])
