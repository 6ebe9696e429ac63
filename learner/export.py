"""Export the learner's weights for the rollout engines: a PEFT adapter, or LoRA-merged full weights.

Both are written in the engines' dtype into a fresh directory per version (never overwritten, so an engine
can never read a half-written version), then renamed into place.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def peft_lora_config(lora):
    """The PEFT LoraConfig of a `selfplay.config.LoRAConfig`: the one adapter shape the learner trains, the
    evaluation rebuilds from checkpoints and the TRL baseline uses."""
    from peft import LoraConfig

    return LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=list(lora.target_modules), task_type="CAUSAL_LM")


CONFIG_BYTES = 1 << 20  # config files and safetensors headers, generously


def export_bytes(peft_model, merged: bool, dtype: torch.dtype) -> int:
    """About the disk one export takes: merged, each base weight once (tied ones share storage) in `dtype`; an
    adapter, its LoRA weights in `dtype` or their own dtype where larger (PEFT writes them so first)."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    sizes = {}
    for name, tensor in peft_model.state_dict().items():
        if (".lora_" in name) != merged:
            sizes[tensor.data_ptr()] = tensor.numel() * (itemsize if merged else max(itemsize, tensor.element_size()))
    return sum(sizes.values()) + CONFIG_BYTES


def _finish(scratch: Path, target: Path) -> Path:
    if target.exists():
        shutil.rmtree(target)
    os.replace(scratch, target)
    return target


def export_adapter(peft_model, target: Path, dtype: torch.dtype) -> Path:
    """Standard PEFT layout (adapter_config.json + adapter_model.safetensors) with tensors cast to `dtype`."""
    scratch = target.with_name(target.name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    peft_model.save_pretrained(scratch, safe_serialization=True)
    weights_path = scratch / "adapter_model.safetensors"
    tensors = {name: tensor.to(dtype).contiguous() for name, tensor in load_file(weights_path).items()}
    save_file(tensors, weights_path, metadata={"format": "pt"})
    return _finish(scratch, target)


@torch.no_grad()
def merged_state_dict(peft_model, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Base weights with each LoRA delta (B @ A * scaling) added, under the base model's parameter names."""
    from peft.tuners.lora import LoraLayer

    base = peft_model.get_base_model()
    adapter = peft_model.active_adapter
    merged: dict[str, torch.Tensor] = {}
    for module_name, module in base.named_modules():
        if isinstance(module, LoraLayer):
            weight = module.get_base_layer().weight
            delta = module.get_delta_weight(adapter).to(torch.float32)
            merged[f"{module_name}.weight"] = (weight.to(torch.float32) + delta).to(dtype)
    for name, tensor in base.state_dict().items():
        if ".lora_" in name or ".base_layer." in name:
            continue
        merged.setdefault(name, tensor.to(dtype))
    if getattr(base.config, "tie_word_embeddings", False):
        merged.pop("lm_head.weight", None)  # tied to embed_tokens; safetensors refuses shared storage
    return {name: tensor.contiguous() for name, tensor in merged.items()}


def export_merged(peft_model, target: Path, dtype: torch.dtype) -> Path:
    """A loadable model directory (config.json + model.safetensors) holding the merged weights."""
    scratch = target.with_name(target.name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    peft_model.get_base_model().config.save_pretrained(scratch)
    save_file(merged_state_dict(peft_model, dtype), scratch / "model.safetensors", metadata={"format": "pt"})
    return _finish(scratch, target)
