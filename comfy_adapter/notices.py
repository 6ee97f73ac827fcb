"""Messages a user must see on the node, not only in the log: the exact-range and drift
warnings, "following the latent's own settings", a model other than the one that inverted.

Users watch the UI, not the terminal. ComfyUI (0.3.75 and 0.33.0) has one public way for a
running node to put text on itself: PromptServer.send_progress_text(text, node_id), which
the frontend shows as a read-only text preview on that node (widget "$$node-text-preview").
Each node run collects its notices in a `Notices` and re-sends all of them at each new one,
since a new text replaces the last. Without a server (in-process tests, scripts), or off
the executing thread, the log is the only place: every notice goes to the log as well.
"""

import logging

log = logging.getLogger("exact_inversion")
SIGNS = {True: "\u26a0", False: "\u2139"}  # a warning's sign, an info's


def _executing_node_id():
    """The id of the node ComfyUI is executing on this thread, or None. The one version shim
    for it: comfy_execution.utils.get_executing_context is where 0.3.75 and 0.33.0 keep it."""
    try:
        from comfy_execution.utils import get_executing_context
    except ImportError:
        return None
    context = get_executing_context()
    return None if context is None else context.node_id


def _send_to_node(node_id, text):
    try:
        from server import PromptServer
    except ImportError:
        return
    server = getattr(PromptServer, "instance", None)
    if server is not None and hasattr(server, "send_progress_text"):
        # To the client that queued the prompt, as ComfyUI sends its progress; None: everyone.
        server.send_progress_text(text, node_id, getattr(server, "client_id", None))


class Notices:
    """The notices of one node run. `node` is the display name messages start with."""

    def __init__(self, node):
        self.node = node
        self.texts = []
        self.node_id = _executing_node_id()

    def warn(self, text, level=logging.WARNING):
        """Log `text` and show it, with the run's earlier notices, on the node: a warning
        under the warning sign, an info under the information sign."""
        if not text:
            return
        log.log(level, "%s: %s", self.node, text)
        self.texts.append(f"{SIGNS[level >= logging.WARNING]} {text}")
        if self.node_id is not None:
            _send_to_node(self.node_id, "\n\n".join(self.texts))

    def info(self, text):
        self.warn(text, logging.INFO)
