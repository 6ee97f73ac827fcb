"""Save Inverted Latent / Load Inverted Latent: a saved and reloaded inversion regenerates
bit for bit as the one never saved, whether loaded from the input folder or straight from
the output folder; damaged or edited files, names the node does not list, plain latents and
wrong models are refused with messages that name the node, the input and what to do, and a
good file loads right after each refusal. Older files (format 1) still load."""

import glob
import hashlib
import json
import os
import re
import shutil
import time

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from harness.comfy import pack_module, patched_model, run_node
from edict_core.spec import SPECS
from helpers import METHODS, invert, sample

LOAD = r"^Load Inverted Latent: input 'inverted_latent': "
SAVE_AGAIN = r"Save it again with Save Inverted Latent"
UPDATE = r"If a newer version of comfyui-exact-inversion wrote it, update the pack"
CHOOSE = r"Choose a file from the list \(press R to refresh it\)"
# The record fields format 1 files had.
FORMAT_1_FIELDS = ("method", "state", "model_sampling", "latent_format", "model_class", "steps", "scheduler",
                   "denoise")


@pytest.fixture(scope="module")
def unsaved(comfy, scene):
    """What the module compares loaded files with, each made once (CI has two cores):
    unsaved(method) is the scene's latent inverted by `method` ("EDICT" | "BDIA" | "OBELM"),
    unsaved(method, positive) that inversion sampled with the scene's prompt `positive`."""
    made = {}

    def get(method, positive=None):
        if (method, positive) not in made:
            made[method, positive] = (sample(comfy, scene, method, get(method), positive=positive) if positive
                                      else invert(comfy, scene, method))
        return made[method, positive]
    return get


@pytest.fixture(scope="module")
def saved(comfy, unsaved):
    """The BDIA inversion, saved once with Save Inverted Latent's default prefix:
    {"inverted", "name" (as Load lists it), "path", "edited" (the unsaved one's edit)}."""
    name, path = save_to_output(comfy, unsaved("BDIA"))
    return {"inverted": unsaved("BDIA"), "name": name, "path": path, "edited": unsaved("BDIA", "edit")}


def node_error():
    return pack_module("comfy_adapter.errors").NodeInputError


def save_to_output(comfy, latent, prefix=None):
    """Save Inverted Latent (default prefix unless given). Returns (the name Load Inverted
    Latent lists it under, its path)."""
    import folder_paths

    save = comfy.NODE_CLASS_MAPPINGS["SaveInvertedLatent"]
    prefix = prefix or save.INPUT_TYPES()["required"]["filename_prefix"][1]["default"]
    ui = save().save(latent, prefix)["ui"]["latents"][0]
    relative = f"{ui['subfolder']}/{ui['filename']}" if ui["subfolder"] else ui["filename"]
    return f"{relative} [output]", os.path.join(folder_paths.get_output_directory(), ui["subfolder"], ui["filename"])


def save_and_load(comfy, latent, prefix):
    """Save Inverted Latent into the output folder, copy the file to the input folder as a
    user of older versions did, and Load Inverted Latent it. Returns (loaded LATENT, name)."""
    _, source = save_to_output(comfy, latent, prefix)
    name = f"{prefix.replace('/', '_')}_{os.path.basename(source)}"
    shutil.copy(source, input_path(name))
    return run_node(comfy, "LoadInvertedLatent", inverted_latent=name), name


def input_path(name):
    import folder_paths

    return os.path.join(folder_paths.get_input_directory(), name)


def listed(comfy):
    return comfy.NODE_CLASS_MAPPINGS["LoadInvertedLatent"].INPUT_TYPES()["required"]["inverted_latent"][0]


def file_format(path):
    with safe_open(path, "pt") as f:
        return f.metadata()["format"]


def assert_same_inversion(loaded, inverted, skip=()):
    """Every record entry and the samples equal, tensors bit for bit and in their dtype."""
    for key, value in inverted["exact_inversion"].items():
        if key in skip:
            continue
        got = loaded["exact_inversion"][key]
        if torch.is_tensor(value):
            assert torch.equal(got, value) and got.dtype == value.dtype, key
        else:
            assert got == value, key
    assert set(loaded["exact_inversion"]) == set(inverted["exact_inversion"]) - set(skip)
    assert torch.equal(loaded["samples"], inverted["samples"])


