"""The run: images to servers round-robin, whole; polling; collecting; losing a server; Ctrl-C."""

import itertools
import os
import sys
import time
import uuid

import numpy as np
from safetensors.numpy import load as load_safetensors
from tqdm import tqdm

from .client import Refused, ServerGone, new_prompt_id
from .manifest import ROUND_TRIP, part_name, write_atomically
from .prompts import SAVE_INPUT, SAVE_ROUND_TRIP

LOST_AFTER_POLLS = 3  # polls that find a prompt neither queued nor in history before it counts as lost


class Batch:
    def __init__(self, args, template, images, servers, settings):
        self.args, self.template, self.images, self.servers = args, template, images, servers
        self.settings = settings
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
        skipped = sum(len(image.parts()) for image in self.images) - total
        if skipped:
            self.say(f"{skipped} outputs of earlier runs kept; {total} to make")
        self.bar = tqdm(total=total, unit="prompt", desc="batch edit", disable=self.args.no_progress or None,
                        dynamic_ncols=True)
        try:
            while self.to_submit or any(s.images for s in self.alive()):
                self.submit_waiting()
                for server in self.alive():
                    if server.images:
                        self.poll_or_drop(server)
                self.bar.set_postfix_str(" ".join(f"{s.url.split('//')[-1]}:{s.ran}{'' if s.alive else '(gone)'}"
                                                  for s in self.servers))
                if any(s.images for s in self.alive()):
                    time.sleep(self.args.poll)
        finally:
            self.bar.close()
            self.bar = None

    def submit_waiting(self):
        while self.to_submit:
            image = self.to_submit.pop(0)
            server = self.next_server()
            try:
                self.submit(image, server)
            except ServerGone as gone:
                self.drop(gone)

    def poll_or_drop(self, server):
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

    def submit(self, image, server):
        """Read the image, upload it to `server` and queue all its unfinished parts there, one
        after the other. Its bytes are dropped once uploaded."""
        try:
            data = image.read()
        except OSError as error:  # moved or deleted since the start
            for part in image.pending():
                self.fail(image, part, f"cannot read the image: {error}")
            return
        image.server, image.prompt_ids = server, {}
        server.images.append(image)
        extension = os.path.splitext(image.path)[1] or ".png"
        try:
            upload_name = server.upload(f"{image.name}-{image.sha256[:12]}{extension}", data)
        except Refused as error:
            for part in image.pending():
                self.fail(image, part, f"upload refused: {error}")
            server.images.remove(image)
            return
        del data
        for part in image.pending():
            # known before the POST, so that a Ctrl-C during it can still take the prompt back
            prompt_id = image.prompt_ids[part] = new_prompt_id()
            try:
                image.prompt_ids[part] = server.queue(self.template.build(image, part, upload_name, self.settings),
                                                      prompt_id, self.client_id)
            except Refused as error:  # the server checked the prompt and said no: it says why
                del image.prompt_ids[part]
                self.fail(image, part, str(error))
                continue
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
                    if self.missing[prompt_id] >= LOST_AFTER_POLLS:
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
        timed = "timestamp" in start and "timestamp" in end
        seconds = (end["timestamp"] - start["timestamp"]) / 1000 if timed else None
        done = {"server": server.url, "seconds": seconds, "prompt_id": prompt_id,
                "inversion_cached": self.template.invert in cached}
        outputs = entry.get("outputs", {})
        if part == ROUND_TRIP:
            reference = latent_of(server.fetch(outputs[SAVE_INPUT]["latents"][0]))
            result = latent_of(server.fetch(outputs[SAVE_ROUND_TRIP]["latents"][0]))
            done["error"] = float(np.linalg.norm(result - reference) / np.linalg.norm(reference))
            image.record["round_trip"] = done
        else:
            os.makedirs(image.dir, exist_ok=True)
            write_atomically(image.edit_file(part), server.fetch(outputs[self.template.save]["images"][0]))
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
        self.say(f"{image.name}, {part_name(part)} failed: {message}")

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

    def part_names(self):
        """prompt id -> "<image>, <part>" for the prompts still out on the servers."""
        return {prompt_id: f"{image.name}, {part_name(part)}" for image in self.images
                for part, prompt_id in image.prompt_ids.items()}

    def cancel(self):
        """After a Ctrl-C: take every prompt of this run off the servers still up. Returns
        (prompts deleted, prompts interrupted, what could not be cancelled) for the message."""
        deleted, interrupted, failed = [], [], []
        for server in self.alive():
            ids = {prompt_id for image in server.images for prompt_id in image.prompt_ids.values()}
            try:
                gone, stopped = server.cancel(ids, self.client_id)
            except (ServerGone, Refused) as error:
                failed.append(f"{server.url} ({error})")
                continue
            deleted += gone
            interrupted += stopped
        return deleted, interrupted, failed


def latent_of(data):
    return load_safetensors(data)["latent_tensor"].astype(np.float64)
