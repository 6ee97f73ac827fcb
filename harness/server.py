"""A real ComfyUI server (main.py --cpu) on 127.0.0.1, for tests and the demo."""

import asyncio
import json
import struct
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import aiohttp

from .comfy import comfyui_path, drawn_images, make_base_directory


def prepare_base(base, picture_size=64):
    """Lay out a server's base directory (see make_base_directory) with the drawn picture as
    the examples' input image and a returning user's UI settings. Returns base."""
    from PIL import Image

    from .browser import write_user_settings
    from .workflows import INPUT_IMAGE

    make_base_directory(base)
    picture = (drawn_images(batch=1, size=picture_size)[0].numpy() * 255).round().astype("uint8")
    Image.fromarray(picture).save(os.path.join(base, "input", INPUT_IMAGE))
    write_user_settings(base)
    return base


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ComfyServer:
    """main.py run over a private base directory (models, custom_nodes, input, output)."""

    def __init__(self, base, port=None, log_path=None, cpu=True):
        self.base, self.port, self.cpu = base, port or free_port(), cpu
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path or os.path.join(base, "server.log")
        self.process = None

    def start(self, timeout=180):
        command = [sys.executable, os.path.join(comfyui_path(), "main.py"),
                   "--listen", "127.0.0.1", "--port", str(self.port),
                   "--base-directory", self.base, "--preview-method", "latent2rgb"]
        if self.cpu:
            command.append("--cpu")
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(command, cwd=comfyui_path(), stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}:\n{self.log()}")
            try:
                self.get("/system_stats")
                return self
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"ComfyUI did not answer within {timeout} s:\n{self.log()}")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if self.process:
            self._log.close()

    def log(self):
        with open(self.log_path) as f:
            return f.read()[-6000:]

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read())

    def post(self, path, payload):
        request = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"POST {path} -> {error.code}: {error.read().decode()}") from None
        return json.loads(body) if body else None

    def run_prompt(self, prompt, timeout=300):
        """Queue an API-format prompt and wait for its history entry."""
        prompt_id = self.post("/prompt", {"prompt": prompt})["prompt_id"]
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                entry = history[prompt_id]
                if entry["status"]["status_str"] in ("success", "error"):
                    return entry
            time.sleep(0.3)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s:\n{self.log()}")

    def listen(self, client_id):
        """What the UI hears: the /ws messages (progress, execution_*) sent to client_id,
        collected by a background thread into the returned list as they arrive. A node's text
        (PromptServer.send_progress_text, a binary frame of type 3) is collected as
        {"type": "progress_text", "data": {"node": id, "text": text}}."""
        messages, connected = [], threading.Event()

        async def receive():
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(f"{self.url}/ws?clientId={client_id}") as socket_:
                    connected.set()
                    async for message in socket_:
                        if message.type == aiohttp.WSMsgType.TEXT:
                            messages.append(json.loads(message.data))
                        elif message.type == aiohttp.WSMsgType.BINARY:
                            text = progress_text(message.data)
                            if text is not None:
                                messages.append({"type": "progress_text", "data": text})

        threading.Thread(target=asyncio.run, args=(receive(),), daemon=True).start()
        if not connected.wait(30):
            raise TimeoutError("no websocket connection to ComfyUI")
        return messages


def progress_text(frame):
    """{"node", "text"} of a binary /ws frame that carries a node's text (event type 3: a
    4-byte type, a 4-byte node id length, the id, the UTF-8 text), else None."""
    if len(frame) < 8 or struct.unpack(">I", frame[:4])[0] != 3:
        return None
    length = struct.unpack(">I", frame[4:8])[0]
    return {"node": frame[8:8 + length].decode(), "text": frame[8 + length:].decode()}


def cached_nodes(entry):
    """The ids of the nodes a finished prompt took from ComfyUI's cache instead of running."""
    return {node for kind, data in entry["status"]["messages"] if kind == "execution_cached"
            for node in data["nodes"]}