def assert_good_file_loads(comfy, saved):
    """The module's good file loads from the output folder, bit for bit (so it samples as the
    unsaved inversion: the first test; test_after_every_refusal_a_save_load_and_edit_round_trip
    samples once after all refusals, which keeps the module fast)."""
    loaded = run_node(comfy, "LoadInvertedLatent", inverted_latent=saved["name"])
    assert_same_inversion(loaded, saved["inverted"])
    return loaded


@pytest.mark.parametrize("method", METHODS)
def test_saved_and_loaded_inversion_regenerates_bit_for_bit(comfy, scene, unsaved, method):
    inverted = unsaved(method)
    loaded, name = save_and_load(comfy, dict(inverted, batch_index=[4, 5]), f"storage/{method}")
    assert file_format(input_path(name)) == "comfyui-exact-inversion/2"
    assert loaded["batch_index"] == [4, 5]
    assert_same_inversion(loaded, inverted)
    for positive in ("positive", "edit"):
        direct = unsaved(method, positive)
        reloaded = sample(comfy, scene, method, loaded, positive=positive)
        assert torch.equal(direct["samples"], reloaded["samples"])
    # ComfyUI's plain LoadLatent does not offer the file as a plain latent
    assert name not in comfy.LoadLatent.INPUT_TYPES()["required"]["latent"][0]
    assert name in listed(comfy)


def test_a_file_in_the_output_folder_loads_through_its_output_annotation(comfy, scene, saved):
    """Save Inverted Latent's file is listed where it was written, annotated as ComfyUI's own
    loaders annotate output files, so nobody moves files by hand."""
    import folder_paths

    load = comfy.NODE_CLASS_MAPPINGS["LoadInvertedLatent"]
    assert re.fullmatch(r"inverted/ComfyUI_\d{5}_\.inversion \[output\]", saved["name"])
    assert saved["name"] in listed(comfy)
    assert folder_paths.get_annotated_filepath(saved["name"]) == saved["path"]
    assert load.VALIDATE_INPUTS(inverted_latent=saved["name"]) is True
    with open(saved["path"], "rb") as f:
        assert load.IS_CHANGED(inverted_latent=saved["name"]) == hashlib.sha256(f.read()).hexdigest()
    loaded = assert_good_file_loads(comfy, saved)
    assert torch.equal(sample(comfy, scene, "BDIA", loaded, positive="edit")["samples"], saved["edited"]["samples"])
    # the write went through a temporary file, renamed: no temporary file is left beside it
    assert [f for f in os.listdir(os.path.dirname(saved["path"])) if not f.endswith(".inversion")] == []


@pytest.mark.parametrize("method", METHODS)
def test_a_sampled_latent_is_saved_and_loaded(comfy, unsaved, method):
    """Sample outputs carrying a record (state "clean") save and load, bit for bit, as the
    inversions do (what a record holds, not where it came from, decides what a node makes of it)."""
    sampled = unsaved(method, "edit")
    if "exact_inversion" not in sampled:
        pytest.skip(f"{method} Sample's output carries no record yet")
    assert sampled["exact_inversion"]["state"] == "clean"
    name, _ = save_to_output(comfy, sampled, f"storage/sampled_{method}")
    loaded = run_node(comfy, "LoadInvertedLatent", inverted_latent=name)
    assert_same_inversion(loaded, sampled)


# ---- damaged and edited files


def rewrite(change, redigest=True):
    """A damage that rewrites the file with change(tensors, metadata) applied, its digest
    computed anew (redigest) so that the checks behind the digest are what must refuse it,
    or left as it was (an edit the digest must catch)."""
    def damage(path):
        with safe_open(path, "pt") as f:
            metadata = dict(f.metadata())
        tensors = load_file(path)
        change(tensors, metadata)
        if redigest:
            metadata["sha256"] = pack_module("comfy_adapter.storage")._digest(tensors, metadata["record"])
        save_file(tensors, path, metadata=metadata)
    return damage


