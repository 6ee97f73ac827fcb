"""One ComfyUI server, through its HTTP API only (the command needs no file access to it)."""

import http.client
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

UPLOAD_FOLDER = "batch_edit"  # subfolder of the servers' input and output folders
CANCEL_TIMEOUT = 5.0  # seconds per request while stopping: the user is waiting on a Ctrl-C


class Unreachable(Exception):
    """No answer from a server: refused, reset, or timed out."""


class Refused(Exception):
    """The server answered with an HTTP error (it is alive, but will not do this)."""


class ServerGone(Exception):
    def __init__(self, server, reason):
        super().__init__(f"{server.url}: {reason}")
        self.server = server


def new_prompt_id():
    """A prompt id chosen before POST /prompt (both 0.3.75 and 0.33 take one; 0.33 wants a
    canonical UUID), so that a Ctrl-C during the POST still knows which prompt to delete."""
    return str(uuid.uuid4())


def combo_options(spec):
    """The choices of a combo input in /object_info: [[choices], {...}] (classic nodes), or
    ["COMBO", {"options": [choices]}] (newer schema); None when it is neither."""
    if isinstance(spec, list) and spec:
        if isinstance(spec[0], list):
            return spec[0]
        if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
            return spec[1].get("options")
    return None


class Server:
    def __init__(self, url, timeout, retries):
        self.url, self.timeout, self.retries = url, timeout, retries
        self.alive, self.reason = True, None
        self.checked = False  # asked at the start whether it can do the batch (only if there is work)
        self.refusals = 0  # HTTP errors in a row while polling
        self.images = []  # images whose unfinished parts are in this server's queue
        self.ran = 0  # prompts it finished in this run
        self.submitted = 0

    def _request(self, path, data, headers, timeout):
        request = urllib.request.Request(self.url + path, data=data, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.read()
        except urllib.error.HTTPError as error:
            raise Refused(f"{path} -> HTTP {error.code}: {error.read().decode(errors='replace')[:2000]}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException, socket.timeout) as error:
            raise Unreachable(f"{path}: {getattr(error, 'reason', error)}") from None

    def request(self, path, data=None, headers=None, retries=None, timeout=None):
        """The body of the answer; after `retries` unanswered tries in a row, ServerGone."""
        retries = retries or self.retries
        for attempt in range(retries):
            try:
                return self._request(path, data, headers, timeout or self.timeout)
            except Unreachable as error:
                last = error
                if attempt + 1 < retries:
                    time.sleep(min(1.0 * (attempt + 1), 3.0))
        raise ServerGone(self, str(last))

    def get(self, path, **how):
        return json.loads(self.request(path, **how))

    def post(self, path, payload, **how):
        body = self.request(path, json.dumps(payload).encode(), {"Content-Type": "application/json"}, **how)
        return json.loads(body) if body else None

    def upload(self, filename, data):
        """POST /upload/image into input/batch_edit/; returns the name Load Image takes."""
        boundary = uuid.uuid4().hex
        fields = [("type", "input"), ("subfolder", UPLOAD_FOLDER), ("overwrite", "true")]
        body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                        for k, v in fields)
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
                 "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        answer = json.loads(self.request("/upload/image", body,
                                         {"Content-Type": f"multipart/form-data; boundary={boundary}"}))
        return f"{answer['subfolder']}/{answer['name']}" if answer.get("subfolder") else answer["name"]

    def queue(self, prompt, prompt_id, client_id):
        answer = self.post("/prompt", {"prompt": prompt, "prompt_id": prompt_id, "client_id": client_id})
        if answer.get("prompt_id") != prompt_id:  # a server that mints its own ids: follow it
            return answer["prompt_id"]
        return prompt_id

    def queued(self):
        """The ids of the prompts running or waiting in its queue."""
        queue = self.get("/queue")
        return {item[1] for key in ("queue_running", "queue_pending") for item in queue.get(key, [])}

    def history(self, prompt_id):
        return self.get(f"/history/{urllib.parse.quote(prompt_id)}").get(prompt_id)

    def fetch(self, item):
        query = urllib.parse.urlencode({"filename": item["filename"], "subfolder": item.get("subfolder", ""),
                                        "type": item.get("type", "output")})
        return self.request(f"/view?{query}")

    def cancel(self, prompt_ids, client_id):
        """Take this run's prompts off the server: delete those waiting, then interrupt the one
        running if it is ours. Ours are the ids given and any queued under our client_id (a
        prompt whose POST the Ctrl-C cut short). Returns (deleted, interrupted) prompt ids."""
        how = {"retries": 1, "timeout": min(self.timeout, CANCEL_TIMEOUT)}

        def ours(item):
            extra = item[3] if len(item) > 3 and isinstance(item[3], dict) else {}
            return item[1] in prompt_ids or extra.get("client_id") == client_id

        deleted, interrupted = [], []
        # Twice: a POST that the Ctrl-C cut short may reach the queue just after the first look.
        for _ in range(2):
            queue = self.get("/queue", **how)
            pending = [item[1] for item in queue.get("queue_pending", []) if ours(item)]
            if pending:
                self.post("/queue", {"delete": pending}, **how)
            # Deleting first means no prompt of ours can start after the look below; with a
            # prompt_id the server interrupts only that prompt, never another user's.
            running = [item[1] for item in self.get("/queue", **how).get("queue_running", [])
                       if ours(item) and item[1] not in interrupted]
            for prompt_id in running:
                self.post("/interrupt", {"prompt_id": prompt_id}, **how)
            deleted += pending
            interrupted += running
            if not pending and not running:
                break
        return deleted, interrupted

    def check(self, spec, settings):
        """Why this server cannot do the batch, or None: it must answer, have the pack, the
        checkpoint and the scheduler."""
        try:
            invert_class = spec.node_id("Invert")
            info = self.get(f"/object_info/{invert_class}").get(invert_class)
            if not info:
                return f"no {invert_class} node (is the pack installed, and up to date?)"
            schedulers = combo_options(info.get("input", {}).get("required", {}).get("scheduler"))
            if schedulers and settings["scheduler"] not in schedulers:
                return f"no scheduler {settings['scheduler']!r} (it has {', '.join(schedulers)})"
            checkpoints = self.get("/models/checkpoints")
            if settings["ckpt"] not in checkpoints:
                return f"no checkpoint {settings['ckpt']!r} (it has {', '.join(checkpoints) or 'none'})"
        except (ServerGone, Refused) as error:
            return str(error)
        finally:
            self.checked = True
        return None
