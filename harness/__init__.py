"""A real ComfyUI for the tests, the bench and the demo (not part of the node pack).

- `harness.paths`: where the repository and ComfyUI are, and ComfyUI made importable.
- `harness.comfy`: ComfyUI in this process with the pack loaded, the tiny checkpoint, helpers
  to run nodes, count model calls and measure errors.
- `harness.tiny_checkpoint`: the tiny seeded SD1.x checkpoint.
- `harness.server`: ComfyUI's own `main.py` on 127.0.0.1.
- `harness.workflows`: the example workflows and their API copies.
- `harness.browser`: the real frontend in Debian's headless Chromium.
- `harness.ddim`: DDIM inversion, the approximate baseline the exact methods are measured against.

Import it with the repository root on sys.path, *appended* (the pack's own `nodes/` must
never shadow ComfyUI's `nodes.py`).
"""
