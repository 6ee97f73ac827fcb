"""Inverted latents on disk, losing nothing: both float64 states, the clean source, the
sigmas, the method's settings and the model identity, in one safetensors file.

ComfyUI's SaveLatent keeps only `samples`, so a reloaded file is a plain latent and a
Sample node would add noise to an already noisy latent. These files carry the whole record,
and a digest of the record and every tensor so that a truncated or edited file is refused,
not sampled. The extension is not `.latent`, so LoadLatent never lists them as plain latents.

Layout (safetensors): tensors branch, partner, source [B, C, ...], sigmas [N + 1] and, for a
masked latent, noise_mask; metadata {"format": FORMAT, "record": JSON of
{"fields", "params", "batch_index", "shapes", "dtypes"}, "sha256": _digest}. A file is read
header first: its format and record are checked before a byte of tensor data is loaded, so
a hostile or foreign file costs no more than its (bounded) header.
"""

import hashlib
import json
import math
import os
import secrets

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..edict_core.spec import SPECS
from .errors import NodeInputError
from .record import RECORD_KEY, read_record

EXTENSION = ".inversion"
FORMAT = "comfyui-exact-inversion/2"  # digest over the record JSON and the tensors
FORMAT_1 = "comfyui-exact-inversion/1"  # digest over the tensors only; still read, so no saved file is lost
FORMAT_FAMILY = "comfyui-exact-inversion/"
# A real header is a few kB (JSON of a handful of fields and five tensor entries); the bound
# only stops a hostile length from making the reader allocate or read without limit.
MAX_HEADER_BYTES = 100_000_000
TENSORS = ("branch", "partner", "source", "sigmas")  # record tensors
OPTIONAL_TENSORS = ("noise_mask",)  # the latent's mask rides along
PAIR_DTYPES = (torch.float64, torch.float32)  # float32: a device without float64 (MPS)
# safetensors' dtype codes of the floating tensors a record can hold.
FILE_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}

REFUSED_FIX = "Save it again with Save Inverted Latent from the Invert (or Sample) node's output."
NEWER_FIX = ("If a newer version of comfyui-exact-inversion wrote it, update the pack; otherwise save "
             "it again with Save Inverted Latent.")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_str(value):
    return isinstance(value, str)


def _is_hex16(value):
    return _is_str(value) and len(value) == 16 and all(c in "0123456789abcdef" for c in value)


# Record fields other than tensors and the method's settings, kept as JSON metadata:
# field -> (test, what the value must be). The first four every record has.
FIELD_RULES = {
    "method": (lambda v: _is_str(v) and v in SPECS, "one of " + ", ".join(repr(m) for m in SPECS)),
    "state": (lambda v: v in ("noisy", "clean"), "'noisy' or 'clean'"),
    "model_sampling": (_is_str, "a string"),
    "latent_format": (_is_str, "a string"),
    "model_class": (_is_str, "a string"),
    "model_fingerprint": (_is_str, "a string"),
    "steps": (lambda v: _is_int(v) and v >= 1, "a positive whole number"),
    "scheduler": (_is_str, "a string"),
    "denoise": (lambda v: _is_number(v) and 0 <= v <= 1, "a number from 0 to 1"),
    "cfg": (lambda v: _is_number(v) and math.isfinite(v), "a finite number"),
    "positive_digest": (lambda v: _is_hex16(v), "16 hex digits"),
    "negative_digest": (lambda v: _is_hex16(v), "16 hex digits"),
}
FIELDS = tuple(FIELD_RULES)
REQUIRED_FIELDS = FIELDS[:4]
RECORD_KEYS = ("fields", "params", "batch_index", "shapes", "dtypes")


class FileProblem(ValueError):
    """What is wrong with a file, worded to follow its name ("'x.inversion': <problem>");
    `fix` says what to do. load() and save() turn it into a NodeInputError."""

    def __init__(self, problem, fix=REFUSED_FIX):
        super().__init__(problem)
        self.fix = fix


