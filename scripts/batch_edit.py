"""Batch editing through ComfyUI's HTTP API: every image of a manifest inverted once (EDICT or
BDIA) and edited with each of its edit prompts, on one or more ComfyUI servers.

    python -m scripts.batch_edit MANIFEST --server URL [--server URL ...] --out DIR
        [--method edict|bdia] [--steps 50] [--cfg 3] [--denoise 0.8] [--ckpt NAME]

Run it from the repository root, with any Python that has tqdm, numpy and safetensors (the
project's .venv has them). The servers are ordinary ComfyUI servers with this pack installed
and the checkpoint --ckpt in their models/checkpoints; the script needs no file access to them.

Manifest: JSON or CSV (by the file's extension); image paths are relative to the manifest.

  JSON, a list (or {"images": [...]}) of one object per image:
      [{"image": "photos/dog.png", "source": "a photo of a dog on the beach",
        "edits": ["a photo of a cat on the beach", "a photo of a fox on the beach"]}, ...]
  CSV, a header row image,source,edit and one row per edit; further rows of the same image
  repeat its path (their source may be left empty):
      image,source,edit
      photos/dog.png,a photo of a dog on the beach,a photo of a cat on the beach
      photos/dog.png,,a photo of a fox on the beach

How it runs. Images go to the servers round-robin, whole: each image is uploaded (POST
/upload/image) to one server and all its prompts (POST /prompt) go to that server's queue at
once, one after the other; each server's own queue does the rest, and the script only polls
(GET /queue, GET /history/<id>) and fetches the results (GET /view). Per image: first the round
trip (Load Image -> VAE Encode -> Invert with the source prompt -> Sample with the SAME prompt,
the input latent and the reconstruction saved by SaveLatent: their relative error is the
round-trip error), then one prompt per edit (the same Load Image -> VAE Encode -> Invert, then
Sample with the edit prompt -> [Latent Pair Mix] -> VAE Decode -> Save Image). The inversion
part is identical in all of them, so ComfyUI's cache runs it once per image: the history of
each edit lists the Invert node under execution_cached, and the report says so ("inversion
reused"). This needs ComfyUI's default cache (not --cache-none), and holds because an image's
prompts follow one another in one queue.

A server that stops answering (connection refused, or --timeout seconds without an answer,
--retries times in a row) is dropped: its unfinished images go, whole, round-robin to the
servers left. The run fails (exit 2) only when no server is left; an image whose prompt
ComfyUI rejects or fails is reported and the run ends with exit 1.

Output (--out DIR):
  DIR/<name>/edit_<k>.png   the k-th edit of the image <name> (the image file's stem)
  DIR/<name>/record.json    what made them: settings, prompts, round-trip error, server, time
  DIR/report.md, DIR/report.json   every image: round-trip error, each edit's file, server, time

Resumable: an edit whose file exists and whose record matches the image, its prompts and the
settings is not run again, nor is a round trip already recorded; a rerun of a finished batch
submits nothing.
"""

import argparse
import csv
import hashlib
import http.client
import itertools
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import numpy as np
from safetensors.numpy import load as load_safetensors
from tqdm import tqdm

DEFAULT_SERVER = "http://127.0.0.1:8188"
DEFAULT_CKPT = "v1-5-pruned-emaonly.safetensors"  # what the example workflows load
DEFAULT_NEGATIVE = "blurry, low quality"
CLASSES = {"edict": ("EDICTInvert", "EDICTSample"), "bdia": ("BDIAInvert", "BDIASample")}
ROUND_TRIP = "round_trip"  # the part of an image that measures the round trip; edits are 0, 1, ...
UPLOAD_FOLDER = "batch_edit"  # subfolder of the servers' input and output folders


# ---------------------------------------------------------------- manifest, settings, records

