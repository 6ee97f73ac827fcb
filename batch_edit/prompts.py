"""The batch's prompts, made from the pack's own example workflows (API format) rather than by
hand: what a user opens in the template browser is what the batch runs."""

import copy
import json
import os

from .client import UPLOAD_FOLDER
from .manifest import ROUND_TRIP

PACK = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATES = os.path.join(PACK, "example_workflows", "api")
SCHEDULE = ("steps", "cfg", "scheduler", "denoise")  # inputs of every Invert and Sample node
SAVE_INPUT, SAVE_ROUND_TRIP = "save_input", "save_round_trip"  # ids of the nodes the round trip adds


def template_path(spec):
    return os.path.join(TEMPLATES, f"{spec.name}_edit.json")


class Template:
    """One method's edit workflow, example_workflows/api/<method>_edit.json, and the ids of the
    nodes the batch sets: found by class_type, and the three prompts by where they lead (the
    Invert node's positive is the source prompt, the Sample node's positive the edit)."""

    def __init__(self, spec, path=None):
        self.spec, self.path = spec, path or template_path(spec)
        try:
            with open(self.path) as f:
                self.prompt = json.load(f)
        except OSError:
            raise SystemExit(
                f"no example workflow {self.path} for {spec.title}: the batch builds its prompts from "
                f"example_workflows/api/<method>_edit.json. Export the method's edit workflow from the UI "
                f"with 'Export (API)' to that name, or pick another --method.") from None
        self.ckpt = self.one("CheckpointLoaderSimple")
        self.load = self.one("LoadImage")
        self.encode = self.one("VAEEncode")
        self.invert = self.one(spec.node_id("Invert"))
        self.sample = self.one(spec.node_id("Sample"))
        self.save = self.one("SaveImage")
        self.source = self.text_node(self.invert, "positive")
        self.negative = self.text_node(self.invert, "negative")
        self.edit = self.text_node(self.sample, "positive")
        for node_id in (self.invert, self.sample):
            missing = [k for k in (*SCHEDULE, *spec.defaults) if k not in self.prompt[node_id]["inputs"]]
            if missing:
                raise SystemExit(f"{self.path}: node {node_id} ({self.prompt[node_id]['class_type']}) has no "
                                 f"input {', '.join(missing)}: the workflow is older than the pack's nodes; "
                                 f"export it again from the UI ('Export (API)').")

    def one(self, class_type):
        found = [i for i, node in self.prompt.items() if node.get("class_type") == class_type]
        if len(found) != 1:
            raise SystemExit(f"{self.path}: expected one {class_type} node, found {len(found)}; the batch "
                             f"needs the plain edit workflow (see example_workflows/{self.spec.name}_edit.json).")
        return found[0]

    def text_node(self, node_id, input_name):
        link = self.prompt[node_id]["inputs"].get(input_name)
        if not (isinstance(link, list) and self.prompt.get(link[0], {}).get("class_type") == "CLIPTextEncode"):
            raise SystemExit(f"{self.path}: the {input_name} input of node {node_id} is not a CLIPTextEncode.")
        return link[0]

    def build(self, image, part, upload_name, settings):
        """The API-format prompt of one part of an image. Its nodes up to the Invert node are the
        same in every part of the image (ids and inputs), so ComfyUI's cache runs them once."""
        prompt = copy.deepcopy(self.prompt)
        inputs = lambda node_id: prompt[node_id]["inputs"]  # noqa: E731
        inputs(self.ckpt)["ckpt_name"] = settings["ckpt"]
        inputs(self.load)["image"] = upload_name
        inputs(self.source)["text"] = image.source
        inputs(self.negative)["text"] = settings["negative"]
        for node_id in (self.invert, self.sample):
            inputs(node_id).update({k: settings[k] for k in (*SCHEDULE, *self.spec.defaults)})
        prefix = f"{UPLOAD_FOLDER}/{image.name}"
        if part == ROUND_TRIP:
            # sampled back with the prompt it was inverted with: the result should be the input latent
            inputs(self.sample)["positive"] = [self.source, 0]
            prompt[SAVE_INPUT] = save_latent([self.encode, 0], f"{prefix}_input")
            prompt[SAVE_ROUND_TRIP] = save_latent([self.sample, 0], f"{prefix}_round_trip")
            return needed_by(prompt, [SAVE_INPUT, SAVE_ROUND_TRIP])
        inputs(self.edit)["text"] = image.edits[part]
        inputs(self.save)["filename_prefix"] = f"{prefix}_edit{part + 1}"
        return needed_by(prompt, [self.save])


def save_latent(samples, prefix):
    return {"class_type": "SaveLatent", "inputs": {"samples": samples, "filename_prefix": prefix},
            "_meta": {"title": "Save Latent (batch edit)"}}


def needed_by(prompt, outputs):
    """The prompt cut to the nodes `outputs` read from: the example's previews, and the edit's
    decode in a round trip, would only cost time and leave files on the server."""
    keep, todo = set(), list(outputs)
    while todo:
        node_id = todo.pop()
        if node_id in keep:
            continue
        keep.add(node_id)
        todo += [value[0] for value in prompt[node_id]["inputs"].values() if is_link(value, prompt)]
    return {node_id: node for node_id, node in prompt.items() if node_id in keep}


def is_link(value, prompt):
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and value[0] in prompt