def edit_record(edit, redigest=True):
    """A damage that applies edit(record JSON dict) to the file's record."""
    def change(tensors, metadata):
        record = json.loads(metadata["record"])
        edit(record)
        metadata["record"] = json.dumps(record)
    return rewrite(change, redigest)


def edit_tensors(edit):
    """A damage that applies edit(tensors) and records the new shapes and dtypes, digest anew."""
    def change(tensors, metadata):
        edit(tensors)
        record = json.loads(metadata["record"])
        record["shapes"] = {name: list(t.shape) for name, t in tensors.items()}
        record["dtypes"] = {name: str(t.dtype) for name, t in tensors.items()}
        metadata["record"] = json.dumps(record)
    return rewrite(change)


def keep_bytes(count):
    def damage(path):
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2 if count is None else count])
    return damage


def write_bytes(data):
    def damage(path):
        with open(path, "wb") as f:
            f.write(data)
    return damage


def nudge_partner(tensors, metadata):
    tensors["partner"] = tensors["partner"].clone()
    tensors["partner"].view(-1)[0] += 1e-9


def set_metadata(**entries):
    return lambda tensors, metadata: metadata.update(entries)


def put(section, **values):
    return lambda record: record[section].update(values)


DAMAGES = {  # id: (damage(path), the problem the message states, the fix it gives)
    "truncated": (keep_bytes(None), r"it is not a readable safetensors file \(its tensors take \d+ bytes, the "
                  r"file holds \d+ after its header\); it may be truncated\.", SAVE_AGAIN),
    "truncated in its header": (keep_bytes(100), r"it is not a readable safetensors file \(its header length "
                                r"reads \d+ bytes, the file holds 100\); it may be truncated\.", SAVE_AGAIN),
    "shorter than a header": (keep_bytes(5), r"it is not a readable safetensors file \(it is only 5 bytes "
                              r"long\); it may be truncated\.", SAVE_AGAIN),
    "header length beyond the file": (write_bytes((10**6).to_bytes(8, "little") + b"{}"),
                                      r"it is not a readable safetensors file \(its header length reads "
                                      r"1000000 bytes, the file holds 10\); it may be truncated\.", SAVE_AGAIN),
    "oversized header length": (write_bytes(b"\xff" * 8 + b"{}"), r"its header length reads 18446744073709551615 "
                                r"bytes, more than the 100000000 bytes any inverted latent needs: it is not a file "
                                r"this pack wrote\.", SAVE_AGAIN),
    "header not JSON": (write_bytes((5).to_bytes(8, "little") + b"{abc}"), r"it is not a readable "
                        r"safetensors file \(its header is not JSON\); it may be truncated\.", SAVE_AGAIN),
    "edited tensor": (rewrite(nudge_partner, redigest=False), r"its tensors or record do not match the digest "
                      r"written with them: the file was edited or damaged\.", SAVE_AGAIN),
    "edited setting": (edit_record(put("params", gamma=0.5), redigest=False), r"its tensors or record do not "
                       r"match the digest written with them: the file was edited or damaged\.", SAVE_AGAIN),
    "edited field": (edit_record(put("fields", model_sampling="V_PREDICTION"), redigest=False),
                     r"its tensors or record do not match the digest", SAVE_AGAIN),
    "metadata disagrees": (edit_record(lambda r: r["shapes"].update(partner=[9, 9])), r"its tensor 'partner' "
                           r"\(\(2, 4, 8, 8\), torch.float64\) disagrees with its metadata \(\[9, 9\], "
                           r"torch.float64\)\.", SAVE_AGAIN),
    "missing shapes": (edit_record(lambda r: r.pop("shapes")), r"its record lacks \['shapes'\]\.", SAVE_AGAIN),
    "shapes a list": (edit_record(lambda r: r.update(shapes=list(r["shapes"].values()))),
                      r"its record's 'shapes' is list, not a mapping of tensor names\.", SAVE_AGAIN),
    "params a list": (edit_record(lambda r: r.update(params=[0.94])), r"its record's 'params' is list, not a "
                      r"mapping\.", SAVE_AGAIN),
    "a shape a string": (edit_record(lambda r: r["shapes"].update(branch="2x4x8x8")), r"its record's 'shapes' "
                         r"gives tensor 'branch' as '2x4x8x8': expected a list of sizes\.", SAVE_AGAIN),
    "gamma a string": (edit_record(put("params", gamma="0.0")), r"its BDIA setting 'gamma' is '0\.0': expected a "
                       r"number, got '0\.0'\.", SAVE_AGAIN),
    "gamma out of range": (edit_record(put("params", gamma=0.0)), r"its BDIA setting 'gamma' is 0\.0: gamma must "
                           r"be in \(0, 1\], got 0\.0\.", SAVE_AGAIN),
    "another method's setting": (edit_record(lambda r: r.update(params={"mix_weight": 0.93})),
                                 r"its settings are \['mix_weight'\], but BDIA's are \['gamma'\]\.", SAVE_AGAIN),
    "unknown method": (edit_record(put("fields", method="ddim")), r"its field 'method' is 'ddim': expected one of "
                       + re.escape(", ".join(repr(name) for name in SPECS)) + r"\.", SAVE_AGAIN),
    "unknown state": (edit_record(put("fields", state="half")), r"its field 'state' is 'half': expected 'noisy' "
                      r"or 'clean'\.", SAVE_AGAIN),
    "missing field": (edit_record(lambda r: r["fields"].pop("latent_format")), r"its record lacks the fields "
                      r"\['latent_format'\]\.", SAVE_AGAIN),
    "unknown field": (edit_record(put("fields", colour="red")), r"its record holds fields this version does not "
                      r"know: \['colour'\]\.", UPDATE),
    "steps zero": (edit_record(put("fields", steps=0)), r"its field 'steps' is 0: expected a positive whole "
                   r"number\.", SAVE_AGAIN),
    "denoise above 1": (edit_record(put("fields", denoise=1.5)), r"its field 'denoise' is 1\.5: expected a number "
                        r"from 0 to 1\.", SAVE_AGAIN),
    "cfg a string": (edit_record(put("fields", cfg="7")), r"its field 'cfg' is '7': expected a finite number\.",
                     SAVE_AGAIN),
    "cfg infinite": (edit_record(put("fields", cfg=float("inf"))), r"its field 'cfg' is inf: expected a finite "
                     r"number\.", SAVE_AGAIN),
    "model class a number": (edit_record(put("fields", model_class=3)), r"its field 'model_class' is 3: expected "
                             r"a string\.", SAVE_AGAIN),
    "batch_index of strings": (edit_record(lambda r: r.update(batch_index=["a"])), r"its batch_index is \['a'\]: "
                               r"expected a list of whole numbers, 0 or more \(or none\)\.", SAVE_AGAIN),
    "wrong format": (rewrite(set_metadata(format="someone-else/1")), r"it is not an inverted latent of this pack "
                     r"\(format 'someone-else/1'\)\.", SAVE_AGAIN),
    "newer format": (rewrite(set_metadata(format="comfyui-exact-inversion/9")), r"its format "
                     r"'comfyui-exact-inversion/9' is not one this version of the pack reads", UPDATE),
    "partner of another shape": (edit_tensors(lambda t: t.update(partner=t["partner"][:1].clone())),
                                 r"its branch, partner and source must have one shape", SAVE_AGAIN),
    "sigmas rising": (edit_tensors(lambda t: t.update(sigmas=t["sigmas"].flip(0).clone())), r"its sigmas \[.*\] "
                      r"are not a schedule: expected positive, finite, strictly decreasing levels\.", SAVE_AGAIN),
    "one sigma": (edit_tensors(lambda t: t.update(sigmas=t["sigmas"][:1].clone())), r"its sigmas \(\(1,\), "
                  r"torch.float64\) are not a schedule", SAVE_AGAIN),
    "an extra tensor": (edit_tensors(lambda t: t.update(extra=torch.zeros(2))), r"it holds tensors no inverted "
                        r"latent has: \['extra'\]\.", SAVE_AGAIN),
    "an integer mask": (edit_tensors(lambda t: t.update(noise_mask=torch.zeros(1, 8, 8, dtype=torch.int64))),
                        r"its tensor 'noise_mask' has dtype 'I64', which no inverted latent holds\.", SAVE_AGAIN),
}


