#!/usr/bin/env bash
# The test command: sets up what is missing (scripts/setup.sh), then runs the whole suite
# against a real ComfyUI on the CPU. Extra arguments go to pytest.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
eval "$(bash "$repo/scripts/setup.sh" | grep -E '^(VENV|COMFYUI_PATH)=')"
export COMFYUI_PATH
cd "$repo"
exec "$VENV/bin/python" -m pytest tests -ra "$@"
