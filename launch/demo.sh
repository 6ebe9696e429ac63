#!/usr/bin/env bash
# The newcomer demo (run by `make demo` after `make setup`): prepare the embedded model, start a private local Ray
# head, submit the self-play job with `ray job submit`, follow its logs, stop exactly that head, print the run
# directory as the last line.
#
# The head is the demo's own (launch/ray_head.py): a directory /tmp/selfplay-demo-XXXXXX with its token
# (auth_token, token authentication on) and Ray's temp dir, free ports, and a stop that ends only its processes,
# also when the job fails or on Ctrl-C. Another Ray cluster on the machine is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"   # the job's `python` is whatever the Ray head's PATH resolves (FINDINGS.md)
# Grounded arithmetic self-play with its SFT cold start, evaluated on the shipped held-out calculations before
# training and after the last iteration (configs/arithmetic-cpu.yaml). `CONFIG=configs/X.yaml make demo` runs another
# config, `DEMO_ITERATIONS=N make demo` more iterations.
CONFIG="${CONFIG:-configs/arithmetic-cpu.yaml}"
ITERATIONS="run.iterations=${DEMO_ITERATIONS:-3}"
OUTPUT_DIR="$PWD/runs"
HEAD_DIR="$(mktemp -d /tmp/selfplay-demo-XXXXXX)"
LOG="$(mktemp -t selfplay-demo-XXXXXX.log)"
SUBMISSION_ID="selfplay-demo-$(basename "$HEAD_DIR" | cut -d- -f3)"

FOLLOWER=""
stop_head() {
  if [ -n "$FOLLOWER" ]; then kill "$FOLLOWER" 2> /dev/null || true; fi
  python launch/ray_head.py stop "$HEAD_DIR" --remove || true
}
trap stop_head EXIT
trap 'echo "demo: interrupted; stopping the demo cluster" >&2; exit 130' INT TERM

echo "demo: preparing the embedded model (one-time download and conversion into ~/.cache/selfplay)"
# progress bars and the "no accelerator" warning of a one-time conversion are not news to a user
TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 DS_ACCELERATOR=cpu python launch/prepare_model.py
python launch/evolve.py --config "$CONFIG" --dry-run "$ITERATIONS" "run.output_dir=$OUTPUT_DIR" "$@" > /dev/null

echo "demo: starting a private Ray head in $HEAD_DIR (token auth, free ports)"
ADDRESS="$(python launch/ray_head.py start "$HEAD_DIR")"
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$HEAD_DIR/auth_token" RAY_ADDRESS="$ADDRESS"

echo "demo: submitting the job to $ADDRESS; its logs follow"
ray job submit --no-wait --submission-id "$SUBMISSION_ID" --working-dir . \
  --runtime-env-json '{"excludes": [".venv", "runs", "wandb", ".git", "__pycache__", "*.egg-info", ".pytest_cache"]}' \
  -- python launch/evolve.py --config "$CONFIG" "$ITERATIONS" "run.output_dir=$OUTPUT_DIR" "$@" > "$LOG" 2>&1 \
  || { cat "$LOG" >&2; echo "demo: ray job submit failed" >&2; exit 1; }
# The follower runs in the background so that Ctrl-C or a TERM reaches the trap at once (bash runs a trap only
# after the foreground command ends).
python launch/ray_head.py follow "$HEAD_DIR" "$SUBMISSION_ID" --log "$LOG" &
FOLLOWER=$!
if ! wait "$FOLLOWER"; then
  FOLLOWER=""
  echo "demo: the job failed; its log is in $LOG" >&2
  exit 1
fi
FOLLOWER=""
grep -o 'run directory: .*' "$LOG" | tail -n 1 | sed 's/^run directory: //'