def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m scripts.batch_edit", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("manifest", help="JSON or CSV manifest (see below)")
    parser.add_argument("--server", action="append", metavar="URL",
                        help=f"a ComfyUI server; repeat for several (default {DEFAULT_SERVER})")
    parser.add_argument("--out", required=True, metavar="DIR", help="where the edits and the report go")
    parser.add_argument("--method", choices=sorted(CLASSES), default="edict", help="default edict")
    parser.add_argument("--steps", type=int, default=50, help="steps of Invert and Sample (default 50)")
    parser.add_argument("--cfg", type=float, default=3.0, help="default 3")
    parser.add_argument("--denoise", type=float, default=0.8, help="default 0.8")
    parser.add_argument("--ckpt", default=DEFAULT_CKPT, help=f"checkpoint name on the servers (default {DEFAULT_CKPT})")
    parser.add_argument("--negative", default=DEFAULT_NEGATIVE, help=f"negative prompt (default {DEFAULT_NEGATIVE!r})")
    parser.add_argument("--scheduler", default="normal", help="default normal")
    parser.add_argument("--mix-weight", type=float, default=0.93, help="EDICT's p (default 0.93, as the examples)")
    parser.add_argument("--gamma", type=float, default=0.94, help="BDIA's gamma (default 0.94, as the examples)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds one HTTP request may take (default 30)")
    parser.add_argument("--retries", type=int, default=3,
                        help="failed requests in a row after which a server counts as gone (default 3)")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between polls of the queues (default 0.5)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    args.server = [url.rstrip("/") for url in (args.server or [DEFAULT_SERVER])]
    if len(set(args.server)) != len(args.server):
        parser.error("a server is listed twice")
    return args


def read_manifest(path):
    """[{image (absolute path), source, edits}] in manifest order, one entry per image."""
    folder = os.path.dirname(os.path.abspath(path))
    entries = []
    if path.lower().endswith(".csv"):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        by_image = {}
        for number, row in enumerate(rows, start=2):
            if not {"image", "source", "edit"} <= set(row):
                raise SystemExit(f"{path}: the header must be image,source,edit")
            image, source, edit = (row[k].strip() if row[k] else "" for k in ("image", "source", "edit"))
            if not image:
                continue
            entry = by_image.get(image)
            if entry is None:
                entry = by_image[image] = {"image": image, "source": source, "edits": []}
                entries.append(entry)
            elif source and source != entry["source"]:
                raise SystemExit(f"{path}, line {number}: {image} has two source prompts")
            if edit:
                entry["edits"].append(edit)
    else:
        with open(path) as f:
            data = json.load(f)
        entries = data["images"] if isinstance(data, dict) else data
        if not isinstance(entries, list):
            raise SystemExit(f"{path}: expected a list of {{image, source, edits}} objects")
        entries = [dict(e, edits=[e["edits"]] if isinstance(e.get("edits"), str) else list(e.get("edits") or []))
                   for e in entries]
    seen = set()
    for entry in entries:
        if not entry.get("image") or not entry.get("source") or not entry["edits"]:
            raise SystemExit(f"{path}: every image needs an image path, a source prompt and at least one edit "
                             f"(see --help): {entry}")
        entry["image"] = os.path.normpath(os.path.join(folder, entry["image"]))
        if entry["image"] in seen:
            raise SystemExit(f"{path}: {entry['image']} is listed twice")
        if not os.path.isfile(entry["image"]):
            raise SystemExit(f"{path}: no image {entry['image']}")
        seen.add(entry["image"])
    return entries


def settings_of(args):
    """What, beside the image and its prompts, decides the outputs: a record made with other
    settings is stale."""
    extra = {"mix_weight": args.mix_weight} if args.method == "edict" else {"gamma": args.gamma}
    return {"method": args.method, "steps": args.steps, "cfg": args.cfg, "denoise": args.denoise,
            "scheduler": args.scheduler, "ckpt": args.ckpt, "negative": args.negative, **extra}