# The refusals that need the tensor data: every other one is made from the header alone.
NEED_THE_DATA = {"edited tensor", "edited setting", "edited field", "sigmas rising"}


@pytest.mark.parametrize("damage", DAMAGES, ids=list(DAMAGES))
def test_a_damaged_or_edited_file_is_refused(comfy, saved, damage, monkeypatch):
    NodeInputError = node_error()
    storage = pack_module("comfy_adapter.storage")
    damage_file, problem, fix = DAMAGES[damage]
    name = f"storage_damaged_{damage.replace(' ', '_')}.inversion"
    shutil.copy(saved["path"], input_path(name))
    damage_file(input_path(name))
    reads = []
    monkeypatch.setattr(storage, "load_file", lambda path: reads.append(path) or load_file(path))
    with pytest.raises(NodeInputError, match=LOAD + re.escape(repr(name)) + ": " + problem + ".* " + fix):
        run_node(comfy, "LoadInvertedLatent", inverted_latent=name)
    # a foreign or hostile file is refused before its tensors are read
    assert len(reads) == (damage in NEED_THE_DATA)
    os.remove(input_path(name))
    assert_good_file_loads(comfy, saved)


# ---- names the node does not list


@pytest.fixture
def outside_file(saved):
    """A good .inversion file outside the input and output folders (beside them), and an
    input-folder symlink to it: a node that opened either would load it."""
    import folder_paths

    outside = os.path.join(os.path.dirname(folder_paths.get_input_directory()), "outside.inversion")
    shutil.copy(saved["path"], outside)
    link = input_path("storage_link_out.inversion")
    os.symlink(outside, link)
    with open(input_path("storage_notes.txt"), "w") as f:
        f.write("not an inversion")
    yield outside
    for path in (outside, link, input_path("storage_notes.txt")):
        os.remove(path)


