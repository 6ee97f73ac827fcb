#!/usr/bin/env bash
# The bench command: sets up what is missing (scripts/setup.sh), then runs bench/run.py on
# the CPU against a real ComfyUI. Extra arguments go to bench.run (--quick, --parts ...,
# --ckpt PATH --images DIR). Tables and plots land in bench/results/.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
eval "$(bash "$repo/scripts/setup.sh" | grep -E '^(VENV|COMFYUI_PATH)=')"
export COMFYUI_PATH
cd "$repo"
exec "$VENV/bin/python" -m bench.run "$@"