def write_atomically(path, data):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class Image:
    """One image of the manifest: its prompts, its record in DIR/<name>/record.json, and the
    parts still to run (ROUND_TRIP and edit indices) with the server and prompt ids they wait on."""

    def __init__(self, entry, name, out, settings):
        self.path, self.source, self.edits, self.name = entry["image"], entry["source"], entry["edits"], name
        self.dir = os.path.join(out, name)
        with open(self.path, "rb") as f:
            self.data = f.read()
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        self.settings = settings
        fresh = {"image": self.path, "sha256": self.sha256, "source": self.source, "settings": settings,
                 "round_trip": None, "edits": {}}
        try:
            with open(self.record_path) as f:
                record = json.load(f)
        except (OSError, ValueError):
            record = None
        if not record or any(record.get(k) != fresh[k] for k in ("sha256", "source", "settings")):
            record = fresh  # none yet, or made from another picture, prompt or settings: all again
        self.record = record
        self.failed = {}  # part -> error message
        self.server, self.prompt_ids = None, {}  # where its unfinished parts wait, part -> prompt id

    @property
    def record_path(self):
        return os.path.join(self.dir, "record.json")

    def edit_file(self, k):
        return os.path.join(self.dir, f"edit_{k + 1}.png")

    def done(self, part):
        if part == ROUND_TRIP:
            return self.record["round_trip"] is not None
        entry = self.record["edits"].get(str(part))
        return bool(entry) and entry["prompt"] == self.edits[part] and os.path.isfile(self.edit_file(part))

    def pending(self):
        return [p for p in [ROUND_TRIP, *range(len(self.edits))] if not self.done(p) and p not in self.failed]

    def save_record(self):
        os.makedirs(self.dir, exist_ok=True)
        write_atomically(self.record_path, json.dumps(self.record, indent=1).encode())


def image_names(entries):
    """DIR/<name> per image: the file's stem, with -2, -3, ... for stems met again."""
    names, used = [], set()
    for entry in entries:
        stem = os.path.splitext(os.path.basename(entry["image"]))[0]
        name, n = stem, 1
        while name in used:
            n += 1
            name = f"{stem}-{n}"
        used.add(name)
        names.append(name)
    return names


# ---------------------------------------------------------------- the prompts

def prompt_for(image, part, upload_name, args):
    """The API-format prompt of one part of an image. The nodes up to and including "invert" are
    the same in every part of the image, so ComfyUI's cache runs them once."""
    invert_class, sample_class = CLASSES[args.method]
    extra = ({"mix_weight": args.mix_weight, "leapfrog": True} if args.method == "edict"
             else {"gamma": args.gamma})
    schedule = {"steps": args.steps, "cfg": args.cfg, "scheduler": args.scheduler, "denoise": args.denoise, **extra}
    prompt = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": args.ckpt}},
        "source": {"class_type": "CLIPTextEncode", "inputs": {"text": image.source, "clip": ["ckpt", 1]}},
        "negative": {"class_type": "CLIPTextEncode", "inputs": {"text": args.negative, "clip": ["ckpt", 1]}},
        "image": {"class_type": "LoadImage", "inputs": {"image": upload_name}},
        "encode": {"class_type": "VAEEncode", "inputs": {"pixels": ["image", 0], "vae": ["ckpt", 2]}},
        "invert": {"class_type": invert_class, "inputs": {
            **schedule, "model": ["ckpt", 0], "positive": ["source", 0], "negative": ["negative", 0],
            "latent_image": ["encode", 0]}},
    }
    positive = "source" if part == ROUND_TRIP else "edit"
    prompt["sample"] = {"class_type": sample_class, "inputs": {
        **schedule, "seed": 0, "model": ["ckpt", 0], "positive": [positive, 0], "negative": ["negative", 0],
        "latent_image": ["invert", 0]}}
    prefix = f"{UPLOAD_FOLDER}/{image.name}"
    if part == ROUND_TRIP:
        prompt["save_input"] = {"class_type": "SaveLatent",
                                "inputs": {"samples": ["encode", 0], "filename_prefix": f"{prefix}_input"}}
        prompt["save_round_trip"] = {"class_type": "SaveLatent",
                                     "inputs": {"samples": ["sample", 0], "filename_prefix": f"{prefix}_round_trip"}}
        return prompt
    prompt["edit"] = {"class_type": "CLIPTextEncode", "inputs": {"text": image.edits[part], "clip": ["ckpt", 1]}}
    latent = ["sample", 0]
    if args.method == "edict":  # the example's Latent Pair Mix: the average of the EDICT pair
        prompt["mix"] = {"class_type": "LatentPairMix", "inputs": {"latent": latent, "weight": 0.5}}
        latent = ["mix", 0]
    prompt["decode"] = {"class_type": "VAEDecode", "inputs": {"samples": latent, "vae": ["ckpt", 2]}}
    prompt["save"] = {"class_type": "SaveImage",
                      "inputs": {"images": ["decode", 0], "filename_prefix": f"{prefix}_edit{part + 1}"}}
    return prompt