def _digest(tensors, record_json=None):
    """sha256 over the record JSON (format 2; None: format 1, which covered the tensors
    only), then every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    if record_json is not None:
        encoded = record_json.encode()
        # The length keeps the record's bytes from running into the tensors' part.
        digest.update(f"{FORMAT}|{len(encoded)}|".encode() + encoded)
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


# ---- checks shared by save and load: the record JSON and the tensors' shapes and dtypes


def _check_fields(fields):
    if not isinstance(fields, dict):
        raise FileProblem(f"its record's 'fields' is {type(fields).__name__}, not a mapping.")
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise FileProblem(f"its record holds fields this version does not know: {unknown}.", NEWER_FIX)
    missing = [name for name in REQUIRED_FIELDS if name not in fields]
    if missing:
        raise FileProblem(f"its record lacks the fields {missing}.")
    for name, value in fields.items():
        test, expected = FIELD_RULES[name]
        if not test(value):
            raise FileProblem(f"its field {name!r} is {value!r}: expected {expected}.")


def _check_params(spec, params):
    """The method's settings: exactly its own, each passing its edict_core check (numbers,
    booleans, and a COMBO's string, which must be one of its options)."""
    if not isinstance(params, dict):
        raise FileProblem(f"its record's 'params' is {type(params).__name__}, not a mapping.")
    if set(params) != set(spec.defaults):
        raise FileProblem(f"its settings are {sorted(params)}, but {spec.title}'s are {sorted(spec.defaults)}.")
    for name, check in spec.checks.items():
        try:
            check(params[name])
        except (ValueError, TypeError) as error:
            raise FileProblem(f"its {spec.title} setting {name!r} is {params[name]!r}: {error}") from None


def _check_batch_index(batch_index):
    if batch_index is not None and not (isinstance(batch_index, list)
                                        and all(_is_int(i) and i >= 0 for i in batch_index)):
        raise FileProblem(f"its batch_index is {batch_index!r}: expected a list of whole numbers, 0 or more "
                          "(or none).")


def _check_layout(shapes, dtypes):
    """shapes {name: [int, ...]} and dtypes {name: "torch.float64", ...} for the same tensors:
    every record tensor, and no tensor but the optional ones."""
    for key, value, test, expected in (
            ("shapes", shapes, lambda v: isinstance(v, list) and all(_is_int(n) and n >= 0 for n in v),
             "a list of sizes"),
            ("dtypes", dtypes, _is_str, "a dtype name")):
        if not isinstance(value, dict):
            raise FileProblem(f"its record's {key!r} is {type(value).__name__}, not a mapping of tensor "
                              "names.")
        for name, entry in value.items():
            if not test(entry):
                raise FileProblem(f"its record's {key!r} gives tensor {name!r} as {entry!r}: expected {expected}.")
    if set(shapes) != set(dtypes):
        raise FileProblem(f"its record's shapes name {sorted(shapes)} but its dtypes {sorted(dtypes)}.")
    missing = [name for name in TENSORS if name not in shapes]
    unknown = sorted(set(shapes) - set(TENSORS) - set(OPTIONAL_TENSORS))
    if missing or unknown:
        raise FileProblem(f"it lacks the tensors {missing}." if missing
                          else f"it holds tensors no inverted latent has: {unknown}.")


def check_record_json(meta):
    """The parsed record JSON of a file, checked for types and ranges. Raises FileProblem."""
    if not isinstance(meta, dict):
        raise FileProblem(f"its record is {type(meta).__name__}, not a mapping.")
    missing = [key for key in RECORD_KEYS if key not in meta and key != "batch_index"]
    unknown = sorted(set(meta) - set(RECORD_KEYS))
    if missing or unknown:
        raise FileProblem(f"its record lacks {missing}." if missing
                          else f"its record holds entries this version does not know: {unknown}.",
                          REFUSED_FIX if missing else NEWER_FIX)
    _check_fields(meta["fields"])
    _check_params(SPECS[meta["fields"]["method"]], meta["params"])
    _check_batch_index(meta.get("batch_index"))
    _check_layout(meta["shapes"], meta["dtypes"])


