"""The embedded default model: converted from its PyPI wheel, loads in transformers and vLLM and answers a chat
prompt; a damaged cache is detected and rebuilt."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from selfplay.embedded_model import MANIFEST, _manifest_matches, prepare_embedded_model, resolve_model_path

pytestmark = pytest.mark.integration
CHAT = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


def test_converted_model_answers_in_transformers(embedded_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    model = AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.float32)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    inputs = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    reply = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "paris" in reply.lower(), reply


def test_converted_model_answers_in_vllm(embedded_model_dir, tmp_path):
    script = tmp_path / "ask.py"
    script.write_text(
        "from vllm import LLM, SamplingParams\n"
        "if __name__ == '__main__':\n"
        f"    llm = LLM(model={str(embedded_model_dir)!r}, enforce_eager=True, max_model_len=512,\n"
        "              kv_cache_memory_bytes=1 << 28, dtype='bfloat16')\n"
        f"    out = llm.chat({CHAT!r}, SamplingParams(temperature=0, max_tokens=12), use_tqdm=False)\n"
        "    print('REPLY:' + out[0].outputs[0].text)\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    reply = result.stdout.split("REPLY:")[-1]
    assert "paris" in reply.lower(), reply


def test_damaged_cache_is_detected_and_rebuilt(embedded_model_dir, tmp_path):
    copy = tmp_path / embedded_model_dir.name
    shutil.copytree(embedded_model_dir, copy)
    assert _manifest_matches(copy)
    with (copy / "model.safetensors").open("r+b") as weights:
        weights.truncate(1000)  # a partial write
    assert not _manifest_matches(copy)
    rebuilt = prepare_embedded_model("smollm2-135m", cache_dir=tmp_path)
    assert rebuilt == copy and _manifest_matches(rebuilt)
    (rebuilt / MANIFEST).unlink()  # an interrupted build never wrote its manifest
    assert not _manifest_matches(rebuilt)


def test_model_specs_resolve():
    assert resolve_model_path("Qwen/Qwen2.5-3B-Instruct") == "Qwen/Qwen2.5-3B-Instruct"  # hub ids pass through
    with pytest.raises(ValueError, match="unknown embedded model"):
        resolve_model_path("embedded:nope")
