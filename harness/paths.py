"""Where the repository and ComfyUI are, and ComfyUI made importable in this process: the one
module that harness.comfy and harness.tiny_checkpoint both import (neither imports the other).
"""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def comfyui_path():
    path = os.environ.get("COMFYUI_PATH") or os.path.join(REPO, ".comfyui", "ComfyUI")
    if not os.path.isfile(os.path.join(path, "main.py")):
        raise RuntimeError(f"no ComfyUI at {path}: run scripts/setup.sh, or set COMFYUI_PATH to a "
                           "ComfyUI checkout.")
    return os.path.abspath(path)


def import_comfyui():
    """Put ComfyUI first on sys.path (before the repo: the pack's nodes/ must not shadow
    ComfyUI's nodes.py) and set its arguments for in-process use on the CPU, without parsing
    this process's command line. Returns ComfyUI's folder."""
    path = comfyui_path()
    if sys.path[0] != path:
        sys.path.insert(0, path)
    import comfy.options
    comfy.options.enable_args_parsing(False)
    from comfy.cli_args import args
    args.cpu = True
    return path
