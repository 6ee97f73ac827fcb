#!/usr/bin/env bash
# The demo command: sets up what is missing (scripts/setup.sh, the same set-up as the tests),
# then runs scripts/demo.py. Arguments go to it: --ckpt PATH, --image PATH, --out DIR, --steps N,
# --gpu, --ui (start the ComfyUI UI on 127.0.0.1 instead of the headless run).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
eval "$(bash "$repo/scripts/setup.sh" | grep -E '^(VENV|COMFYUI_PATH)=')"
export COMFYUI_PATH
exec "$VENV/bin/python" "$repo/scripts/demo.py" "$@"
