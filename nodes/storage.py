"""Save Inverted Latent / Load Inverted Latent: invert a photo once, edit it many times,
across sessions, with nothing lost (comfy_adapter.storage)."""

import hashlib
import os
import time

import folder_paths

from ..comfy_adapter import storage
from ..comfy_adapter.errors import NodeInputError
from .exact_inversion import CATEGORY, SEARCH_ALIASES

LOAD_NODE = "Load Inverted Latent"
LOAD_INPUT = "inverted_latent"
OUTPUT_ANNOTATION = " [output]"  # as folder_paths.annotated_filepath reads it
HASH_CHUNK_BYTES = 1 << 20


def _inside(directory, path):
    """Whether `path`, symlinks followed, lies under `directory` (symlinks followed)."""
    directory, path = os.path.realpath(directory), os.path.realpath(path)
    try:
        return os.path.commonpath((directory, path)) == directory
    except ValueError:  # another drive (Windows), or a NUL in the name
        return False


# {directory: (mtime_ns, .inversion file names, subdirectory names)} of every folder listed: a
# folder whose mtime is unchanged is not read again, so a listing with 20,000 images in output/
# costs one stat per folder, not a read of every entry (the listing runs on every /object_info,
# validation, IS_CHANGED and load).
_FOLDERS = {}
# A folder changed this recently may change again within the same mtime tick: it is read again.
_RECENT_NS = 2_000_000_000


def _folder(directory):
    """(.inversion file names, subdirectory names) directly in `directory` (symlinked folders
    are not entered, as os.walk does not), read again only when its mtime moved."""
    try:
        mtime = os.stat(directory).st_mtime_ns
    except OSError:
        _FOLDERS.pop(directory, None)
        return [], []
    cached = _FOLDERS.get(directory)
    if cached and cached[0] == mtime and time.time_ns() - mtime > _RECENT_NS:
        return cached[1], cached[2]
    files, folders = [], []
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.name)
                elif entry.name.endswith(storage.EXTENSION):
                    files.append(entry.name)
    except OSError:  # unreadable: listed as empty, as os.walk skips it
        files, folders = [], []
    _FOLDERS[directory] = (mtime, files, folders)
    return files, folders


def _files_under(directory):
    """The .inversion files under `directory`, subfolders included, as paths relative to it
    with "/" separators; a symlink leading out of `directory` is left out."""
    found, pending = [], [""]
    while pending:
        relative = pending.pop()
        files, folders = _folder(os.path.join(directory, relative) if relative else directory)
        for name in files:
            name = f"{relative}/{name}" if relative else name
            path = os.path.join(directory, name)
            if os.path.isfile(path) and _inside(directory, path):
                found.append(name)
        pending.extend(f"{relative}/{folder}" if relative else folder for folder in folders)
    return sorted(found)


def listed_files():
    """{name Load Inverted Latent lists: its path}. The input folder's files under their
    plain names, the output folder's (where Save Inverted Latent writes) annotated " [output]",
    the names ComfyUI's own loaders give (folder_paths.get_annotated_filepath resolves them)."""
    input_dir, output_dir = folder_paths.get_input_directory(), folder_paths.get_output_directory()
    listed = {name: os.path.join(input_dir, name) for name in _files_under(input_dir)}
    listed.update({name + OUTPUT_ANNOTATION: os.path.join(output_dir, name) for name in _files_under(output_dir)})
    return listed


def listed_path(name):
    """The path of a name Load Inverted Latent lists. Anything else, "/etc/passwd" or
    "../x" from an API prompt included, is refused with a NodeInputError, so no path outside
    the input and output folders is ever opened: VALIDATE_INPUTS makes ComfyUI skip its own
    check against the list."""
    path = listed_files().get(name) if isinstance(name, str) else None
    if path is None:
        raise NodeInputError(
            LOAD_NODE, LOAD_INPUT,
            f"{name!r} is not one of the {storage.EXTENSION} files it lists (those in ComfyUI's input "
            f"folder, and those in its output folder, marked{OUTPUT_ANNOTATION}).",
            "Choose a file from the list (press R to refresh it); to load a file from elsewhere, copy it "
            "into the input folder first.")
    return path


def _file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        # In chunks: a large file is hashed in constant memory.
        for chunk in iter(lambda: f.read(HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


class SaveInvertedLatent:
    DESCRIPTION = ("Save an inverted latent with its float64 pair, sigmas, settings and model identity "
                   f"(a {storage.EXTENSION} file in the output folder, which Load Inverted Latent lists). "
                   "Save Latent keeps only the noisy samples, which cannot regenerate the image.")
    CATEGORY = CATEGORY
    SEARCH_ALIASES = SEARCH_ALIASES
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "latent": ("LATENT", {"tooltip": "The output of an Invert node (or of a Sample node)."}),
            "filename_prefix": ("STRING", {"default": "inverted/ComfyUI",
                                           "tooltip": "Name in the output folder; a counter is added. Load "
                                           "Inverted Latent lists the file as e.g. "
                                           f"'inverted/ComfyUI_00001_{storage.EXTENSION}{OUTPUT_ANNOTATION}' "
                                           "(press R to refresh its list)."}),
        }}

    def save(self, latent, filename_prefix):
        folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory())
        name = f"{filename}_{counter:05}_{storage.EXTENSION}"
        storage.save("Save Inverted Latent", latent, os.path.join(folder, name))
        return {"ui": {"latents": [{"filename": name, "subfolder": subfolder, "type": "output"}]}}


class LoadInvertedLatent:
    DESCRIPTION = (f"Load an inverted latent saved by Save Inverted Latent: a {storage.EXTENSION} file in "
                   f"the input folder, or one in the output folder (listed with{OUTPUT_ANNOTATION}). "
                   "Connect it to the Sample node of its method, with the model that inverted it. A file "
                   "that was edited or damaged is refused.")
    CATEGORY = CATEGORY
    SEARCH_ALIASES = SEARCH_ALIASES
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The inverted latent as it was saved, bit for bit.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {LOAD_INPUT: (sorted(listed_files()), {
            "tooltip": f"A {storage.EXTENSION} file in ComfyUI's input folder, or one that Save Inverted "
                       f"Latent wrote to the output folder (marked{OUTPUT_ANNOTATION})."})}}

    def load(self, inverted_latent):
        return (storage.load(LOAD_NODE, listed_path(inverted_latent), name=inverted_latent),)

    @classmethod
    def IS_CHANGED(cls, inverted_latent):
        try:
            return _file_sha256(listed_path(inverted_latent))
        except NodeInputError as error:
            return str(error)  # load() raises the same error
        except OSError:
            return float("nan")  # never equal: load() runs and names the problem

    @classmethod
    def VALIDATE_INPUTS(cls, inverted_latent):
        try:
            listed_path(inverted_latent)
        except NodeInputError as error:
            return str(error)
        return True


NODE_CLASS_MAPPINGS = {"SaveInvertedLatent": SaveInvertedLatent, "LoadInvertedLatent": LoadInvertedLatent}
NODE_DISPLAY_NAME_MAPPINGS = {"SaveInvertedLatent": "Save Inverted Latent",
                              "LoadInvertedLatent": "Load Inverted Latent"}
