"""The learner's weights as files: a PEFT adapter (what every weight sync ships), LoRA-merged full weights (what an
evaluation serves), and the merge of an adapter into base weights read from disk (what an engine synced by merged
weights serves, merged in its own process).

Exports are written in the engines' dtype into a fresh directory per version (never overwritten, so an engine
can never read a half-written version), then renamed into place.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
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
    """Standard PEFT layout (adapter_config.json + adapter_model.safetensors) with tensors cast to `dtype`: at the
    top of `target` for a model's only adapter ("default"), in a subdirectory named after each adapter otherwise."""
    scratch = target.with_name(target.name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    peft_model.save_pretrained(scratch, safe_serialization=True)
    for weights_path in scratch.rglob("adapter_model.safetensors"):
        tensors = {name: tensor.to(dtype).contiguous() for name, tensor in load_file(weights_path).items()}
        save_file(tensors, weights_path, metadata={"format": "pt"})
    return _finish(scratch, target)


SHARD_BYTES = 2 << 30  # a merged export is written in files of at most this much (one tensor may exceed it)
INDEX = "model.safetensors.index.json"  # transformers' and vLLM's name for a sharded checkpoint's weight map


@torch.no_grad()
def merged_tensors(peft_model, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    """Base weights with each LoRA delta (B @ A * scaling) added in float32, under the base model's parameter names,
    one at a time and on the CPU in `dtype`: a GPU never holds more than one merged tensor beside the model."""
    from peft.tuners.lora import LoraLayer

    base = peft_model.get_base_model()
    adapter = peft_model.active_adapter
    merged_names = set()
    for module_name, module in base.named_modules():
        if isinstance(module, LoraLayer):
            weight = module.get_base_layer().weight
            delta = module.get_delta_weight(adapter).to(torch.float32)
            merged_names.add(f"{module_name}.weight")
            yield f"{module_name}.weight", (weight.to(torch.float32) + delta).to(dtype).cpu().contiguous()
    tied = getattr(base.config, "tie_word_embeddings", False)  # safetensors refuses shared storage: lm_head goes
    for name, tensor in base.state_dict().items():
        if ".lora_" in name or ".base_layer." in name or name in merged_names or (tied and name == "lm_head.weight"):
            continue
        yield name, tensor.to(dtype).cpu().contiguous()


def export_merged(peft_model, target: Path, dtype: torch.dtype, shard_bytes: int = SHARD_BYTES) -> Path:
    """A loadable model directory holding the merged weights: config.json and model.safetensors, or, past
    `shard_bytes`, files model-00001.safetensors, ... and their index. Written shard by shard, so the learner
    never holds the whole merged model (a 3B model's is 6 GB in bf16, 12 in float32). Raises OSError, one line,
    before writing anything when the filesystem has no room for it."""
    from learner.weights import MIB, free_bytes

    needed, free = export_bytes(peft_model, merged=True, dtype=dtype), free_bytes(target.parent)
    if free < needed:
        raise OSError(f"merged export needs {needed / MIB:.0f} MiB, {target.parent} has {free / MIB:.0f} MiB free: "
                      f"make room there or write it elsewhere")
    scratch = target.with_name(target.name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    peft_model.get_base_model().config.save_pretrained(scratch)
    weight_map: dict[str, str] = {}
    shard: dict[str, torch.Tensor] = {}
    shard_size = total = 0
    files: list[str] = []

    def write_shard() -> None:
        files.append(f"model-{len(files) + 1:05d}.safetensors")
        save_file(shard, scratch / files[-1], metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, files[-1]))
        shard.clear()

    for name, tensor in merged_tensors(peft_model, dtype):
        size = tensor.numel() * tensor.element_size()
        if shard and shard_size + size > shard_bytes:
            write_shard()
            shard_size = 0
        shard[name] = tensor
        shard_size += size
        total += size
    write_shard()
    if len(files) == 1:
        os.replace(scratch / files[0], scratch / "model.safetensors")
    else:
        (scratch / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    return _finish(scratch, target)


LORA_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<factor>[AB])\.weight$")


def base_weight_files(base_dir: Path) -> list[Path]:
    """A model directory's safetensors files: those its index names, else every one there."""
    index = base_dir / INDEX
    if index.exists():
        return sorted({base_dir / name for name in json.loads(index.read_text())["weight_map"].values()})
    return sorted(base_dir.glob("*.safetensors"))


def merged_from_adapter(base_dir: str, adapter_dir: str, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    """The base model's weights (read from `base_dir`) with the PEFT adapter's deltas B @ A * alpha / r added in
    float32, one tensor at a time, in `dtype`: what an engine synced by merged weights loads, so that only the
    adapter (megabytes) travels and no process ever holds a whole merged copy. Checked here, before the caller
    starts loading: an unreadable adapter, an rsLoRA or DoRA one, or one with a module the base lacks raises."""
    adapter = Path(adapter_dir)
    config = json.loads((adapter / "adapter_config.json").read_text())
    if config.get("use_rslora") or config.get("use_dora"):
        raise ValueError(f"adapter {adapter}: rsLoRA and DoRA adapters cannot be merged here")
    factors: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in load_file(adapter / "adapter_model.safetensors").items():
        key = LORA_KEY.match(name)
        if key is None:
            raise ValueError(f"adapter {adapter}: {name!r} is not a LoRA factor")
        factors.setdefault(f"{key['module']}.weight", {})[key["factor"]] = tensor
    files = base_weight_files(Path(base_dir))
    names = set()
    for file in files:
        with safe_open(str(file), "pt") as weights:
            names.update(weights.keys())
    missing = sorted(set(factors) - names) + sorted(name for name, pair in factors.items() if len(pair) != 2)
    if missing:
        raise ValueError(f"adapter {adapter}: no base weight or no A/B pair for {missing[:3]} in {base_dir}")
    return _merged(files, factors, config["lora_alpha"] / config["r"], dtype)


def _merged(files: list[Path], factors: dict[str, dict[str, torch.Tensor]], scaling: float,
            dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    for file in files:
        with safe_open(str(file), "pt") as weights:
            for name in weights.keys():
                tensor = weights.get_tensor(name)
                if name in factors:
                    delta = factors[name]["B"].to(torch.float32) @ factors[name]["A"].to(torch.float32)
                    tensor = tensor.to(torch.float32) + delta * scaling
                yield name, tensor.to(dtype)
