import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Appended, not prepended: the pack's own `nodes/` must never shadow ComfyUI's `nodes.py`.
if REPO not in sys.path:
    sys.path.append(REPO)