def check_tensor_layout(meta, layout):
    """The tensors as the file (or the record being saved) holds them, against the record
    JSON and against each other. layout: {name: (torch.dtype, shape tuple)}."""
    if set(layout) != set(meta["shapes"]):
        raise FileProblem(f"it holds the tensors {sorted(layout)}, but its record names {sorted(meta['shapes'])}.")
    for name, (dtype, shape) in layout.items():
        if list(shape) != meta["shapes"][name] or str(dtype) != meta["dtypes"][name]:
            raise FileProblem(f"its tensor {name!r} ({tuple(shape)}, {dtype}) disagrees with its metadata "
                              f"({meta['shapes'][name]}, {meta['dtypes'][name]}).")
    shapes = {name: tuple(layout[name][1]) for name in ("branch", "partner", "source")}
    if len(set(shapes.values())) != 1:
        raise FileProblem(f"its branch, partner and source must have one shape, but have {shapes}.")
    for name in ("branch", "partner"):
        if layout[name][0] not in PAIR_DTYPES:
            raise FileProblem(f"its tensor {name!r} is {layout[name][0]}: expected float64 (or float32).")
    for name in ("source", "noise_mask"):
        if name in layout and not layout[name][0].is_floating_point:
            raise FileProblem(f"its tensor {name!r} is {layout[name][0]}: expected a floating-point tensor.")
    sigmas_dtype, sigmas_shape = layout["sigmas"]
    if sigmas_dtype not in PAIR_DTYPES or len(sigmas_shape) != 1 or sigmas_shape[0] < 2:
        raise FileProblem(f"its sigmas ({tuple(sigmas_shape)}, {sigmas_dtype}) are not a schedule: expected a "
                          "float64 (or float32) list of at least 2 levels.")


def check_sigmas(sigmas):
    """sigmas [N + 1]: the schedule that was run, positive, finite, strictly decreasing."""
    if not (torch.isfinite(sigmas).all() and (sigmas > 0).all() and (sigmas[1:] < sigmas[:-1]).all()):
        raise FileProblem(f"its sigmas {sigmas.tolist()} are not a schedule: expected positive, finite, "
                          "strictly decreasing levels.")


# ---- save


def _record_json(record, latent, tensors):
    """The record JSON `save` writes: what is not a tensor of the record and of the LATENT."""
    method, batch_index = record.get("method"), latent.get("batch_index")
    spec = SPECS.get(method) if _is_str(method) else None
    return {"fields": {key: record[key] for key in FIELDS if key in record},
            "params": {key: record.get(key) for key in (spec.defaults if spec else ())},
            "batch_index": list(batch_index) if isinstance(batch_index, tuple) else batch_index,
            "shapes": {name: list(t.shape) for name, t in tensors.items()},
            "dtypes": {name: str(t.dtype) for name, t in tensors.items()}}


def _write_atomically(path, tensors, metadata):
    """Write to a hidden temporary file beside `path`, then rename it over `path`: a crash or
    a full disk mid-write leaves no half file that Load Inverted Latent would list. The name
    does not end in EXTENSION, so the listing never shows it."""
    folder, name = os.path.split(path)
    temporary = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
    try:
        save_file(tensors, temporary, metadata=metadata)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def save(node, latent, path):
    """Write an inverted (or sampled) LATENT, the one carrying a record, to `path`."""
    record = read_record(latent)
    if record is None:
        raise NodeInputError(node, "latent", "it is a plain latent: there is no pair to save.",
                             "Connect the output of an Invert or Sample node of this pack; save plain "
                             "latents with Save Latent.")
    tensors = {name: record[name].detach().cpu().contiguous() for name in TENSORS}
    if latent.get("noise_mask") is not None:
        tensors["noise_mask"] = latent["noise_mask"].detach().cpu().contiguous()
    meta = _record_json(record, latent, tensors)
    try:
        # Never write a file that load would refuse.
        check_record_json(meta)
        check_tensor_layout(meta, {name: (t.dtype, tuple(t.shape)) for name, t in tensors.items()})
        check_sigmas(tensors["sigmas"])
    except FileProblem as problem:
        raise NodeInputError(node, "latent", f"its record cannot be saved: {problem}",
                             "Connect the Invert or Sample node's output directly.") from None
    record_json = json.dumps(meta)
    _write_atomically(path, tensors, {"format": FORMAT, "record": record_json,
                                      "sha256": _digest(tensors, record_json)})


# ---- load