BAD_NAMES = {
    "/etc/passwd": "/etc/passwd",
    "../../x": "../../x",
    "a file beside the input folder": "../outside.inversion",
    "its absolute path": "OUTSIDE",
    "a symlink leading out": "storage_link_out.inversion",
    "the output file through the input folder": "../output/inverted/ComfyUI_00001_.inversion",
    "the output file without its annotation": "GOOD_UNANNOTATED",
    "an unlisted name": "storage_missing.inversion",
    "another annotation": "GOOD [temp]",
    "a file that is no inversion": "storage_notes.txt",
    "a number": 5,
}


@pytest.mark.parametrize("case", BAD_NAMES, ids=list(BAD_NAMES))
def test_a_name_it_does_not_list_is_refused(comfy, saved, outside_file, case):
    NodeInputError = node_error()
    load = comfy.NODE_CLASS_MAPPINGS["LoadInvertedLatent"]
    unannotated = saved["name"].removesuffix(" [output]")
    name = {"OUTSIDE": outside_file, "GOOD_UNANNOTATED": unannotated,
            "GOOD [temp]": f"{unannotated} [temp]"}.get(BAD_NAMES[case], BAD_NAMES[case])
    assert name not in listed(comfy)
    message = (LOAD + re.escape(repr(name)) + r" is not one of the \.inversion files it lists \(those in ComfyUI's "
               r"input folder, and those in its output folder, marked \[output\]\)\. " + CHOOSE)
    assert re.match(message, load.VALIDATE_INPUTS(inverted_latent=name))
    with pytest.raises(NodeInputError, match=message):
        run_node(comfy, "LoadInvertedLatent", inverted_latent=name)
    assert re.match(message, load.IS_CHANGED(inverted_latent=name))  # no file was hashed
    assert_good_file_loads(comfy, saved)


def test_comfyui_reports_a_name_it_does_not_list_before_running_the_prompt(comfy, saved):
    """An API prompt naming a path is stopped by ComfyUI's own validation (which skips its
    list check for an input that VALIDATE_INPUTS takes), with the node's message; the
    listed name passes."""
    import asyncio
    import inspect

    import execution

    def errors(name):
        prompt = {"1": {"class_type": "LoadInvertedLatent", "inputs": {"inverted_latent": name}},
                  "2": {"class_type": "SaveLatent", "inputs": {"samples": ["1", 0], "filename_prefix": "x"}}}
        result = execution.validate_prompt("storage", prompt, None)
        result = asyncio.run(result) if inspect.iscoroutine(result) else result
        return result[3].get("1", {}).get("errors", [])

    [error] = errors("/etc/passwd")
    assert error["type"] == "custom_validation_failed"
    assert re.search(r"Load Inverted Latent: input 'inverted_latent': '/etc/passwd' is not one of the "
                     r"\.inversion files it lists .* " + CHOOSE, error["details"])
    assert errors(saved["name"]) == []


