"""The installed environment imports the whole stack (the CUDA torchvision trap breaks `import transformers`)."""

import importlib
import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["transformers", "vllm", "ray", "deepspeed", "peft", "trl", "wandb",
                                    "math_verify", "datasketch", "gguf"])
def test_stack_imports(module):
    # A fresh interpreter per module: import side effects (vLLM's platform detection) stay out of the test process.
    result = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_transformers_llama_imports_beside_torch():
    from transformers import LlamaConfig  # failed with 'operator torchvision::nms does not exist' when present

    assert LlamaConfig(num_hidden_layers=1).num_hidden_layers == 1


def test_pure_packages_do_not_import_heavy_backends():
    """Algorithm code stays importable without Ray, vLLM, DeepSpeed or W&B (DESIGN.md boundaries)."""
    code = ("import sys; import agents.parsing, agents.prompts, rewards.scores, rewards.rubric, learner.grpo, "
            "learner.packing, selfplay.question_pool, selfplay.config, selfplay.evaluation, selfplay.scoring; "
            "bad = [m for m in ('ray', 'vllm', 'deepspeed', 'wandb') if m in sys.modules]; print(bad)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_no_cuda_torchvision_on_cpu_profile():
    import torch

    if torch.version.cuda is None:
        assert importlib.util.find_spec("torchvision") is None
