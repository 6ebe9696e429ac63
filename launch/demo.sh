#!/usr/bin/env bash
# The newcomer demo (run by `make demo` after `make setup`): prepare the embedded model, start a local Ray head,
# submit the self-play job with `ray job submit`, follow its logs, stop the cluster, print the run directory.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV_BIN="$PWD/.venv/bin"
export PATH="$VENV_BIN:$PATH"   # the job's `python` is whatever the Ray head's PATH resolves (FINDINGS.md)
export RAY_AUTH_MODE=token      # Ray 2.60 clusters started with `ray start` require the token
CONFIG="${CONFIG:-configs/tiny-cpu.yaml}"
OUTPUT_DIR="$PWD/runs"
LOG="$(mktemp -t selfplay-demo-XXXX.log)"

echo "demo: preparing the embedded model (one-time download and conversion)"
python launch/prepare_model.py
python launch/evolve.py --config "$CONFIG" --dry-run "run.output_dir=$OUTPUT_DIR" "$@" > /dev/null

echo "demo: starting a local Ray head (dashboard on 127.0.0.1:8265)"
ray stop --force > /dev/null 2>&1 || true
ray start --head --dashboard-host 127.0.0.1 --num-cpus "$(python -c 'import os; print(max(os.cpu_count(), 3))')" \
  --disable-usage-stats > /dev/null
trap 'ray stop --force > /dev/null 2>&1 || true' EXIT

echo "demo: submitting the job; its logs follow"
ray job submit --address http://127.0.0.1:8265 --working-dir . \
  --runtime-env-json '{"excludes": [".venv", "runs", "wandb", ".git", "__pycache__", "*.egg-info", ".pytest_cache"]}' \
  -- python launch/evolve.py --config "$CONFIG" "run.output_dir=$OUTPUT_DIR" "$@" 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then
  echo "demo: the job failed (status $status); its log is in $LOG" >&2
  exit "$status"
fi
grep -o 'run directory: .*' "$LOG" | tail -n 1 | sed 's/^run directory: //'
