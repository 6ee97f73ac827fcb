"""ComfyUI entry point of the exact-inversion node pack (EDICT, BDIA, O-BELM, Rex)."""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

# Served by ComfyUI at /extensions/<pack>/: docs/<NodeId>.md is each node's help page in the
# frontend's node help panel (made by `python -m harness.node_docs`).
WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
