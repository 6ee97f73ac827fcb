import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Appended, not prepended: the pack's own `nodes/` must never shadow ComfyUI's `nodes.py`.
if REPO not in sys.path:
    sys.path.append(REPO)

import pytest


@pytest.fixture(scope="session")
def comfy(tmp_path_factory):
    """A real ComfyUI in this process with the pack loaded and the tiny checkpoint built.
    Yields ComfyUI's `nodes` module; `nodes.tiny` holds the loaded model, clip and vae."""
    from harness.comfy import start_with_tiny_checkpoint

    return start_with_tiny_checkpoint(str(tmp_path_factory.mktemp("comfy_base")))


@pytest.fixture(scope="module")
def scene(comfy):
    """Prompts and a 2-image latent, encoded by the tiny checkpoint."""
    import torch
    from harness.comfy import drawn_images

    clip, vae = comfy.tiny["clip"], comfy.tiny["vae"]
    encode = comfy.CLIPTextEncode().encode
    with torch.inference_mode():
        return {
            "positive": encode(clip, "a photo of a dog on the beach")[0],
            "negative": encode(clip, "blurry, low quality")[0],
            "edit": encode(clip, "a photo of a cat on the beach")[0],
            "latent": comfy.VAEEncode().encode(vae, drawn_images(batch=2))[0],
        }


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """One real ComfyUI server (main.py --cpu on 127.0.0.1) for every server and browser test,
    over a base directory of its own: the pack, the tiny checkpoint, the drawn input picture
    under the examples' name, and a returning user's UI settings."""
    from harness.server import ComfyServer, prepare_base

    server = ComfyServer(prepare_base(str(tmp_path_factory.mktemp("server_base")))).start()
    yield server
    server.stop()