# ---- older files, writing, plain latents and wrong models


def format_1_digest(tensors):
    """The digest format 1 wrote, as its code computed it: the tensors only."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def write_format_1(source, path, edit=lambda record: None):
    """Write `source`'s tensors and record as a format-1 file: its fields, its digest."""
    with safe_open(source, "pt") as f:
        record = json.loads(f.metadata()["record"])
    tensors = load_file(source)
    record["fields"] = {key: value for key, value in record["fields"].items() if key in FORMAT_1_FIELDS}
    edit(record)
    save_file(tensors, path, metadata={"format": "comfyui-exact-inversion/1", "record": json.dumps(record),
                                       "sha256": format_1_digest(tensors)})


def test_a_format_1_file_still_loads_and_is_checked_the_same_way(comfy, scene, saved):
    NodeInputError = node_error()
    write_format_1(saved["path"], input_path("storage_format_1.inversion"))
    loaded = run_node(comfy, "LoadInvertedLatent", inverted_latent="storage_format_1.inversion")
    newer = {"cfg", "model_fingerprint", "positive_digest", "negative_digest"}  # fields format 1 did not have
    assert_same_inversion(loaded, saved["inverted"], skip=newer & set(saved["inverted"]["exact_inversion"]))
    assert torch.equal(sample(comfy, scene, "BDIA", loaded, positive="edit")["samples"], saved["edited"]["samples"])

    write_format_1(saved["path"], input_path("storage_format_1_bad.inversion"), put("params", gamma="0.0"))
    with pytest.raises(NodeInputError, match=LOAD + r"'storage_format_1_bad.inversion': its BDIA setting 'gamma' "
                       r"is '0\.0': expected a number, got '0\.0'\. " + SAVE_AGAIN):
        run_node(comfy, "LoadInvertedLatent", inverted_latent="storage_format_1_bad.inversion")
    rewrite(nudge_partner, redigest=False)(input_path("storage_format_1.inversion"))
    with pytest.raises(NodeInputError, match=LOAD + r"'storage_format_1.inversion': its tensors or record do not "
                       r"match the digest"):
        run_node(comfy, "LoadInvertedLatent", inverted_latent="storage_format_1.inversion")


def test_a_failed_write_leaves_no_file(comfy, saved, monkeypatch):
    """Save writes a temporary file and renames it: a write that fails midway (a full disk)
    leaves neither a half file that Load would list nor the temporary file."""
    storage = pack_module("comfy_adapter.storage")
    folder = os.path.dirname(saved["path"])
    before = sorted(os.listdir(folder))

    def fail_midway(tensors, path, metadata):
        with open(path, "wb") as f:
            f.write(b"half a file")
        raise OSError("No space left on device")

    monkeypatch.setattr(storage, "save_file", fail_midway)
    with pytest.raises(OSError, match="No space left on device"):
        save_to_output(comfy, saved["inverted"])
    assert sorted(os.listdir(folder)) == before


def test_a_masked_inversion_keeps_its_mask(comfy, scene):
    mask = torch.zeros(1, 64, 64)
    mask[:, :, :32] = 1.0
    masked = run_node(comfy, "SetLatentNoiseMask", samples=scene["latent"], mask=mask)
    inverted = invert(comfy, scene, "EDICT", masked)
    loaded, _ = save_and_load(comfy, inverted, "storage/masked")
    assert torch.equal(loaded["noise_mask"], inverted["noise_mask"])
    edited = sample(comfy, scene, "EDICT", loaded, positive="edit")
    assert torch.equal(edited["samples"], sample(comfy, scene, "EDICT", inverted, positive="edit")["samples"])


