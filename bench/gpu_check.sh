#!/usr/bin/env bash
# The learner's checks on a bare GPU box, in one run (.gpu/ made by bench/gpu_kit.sh and carried along). Each check
# writes its JSON line to $OUT/NAME.json (stderr to NAME.err) and prints one summary line; LIMIT bounds each check
# in seconds (default 120: the set-up and four checks stay under the device tool's 10 minutes a command).
# Random-weight Qwen2.5 shapes: 0.5B for the smoke checks, 3B for the benchmarks.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-.gpu/out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .gpu/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 WANDB_MODE=disabled PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 .gpu/make_models.py --3b
check() {
  local name=$1
  shift
  timeout "${LIMIT:-120}" python3 "$@" >"$out/$name.json" 2>"$out/$name.err"
  echo "$name: rc $? $(tail -n 1 "$out/$name.json" | cut -c 1-600)"
}
check smoke bench/gpu_smoke.py --model /tmp/qwen05b
check smoke-packed bench/gpu_smoke.py --model /tmp/qwen05b --pack --attn flex_attention
shape=(--model /tmp/qwen3b --batch 16 --prompt-tokens 256 --completion-tokens 512 --completion-min 32
       --micro-batch-tokens 16384)
check learner bench/learner.py "${shape[@]}"
check learner-packed bench/learner.py "${shape[@]}" --pack --attn flex_attention
