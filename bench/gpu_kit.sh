#!/usr/bin/env bash
# Prepare .gpu/ here, on the CPU machine, for a bare GPU box (no network there, no vLLM, Ray,
# DeepSpeed or TRL): the wheels of the learner's packages at this venv's versions, the tokenizer and the
# random-weight model builder. Then run bench/gpu_check.sh there with .gpu carried along (about 25 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .gpu/whl .gpu/tok
version() { .venv/bin/python -c "import importlib.metadata as m; print(m.version('$1'))"; }
pins=()
for package in trl transformers peft pydantic pydantic_core hjson datasets dill multiprocess annotated-types \
               typing-inspection tokenizers; do
  pins+=("$package==$(version "$package")")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .gpu/whl "${pins[@]}"
# DeepSpeed ships as a source archive; its pure-Python wheel (no ops built) is what the learner needs.
DS_BUILD_OPS=0 .venv/bin/pip wheel -q --no-deps "deepspeed==$(version deepspeed)" -w .gpu/whl
model=$(.venv/bin/python launch/prepare_model.py)
cp "$model"/{tokenizer.json,tokenizer_config.json} .gpu/tok/
cp "$model"/chat_template.jinja .gpu/tok/ 2>/dev/null || true
cp bench/gpu_models.py .gpu/make_models.py
du -sh .gpu
