"""Where a run's adapters live and how they are read: a PEFT adapter directory, a run checkpoint
(RUN_DIR/checkpoints/iter-N, whose learner/ is a DeepSpeed checkpoint) or a run directory (its latest checkpoint).
Used by launch/eval.py and launch/merge.py."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.roles import Role
from learner.config import LoRAConfig
from selfplay.checkpoint import latest_checkpoint
from selfplay.config import load_config
from selfplay.preflight import RESOLVED_CONFIG

ADAPTER_CONFIG = "adapter_config.json"
# Learner.save_checkpoint writes DeepSpeed's checkpoint into ITER/learner with tag "learner"; with
# exclude_frozen_parameters=True its `module` holds only the LoRA tensors, under the PEFT model's names.
LEARNER_STATES = Path("learner") / "learner" / "mp_rank_00_model_states.pt"
ROLES = tuple(role.value for role in Role)  # with learner.adapters per_role: an adapter each, tag "learner-ROLE"
ADAPTER_NAME = re.compile(r"\.lora_([AB])\.[^.]+\.weight$")  # PEFT's parameter names hold the adapter's name


def role_states(role: str) -> Path:
    """Where a run checkpoint of learner.adapters per_role keeps `role`'s adapter."""
    return LEARNER_STATES.parent.with_name(f"learner-{role}") / LEARNER_STATES.name


class AdapterError(ValueError):
    """An --adapter path that is not a usable adapter or checkpoint (one line)."""


def _of_role(path: Path, role: str | None, found: list[str], where) -> Path:
    if role in found:
        return where(role)
    choice = f"--role {role} is not one of them" if role else "choose one with --role"
    raise AdapterError(f"{path}: one adapter per role ({', '.join(found)}): {choice}")


def resolve_adapter(path: Path, role: str | None = None) -> Path:
    """A PEFT adapter directory as given, or the DeepSpeed model-states file of a run checkpoint. Where there is one
    adapter per role (learner.adapters per_role), `role`'s."""
    if not path.is_dir():
        raise AdapterError(f"{path}: directory not found")
    if (path / ADAPTER_CONFIG).is_file():
        return path
    if found := [name for name in ROLES if (path / name / ADAPTER_CONFIG).is_file()]:
        return _of_role(path, role, found, lambda name: path / name)
    if (path / "checkpoints").is_dir():
        try:
            checkpoint = latest_checkpoint(path)
        except FileNotFoundError as error:
            raise AdapterError(f"{path}: {error}") from None
        if checkpoint is None:
            raise AdapterError(f"{path}: the run has no completed checkpoint (no checkpoints/latest)")
        path = checkpoint
    if (path / LEARNER_STATES).is_file():
        return path / LEARNER_STATES
    if found := [name for name in ROLES if (path / role_states(name)).is_file()]:
        return _of_role(path, role, found, lambda name: path / role_states(name))
    raise AdapterError(f"{path}: neither a PEFT adapter ({ADAPTER_CONFIG}), a run checkpoint "
                       f"({LEARNER_STATES}) nor a run directory (checkpoints/latest)")


def run_dir_of(states_path: Path) -> Path:
    """RUN_DIR of RUN_DIR/checkpoints/iter-N/learner/learner/mp_rank_00_model_states.pt."""
    return states_path.parents[4]


def read_learner_checkpoint(states_path: Path) -> tuple[dict[str, Any], Any]:
    """The LoRA tensors of a learner checkpoint, by PEFT parameter name (as the adapter "default" of a model's only
    adapter, whichever role's it was), and the dtype the learner computed in (bf16 or fp16 when DeepSpeed's mixed
    precision was on, else float32; learner.compute_dtype decides that)."""
    import torch

    states = torch.load(states_path, map_location="cpu", weights_only=True)
    tensors = {name: tensor for name, tensor in states["module"].items() if ".lora_" in name}
    if any(tensor.numel() == 0 for tensor in tensors.values()):  # ZeRO-3 keeps only partitioned placeholders here
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        consolidated = get_fp32_state_dict_from_zero_checkpoint(
            str(states_path.parents[1]), tag=states_path.parent.name, exclude_frozen_parameters=True)
        tensors = {name: tensor for name, tensor in consolidated.items() if ".lora_" in name}
    if not tensors:
        raise AdapterError(f"{states_path}: no LoRA tensors in the checkpoint's module state")
    tensors = {ADAPTER_NAME.sub(r".lora_\1.default.weight", name): tensor for name, tensor in tensors.items()}
    precision = states.get("ds_config", {})
    compute_dtype = (torch.bfloat16 if precision.get("bf16", {}).get("enabled") else
                     torch.float16 if precision.get("fp16", {}).get("enabled") else torch.float32)
    return tensors, compute_dtype


def check_run_lora(states_path: Path, lora: LoRAConfig) -> None:
    """The LoRA scaling (alpha / rank) is not in the weights: the run's saved config must agree with ours."""
    saved = run_dir_of(states_path) / RESOLVED_CONFIG
    if saved.is_file() and load_config(saved).learner.lora != lora:
        raise AdapterError(f"learner.lora of the config differs from the run's {saved}; evaluate with "
                           f"--config {saved}")


@dataclass(frozen=True)
class AdapterWeights:
    """An adapter's LoRA tensors under PEFT's saved names ('X.lora_A.weight', no adapter name) and what the
    weights alone do not say: the scaling of B @ A, the adapted modules and the base model."""

    tensors: dict[str, Any]
    scaling: float
    target_modules: tuple[str, ...]
    base_model: str | None


def read_adapter(path: Path) -> AdapterWeights:
    """The adapter `resolve_adapter` found: a PEFT directory, or a run checkpoint read with its run's config."""
    if path.name != LEARNER_STATES.name:
        from safetensors.torch import load_file

        settings = json.loads((path / ADAPTER_CONFIG).read_text())
        weights_file = path / "adapter_model.safetensors"
        if not weights_file.is_file():
            raise AdapterError(f"{path}: no adapter_model.safetensors")
        rank, alpha = settings.get("r"), settings.get("lora_alpha")
        if not rank or not alpha:
            raise AdapterError(f"{path / ADAPTER_CONFIG}: r and lora_alpha are required")
        scaling = alpha / (rank ** 0.5 if settings.get("use_rslora") else rank)
        targets = settings.get("target_modules") or ()
        return AdapterWeights(load_file(weights_file), scaling,
                              tuple([targets] if isinstance(targets, str) else targets),
                              settings.get("base_model_name_or_path"))
    saved = run_dir_of(path) / RESOLVED_CONFIG
    if not saved.is_file():
        raise AdapterError(f"{path}: the run's {saved} is missing, so its LoRA scaling (alpha / rank) is unknown")
    config = load_config(saved)
    tensors, _ = read_learner_checkpoint(path)
    return AdapterWeights({name.replace(".default.", "."): tensor for name, tensor in tensors.items()},
                          config.learner.lora.alpha / config.learner.lora.rank, config.learner.lora.target_modules,
                          config.model.path)