def test_a_plain_latent_and_a_wrong_model_are_refused(comfy, scene, unsaved):
    NodeInputError = node_error()
    with pytest.raises(NodeInputError, match=r"Save Inverted Latent: input 'latent': it is a plain latent"):
        comfy.NODE_CLASS_MAPPINGS["SaveInvertedLatent"]().save(scene["latent"], "storage/plain")
    loaded, _ = save_and_load(comfy, unsaved("EDICT"), "storage/model")
    flow = patched_model(comfy, comfy.tiny["model"], "ModelSamplingSD3", shift=3.0)
    with pytest.raises(NodeInputError, match=r"EDICT Sample: input 'model': latent_image was inverted with a "
                       r"EPS model, but this model is CONST"):
        sample(comfy, scene, "EDICT", loaded, model=flow)
    assert glob.glob(input_path("storage_model_*.inversion"))


def test_a_record_that_load_would_refuse_is_not_saved(comfy, unsaved):
    """Save checks the record as load does, so it never writes a file that cannot be loaded."""
    NodeInputError = node_error()
    inverted = unsaved("BDIA")
    broken = dict(inverted, exact_inversion=dict(inverted["exact_inversion"], gamma="0.94"))
    with pytest.raises(NodeInputError, match=r"^Save Inverted Latent: input 'latent': its record cannot be saved: "
                       r"its BDIA setting 'gamma' is '0\.94': expected a number, got '0\.94'\. Connect the Invert "
                       r"or Sample node's output directly\."):
        comfy.NODE_CLASS_MAPPINGS["SaveInvertedLatent"]().save(broken, "storage/broken")


def test_after_every_refusal_a_save_load_and_edit_round_trip(comfy, scene, saved):
    """Last in the module: after all the refusals above, Save, Load (from the output folder)
    and an edit still give what the never-saved inversion gives, bit for bit."""
    name, _ = save_to_output(comfy, saved["inverted"], "storage/after_refusals")
    loaded = run_node(comfy, "LoadInvertedLatent", inverted_latent=name)
    assert_same_inversion(loaded, saved["inverted"])
    assert torch.equal(sample(comfy, scene, "BDIA", loaded, positive="edit")["samples"], saved["edited"]["samples"])


def test_the_listing_reads_a_folder_again_only_when_it_changed(comfy, saved):
    """Load Inverted Latent's list follows the folders (a file added in a subfolder, a file
    removed) while a folder whose mtime stands still is not read again: its entries are taken
    from the listing's cache (a stale cache entry planted for an unchanged folder shows)."""
    import folder_paths

    storage_nodes = pack_module("nodes.storage")
    folder = os.path.join(folder_paths.get_input_directory(), "listing_test", "deeper")
    os.makedirs(folder, exist_ok=True)
    _, source = save_to_output(comfy, saved["inverted"], "listing_test/x")
    shutil.copy(source, os.path.join(folder, "a.inversion"))
    assert "listing_test/deeper/a.inversion" in listed(comfy)
    os.remove(os.path.join(folder, "a.inversion"))
    assert "listing_test/deeper/a.inversion" not in listed(comfy)
    shutil.copy(source, os.path.join(folder, "b.inversion"))
    assert "listing_test/deeper/b.inversion" in listed(comfy)
    # an unchanged folder (mtime set into the past, so not "recent") is served from the cache
    past = time.time() - 60
    os.utime(folder, (past, past))
    listed(comfy)
    mtime, files, folders = storage_nodes._FOLDERS[folder]
    assert files == ["b.inversion"] and mtime == os.stat(folder).st_mtime_ns
    storage_nodes._FOLDERS[folder] = (mtime, ["b.inversion", "planted.inversion"], folders)
    open(os.path.join(folder, "planted.inversion"), "wb").close()
    os.utime(folder, (past, past))  # the new file, but the folder's mtime as it was
    assert "listing_test/deeper/planted.inversion" in listed(comfy)  # from the cache, not a read
    os.remove(os.path.join(folder, "planted.inversion"))
    os.utime(folder, None)  # the mtime moves: read again
    assert "listing_test/deeper/planted.inversion" not in listed(comfy)
    shutil.rmtree(os.path.join(folder_paths.get_input_directory(), "listing_test"))
    assert not any(n.startswith("listing_test/") and not n.endswith(" [output]") for n in listed(comfy))
