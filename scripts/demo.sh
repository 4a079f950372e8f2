#!/usr/bin/env bash
# The main job: `eigenloop quickstart` — synthesize tasks, SFT, user-model SFT, GRPO, evaluate, report — with
# every service as a local process on loopback. Extra arguments go to quickstart (e.g. `make demo ARGS=--fast`).
# Run again with the same folder and it resumes after the last finished stage (a finished run just prints
# its summary again).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${QUICKSTART_OUT:-quickstart-out}"
resume=()
if [ -f "$out/config.yaml" ]; then
    resume=(--resume)
fi
exec .venv/bin/eigenloop quickstart --out "$out" "${resume[@]}" "$@"