# ---------------------------------------------------------------- the servers

class Unreachable(Exception):
    """No answer from a server: refused, reset, or timed out."""


class Refused(Exception):
    """The server answered with an HTTP error (it is alive, but will not do this)."""


class ServerGone(Exception):
    def __init__(self, server, reason):
        super().__init__(f"{server.url}: {reason}")
        self.server = server


class Server:
    def __init__(self, url, args):
        self.url, self.timeout, self.retries = url, args.timeout, args.retries
        self.alive, self.reason = True, None
        self.checked = False  # asked at the start whether it can do the batch (only if there is work)
        self.refusals = 0  # HTTP errors in a row while polling
        self.images = []  # images whose unfinished parts are in this server's queue
        self.ran = 0  # prompts it finished in this run
        self.submitted = 0

    def _request(self, path, data=None, headers=None):
        request = urllib.request.Request(self.url + path, data=data, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as error:
            raise Refused(f"{path} -> HTTP {error.code}: {error.read().decode(errors='replace')[:2000]}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException, socket.timeout) as error:
            raise Unreachable(f"{path}: {getattr(error, 'reason', error)}") from None

    def request(self, path, data=None, headers=None):
        """The body of the answer; after `retries` unanswered tries in a row, ServerGone."""
        for attempt in range(self.retries):
            try:
                return self._request(path, data, headers)
            except Unreachable as error:
                last = error
                if attempt + 1 < self.retries:
                    time.sleep(min(1.0 * (attempt + 1), 3.0))
        raise ServerGone(self, str(last))

    def get(self, path):
        return json.loads(self.request(path))

    def post(self, path, payload):
        body = self.request(path, json.dumps(payload).encode(), {"Content-Type": "application/json"})
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

    def check(self, args):
        """Why this server cannot do the batch, or None: it must answer, have the pack and the checkpoint."""
        try:
            invert_class = CLASSES[args.method][0]
            if not self.get(f"/object_info/{invert_class}"):
                return f"no {invert_class} node (is the pack installed?)"
            checkpoints = self.get("/models/checkpoints")
            if args.ckpt not in checkpoints:
                return f"no checkpoint {args.ckpt!r} (it has {', '.join(checkpoints) or 'none'})"
        except (ServerGone, Refused) as error:
            return str(error)
        finally:
            self.checked = True
        return None


# ---------------------------------------------------------------- the run

class Batch:
    def __init__(self, args, images, servers):
        self.args, self.images, self.servers = args, images, servers
        self.client_id = uuid.uuid4().hex
        self.turn = itertools.count()
        self.to_submit = []  # images waiting for a server, in order
        self.missing = {}  # prompt id -> polls that found it neither queued nor in history
        self.resubmitted = 0
        self.ran_ids = set()  # the prompts whose outputs this run collected
        self.events = []
        self.bar = None

    def say(self, message):
        self.events.append(message)
        (self.bar.write if self.bar else print)(f"[batch_edit] {message}", file=sys.stderr)

    def alive(self):
        return [s for s in self.servers if s.alive]

    def next_server(self):
        alive = self.alive()
        if not alive:
            raise SystemExit(2)
        return alive[next(self.turn) % len(alive)]

    def run(self):
        self.to_submit = [image for image in self.images if image.pending()]
        total = sum(len(image.pending()) for image in self.to_submit)
        skipped = sum(len(image.edits) + 1 for image in self.images) - total
        if skipped:
            self.say(f"{skipped} outputs of earlier runs kept; {total} to make")
        self.bar = tqdm(total=total, unit="prompt", desc="batch edit", disable=self.args.no_progress or None,
                        dynamic_ncols=True)
        try:
            while self.to_submit or any(s.images for s in self.alive()):
                while self.to_submit:
                    image = self.to_submit.pop(0)
                    server = self.next_server()
                    try:
                        self.submit(image, server)
                    except ServerGone as gone:
                        self.drop(gone)
                for server in self.alive():
                    if server.images:
                        try:
                            self.poll(server)
                            server.refusals = 0
                        except Refused as error:  # it answers, but not as it should: give it a few tries
                            server.refusals += 1
                            self.say(f"{server.url}: {error}")
                            if server.refusals >= server.retries:
                                self.drop(ServerGone(server, str(error)))
                        except ServerGone as gone:
                            self.drop(gone)
                self.bar.set_postfix_str(" ".join(f"{s.url.split('//')[-1]}:{s.ran}{'' if s.alive else '(gone)'}"
                                                  for s in self.servers))
                if any(s.images for s in self.alive()):
                    time.sleep(self.args.poll)
        finally:
            self.bar.close()

    def submit(self, image, server):
        """Upload the image to `server` and queue all its unfinished parts there, one after the other."""
        image.server, image.prompt_ids = server, {}
        server.images.append(image)
        extension = os.path.splitext(image.path)[1] or ".png"
        try:
            upload_name = server.upload(f"{image.name}-{image.sha256[:12]}{extension}", image.data)
        except Refused as error:
            for part in image.pending():
                self.fail(image, part, f"upload refused: {error}")
            server.images.remove(image)
            return
        for part in image.pending():
            try:
                answer = server.post("/prompt", {"prompt": prompt_for(image, part, upload_name, self.args),
                                                 "client_id": self.client_id})
            except Refused as error:  # the server checked the prompt and said no: it says why
                self.fail(image, part, str(error))
                continue
            image.prompt_ids[part] = answer["prompt_id"]
            server.submitted += 1
        if not image.prompt_ids:
            server.images.remove(image)

    def poll(self, server):
        queued = server.queued()
        for image in list(server.images):
            for part, prompt_id in list(image.prompt_ids.items()):
                if prompt_id in queued:
                    continue
                entry = server.history(prompt_id)
                if entry is None or entry.get("status", {}).get("completed") is None:
                    # neither waiting nor done: the server lost it (restarted, queue cleared)
                    self.missing[prompt_id] = self.missing.get(prompt_id, 0) + 1
                    if self.missing[prompt_id] >= 3:
                        self.say(f"{server.url} lost the prompts of {image.name}; submitting them again")
                        self.requeue(image)
                        break
                    continue
                try:
                    self.collect(image, part, server, entry, prompt_id)
                except (Refused, KeyError, IndexError, ValueError) as error:  # an output it did not make
                    self.fail(image, part, f"no output to fetch: {error!r}")
                del image.prompt_ids[part]
            if not image.prompt_ids and image in server.images:
                server.images.remove(image)

    def collect(self, image, part, server, entry, prompt_id):
        """Fetch a finished part's outputs into the record (and DIR), or note its failure."""
        status = entry["status"]
        messages = {kind: data for kind, data in status.get("messages", [])}
        if status.get("status_str") != "success":
            error = messages.get("execution_error") or messages.get("execution_interrupted") or {}
            self.fail(image, part, f"{error.get('node_type', '')}: {error.get('exception_message', status)}".strip())
            return
        cached = {node for kind, data in status.get("messages", []) if kind == "execution_cached"
                  for node in data.get("nodes", [])}
        start, end = messages.get("execution_start", {}), messages.get("execution_success", {})
        seconds = (end["timestamp"] - start["timestamp"]) / 1000 if "timestamp" in start and "timestamp" in end else None
        done = {"server": server.url, "seconds": seconds, "prompt_id": prompt_id, "inversion_cached": "invert" in cached}
        outputs = entry.get("outputs", {})
        if part == ROUND_TRIP:
            reference = latent_of(server.fetch(outputs["save_input"]["latents"][0]))
            result = latent_of(server.fetch(outputs["save_round_trip"]["latents"][0]))
            done["error"] = float(np.linalg.norm(result - reference) / np.linalg.norm(reference))
            image.record["round_trip"] = done
        else:
            os.makedirs(image.dir, exist_ok=True)
            write_atomically(image.edit_file(part), server.fetch(outputs["save"]["images"][0]))
            image.record["edits"][str(part)] = {"prompt": image.edits[part],
                                                "file": os.path.basename(image.edit_file(part)), **done}
        image.save_record()
        self.ran_ids.add(prompt_id)
        server.ran += 1
        self.bar.update(1)

    def fail(self, image, part, message):
        image.failed[part] = message
        if self.bar:
            self.bar.update(1)
        self.say(f"{image.name}, {'round trip' if part == ROUND_TRIP else f'edit {part + 1}'} failed: {message}")

    def requeue(self, image):
        """Take the image's unfinished parts off its server (best effort) and submit them again."""
        server = image.server
        if image in server.images:
            server.images.remove(image)
        if server.alive and image.prompt_ids:
            try:
                server.post("/queue", {"delete": list(image.prompt_ids.values())})
            except (ServerGone, Refused):
                pass
        image.server, image.prompt_ids = None, {}
        self.resubmitted += 1
        self.to_submit.append(image)

    def drop(self, gone):
        server = gone.server
        server.alive, server.reason = False, str(gone)
        unfinished = list(server.images)
        left = self.alive()
        self.say(f"server {server.url} is gone ({gone}); " +
                 (f"{len(unfinished)} unfinished images go to {', '.join(s.url for s in left)}" if left else
                  "no server left"))
        for image in unfinished:
            self.requeue(image)
        if not left:
            raise SystemExit(2)


def latent_of(data):
    return load_safetensors(data)["latent_tensor"].astype(np.float64)


# ---------------------------------------------------------------- the report

def write_report(args, batch, images, wall, path):
    servers = {s.url: {"prompts_submitted": s.submitted, "prompts_run": s.ran, "alive": s.alive,
                       "state": ("up" if s.alive else f"gone: {s.reason}") if s.checked else "not needed",
                       } for s in batch.servers}
    rows = []
    for image in images:
        record = image.record
        edits = [dict(record["edits"][str(k)]) if image.done(k) else None for k in range(len(image.edits))]
        parts = [p for p in [record["round_trip"], *edits] if p]
        rows.append({"name": image.name, "image": image.path, "source": image.source,
                     "round_trip_error": record["round_trip"]["error"] if record["round_trip"] else None,
                     "round_trip_server": record["round_trip"]["server"] if record["round_trip"] else None,
                     "edits": [dict(e, file=os.path.join(image.name, e["file"])) if e else
                               {"prompt": p, "file": None, "failed": image.failed.get(k, "not run")}
                               for k, (e, p) in enumerate(zip(edits, image.edits))],
                     "seconds": round(sum(p["seconds"] or 0 for p in parts), 3),
                     "failed": {("round_trip" if k == ROUND_TRIP else f"edit_{k + 1}"): m
                                for k, m in image.failed.items()}})
    run_edits = [e for row in rows for e in row["edits"] if e.get("prompt_id") in batch.ran_ids]
    report = {"settings": settings_of(args), "manifest": os.path.abspath(args.manifest), "wall_seconds": round(wall, 3),
              "prompts_submitted": sum(s.submitted for s in batch.servers),
              "prompts_run": sum(s.ran for s in batch.servers), "resubmitted_images": batch.resubmitted,
              "edits_run": len(run_edits), "edits_with_inversion_reused": sum(e["inversion_cached"] for e in run_edits),
              "servers": servers, "events": batch.events, "images": rows}
    write_atomically(path + ".json", json.dumps(report, indent=1).encode())

    fmt = lambda x: "-" if x is None else f"{x:.2e}"  # noqa: E731
    lines = [f"# Batch edit: {len(images)} images, {sum(len(i.edits) for i in images)} edits\n",
             f"{args.method.upper()}, {args.steps} steps at denoise {args.denoise}, cfg {args.cfg}, checkpoint "
             f"`{args.ckpt}`; manifest `{args.manifest}`.\n",
             f"This run: {report['prompts_submitted']} prompts submitted, {report['prompts_run']} run, "
             f"{batch.resubmitted} images submitted again after a server was lost, {wall:.1f} s. "
             f"Inversion reused from ComfyUI's cache in {report['edits_with_inversion_reused']} of the "
             f"{len(run_edits)} edits run.\n",
             "| server | prompts run (this run) | state |", "|---|---|---|"]
    lines += [f"| {url} | {s['prompts_run']} | {s['state']} |" for url, s in servers.items()]
    lines += ["", "Round-trip error: invert, then sample with the same (source) prompt; relative error of the "
              "latent against VAE Encode's.", "",
              "| image | round-trip error | edits (file, server, s) | time (s) |", "|---|---|---|---|"]
    for row in rows:
        edits = "<br>".join(f"`{e['file']}` ({e['server']}, {e['seconds']:.1f} s"
                            f"{', inversion reused' if e['inversion_cached'] else ''})" if e.get("file") else
                            f"**missing** ({e['failed']})" for e in row["edits"])
        lines.append(f"| {row['name']} | {fmt(row['round_trip_error'])} | {edits} | {row['seconds']:.1f} |")
    with open(path + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    return report


def main(argv=None):
    args = parse_args(argv)
    started = time.time()
    entries = read_manifest(args.manifest)
    os.makedirs(args.out, exist_ok=True)
    settings = settings_of(args)
    images = [Image(e, name, args.out, settings) for e, name in zip(entries, image_names(entries))]
    servers = [Server(url, args) for url in args.server]
    batch = Batch(args, images, servers)
    if any(image.pending() for image in images):
        for server in servers:
            problem = server.check(args)
            if problem:
                server.alive, server.reason = False, problem
                batch.say(f"not using {server.url}: {problem}")
    code = 0
    try:
        if any(image.pending() for image in images) and not batch.alive():
            raise SystemExit(2)
        batch.run()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    except KeyboardInterrupt:
        code = 130
    finally:
        report = write_report(args, batch, images, time.time() - started, os.path.join(args.out, "report"))
    missing = [(row["name"], e["prompt"]) for row in report["images"] for e in row["edits"] if not e.get("file")]
    missing += [(row["name"], "round trip") for row in report["images"] if row["round_trip_error"] is None]
    if code == 2:
        print(f"[batch_edit] FAILED: no ComfyUI server left ({'; '.join(s.reason or '' for s in servers)}); "
              f"{len(missing)} outputs not made; report: {args.out}/report.md", file=sys.stderr)
    elif missing:
        code = code or 1
        print(f"[batch_edit] {len(missing)} outputs not made: {missing[:5]}; report: {args.out}/report.md",
              file=sys.stderr)
    else:
        print(f"[batch_edit] done: {len(images)} images, {sum(len(i.edits) for i in images)} edits in {args.out}; "
              f"report: {args.out}/report.md", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