def read_header(path):
    """A safetensors file's header, reading nothing past it: (header dict, the size in bytes
    of the tensor data that follows it). Raises FileProblem."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise FileProblem(f"it is not a readable safetensors file (it is only {size} bytes long); it may be "
                              "truncated.")
        length = int.from_bytes(prefix, "little")
        if length > MAX_HEADER_BYTES:
            raise FileProblem(f"its header length reads {length} bytes, more than the {MAX_HEADER_BYTES} bytes "
                              "any inverted latent needs: it is not a file this pack wrote.")
        if 8 + length > size:
            raise FileProblem(f"it is not a readable safetensors file (its header length reads {length} bytes, "
                              f"the file holds {size}); it may be truncated.")
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError):
        raise FileProblem("it is not a readable safetensors file (its header is not JSON); it may be "
                          "truncated.") from None
    if not isinstance(header, dict):
        raise FileProblem("it is not a readable safetensors file (its header is not a mapping).")
    return header, size - 8 - length


def tensor_layout(header, data_size):
    """{name: (torch.dtype, shape tuple)} of the tensors a safetensors header describes,
    checked to fill the `data_size` bytes after it exactly. Raises FileProblem."""
    layout, end = {}, 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict):
            raise FileProblem(f"it is not a readable safetensors file (its header entry for {name!r} is "
                              "damaged).")
        if not _is_str(entry.get("dtype")) or entry["dtype"] not in FILE_DTYPES:
            raise FileProblem(f"its tensor {name!r} has dtype {entry.get('dtype')!r}, which no inverted latent "
                              "holds.")
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if not (isinstance(shape, list) and all(_is_int(n) and n >= 0 for n in shape)
                and isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(n) for n in offsets)
                and 0 <= offsets[0] <= offsets[1]
                and offsets[1] - offsets[0] == math.prod(shape) * FILE_DTYPES[entry["dtype"]].itemsize):
            raise FileProblem(f"it is not a readable safetensors file (its header entry for {name!r} is "
                              "damaged).")
        layout[name] = (FILE_DTYPES[entry["dtype"]], tuple(shape))
        end = max(end, offsets[1])
    if end != data_size:
        raise FileProblem(f"it is not a readable safetensors file (its tensors take {end} bytes, the file holds "
                          f"{data_size} after its header); it may be truncated.")
    return layout


def read_metadata(header):
    """(format, record JSON text, parsed record, sha256) from a header's __metadata__, the
    format checked first. Raises FileProblem."""
    metadata = header.get("__metadata__")
    metadata = metadata if isinstance(metadata, dict) else {}
    file_format = metadata.get("format")
    if file_format not in (FORMAT, FORMAT_1):
        if _is_str(file_format) and file_format.startswith(FORMAT_FAMILY):
            raise FileProblem(f"its format {file_format!r} is not one this version of the pack reads "
                              f"({FORMAT_1!r}, {FORMAT!r}).", NEWER_FIX)
        raise FileProblem(f"it is not an inverted latent of this pack (format {file_format!r}).")
    record_json, sha256 = metadata.get("record"), metadata.get("sha256")
    if not (_is_str(record_json) and _is_str(sha256)):
        raise FileProblem("its metadata is damaged: it lacks its record or its digest.")
    try:
        meta = json.loads(record_json)
    except (ValueError, RecursionError):
        raise FileProblem("its metadata is damaged: its record is not JSON.") from None
    return file_format, record_json, meta, sha256


def read_file(path):
    """The record JSON and tensors of an .inversion file, everything checked: (record JSON
    dict, {name: tensor}). Header, format, record and tensor layout are checked before the
    tensor data is read. Raises FileProblem."""
    header, data_size = read_header(path)
    file_format, record_json, meta, sha256 = read_metadata(header)
    check_record_json(meta)
    check_tensor_layout(meta, tensor_layout(header, data_size))
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError) as error:
        raise FileProblem(f"it is not a readable safetensors file ({error}); it may be truncated.") from None
    if _digest(tensors, record_json if file_format == FORMAT else None) != sha256:
        raise FileProblem("its tensors or record do not match the digest written with them: the file was "
                          "edited or damaged.")
    check_sigmas(tensors["sigmas"])
    return meta, tensors


def load(node, path, name=None):
    """Read a file written by `save` (format 2, or format 1 of older versions) back into the
    LATENT it was saved from, bit for bit. Messages name the file as `name` (default: path),
    quoted, as the user chose it."""
    try:
        meta, tensors = read_file(path)
    except FileProblem as problem:
        raise NodeInputError(node, "inverted_latent", f"{name or path!r}: {problem}", problem.fix) from None
    except OSError as error:
        raise NodeInputError(node, "inverted_latent", f"{name or path!r}: it cannot be read ({error}).",
                             "Choose the file again from the list (refresh it with R).") from None
    record = dict(meta["fields"], **meta["params"], **{key: tensors[key] for key in TENSORS})
    latent = {"samples": record["branch"].to(torch.float32), RECORD_KEY: record}
    if "noise_mask" in tensors:
        latent["noise_mask"] = tensors["noise_mask"]
    if meta.get("batch_index") is not None:
        latent["batch_index"] = meta["batch_index"]
    return latent
