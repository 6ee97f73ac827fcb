"""Inverted latents on disk, losing nothing: both float64 states, the clean source, the
sigmas, the method's settings and the model identity, in one safetensors file.

ComfyUI's SaveLatent keeps only `samples`, so a reloaded file is a plain latent and a
Sample node would add noise to an already noisy latent. These files carry the whole record,
and a digest of every tensor so that a truncated or edited file is refused, not sampled.
The extension is not `.latent`, so LoadLatent never lists them as plain latents.
"""

import hashlib
import json

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import NodeInputError
from .methods import SPECS
from .record import RECORD_KEY, read_record

EXTENSION = ".inversion"
FORMAT = "comfyui-exact-inversion/1"
TENSORS = ("branch", "partner", "source", "sigmas")  # record tensors; noise_mask rides along
# Record fields other than tensors, kept as JSON metadata.
FIELDS = ("method", "state", "model_sampling", "latent_format", "model_class", "steps", "scheduler", "denoise")


def _digest(tensors):
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def save(node, latent, path):
    """Write an inverted (or EDICT-sampled) LATENT to `path`."""
    record = read_record(latent)
    if record is None:
        raise NodeInputError(node, "latent", "it is a plain latent: there is no pair to save.",
                             "Connect the output of an Invert node (or EDICT Sample); save plain latents "
                             "with Save Latent.")
    tensors = {name: record[name].detach().cpu().contiguous() for name in TENSORS}
    if latent.get("noise_mask") is not None:
        tensors["noise_mask"] = latent["noise_mask"].detach().cpu().contiguous()
    spec = SPECS[record["method"]]
    meta = {"fields": {key: record[key] for key in FIELDS if key in record},
            "params": {key: record[key] for key in spec.defaults},
            "batch_index": latent.get("batch_index"),
            "shapes": {name: list(t.shape) for name, t in tensors.items()},
            "dtypes": {name: str(t.dtype) for name, t in tensors.items()}}
    save_file(tensors, path, metadata={"format": FORMAT, "record": json.dumps(meta), "sha256": _digest(tensors)})


def load(node, path):
    """Read a file written by `save` back into the LATENT it was saved from, bit for bit."""
    def refuse(problem):
        return NodeInputError(node, "inverted_latent", f"{path}: {problem}",
                              "Save it again with Save Inverted Latent from the Invert node's output.")

    try:
        tensors = load_file(path)
        with open(path, "rb") as f:
            header_size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(header_size))
    except (SafetensorError, OSError, ValueError) as error:
        raise refuse(f"it is not a readable safetensors file ({error}); it may be truncated.") from None
    metadata = header.get("__metadata__") or {}
    if metadata.get("format") != FORMAT:
        raise refuse(f"it is not an inverted latent of this pack (format {metadata.get('format')!r}).")
    try:
        meta = json.loads(metadata["record"])
    except (KeyError, ValueError):
        raise refuse("its metadata is damaged.") from None
    if _digest(tensors) != metadata.get("sha256"):
        raise refuse("its tensors do not match the digest written with them: the file was edited or damaged.")
    for name, tensor in tensors.items():
        if list(tensor.shape) != meta["shapes"].get(name) or str(tensor.dtype) != meta["dtypes"].get(name):
            raise refuse(f"its tensor {name!r} ({tuple(tensor.shape)}, {tensor.dtype}) disagrees with its "
                         f"metadata ({meta['shapes'].get(name)}, {meta['dtypes'].get(name)}).")
    missing = [name for name in TENSORS if name not in tensors]
    if missing or meta["fields"].get("method") not in SPECS:
        raise refuse(f"it lacks {missing or 'a known method'}.")
    record = dict(meta["fields"], **meta["params"], **{name: tensors[name] for name in TENSORS})
    latent = {"samples": record["branch"].to(torch.float32), RECORD_KEY: record}
    if "noise_mask" in tensors:
        latent["noise_mask"] = tensors["noise_mask"]
    if meta.get("batch_index") is not None:
        latent["batch_index"] = meta["batch_index"]
    return latent
