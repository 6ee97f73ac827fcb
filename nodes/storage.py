"""Save Inverted Latent / Load Inverted Latent: invert a photo once, edit it many times,
across sessions, with nothing lost (comfy_adapter.storage)."""

import hashlib
import os

import folder_paths

from ..comfy_adapter import storage
from .exact_inversion import CATEGORY


def _inverted_files():
    input_dir = folder_paths.get_input_directory()
    return sorted(f for f in os.listdir(input_dir)
                  if f.endswith(storage.EXTENSION) and os.path.isfile(os.path.join(input_dir, f)))


class SaveInvertedLatent:
    DESCRIPTION = ("Save an inverted latent with its float64 pair, sigmas, settings and model identity "
                   f"(a {storage.EXTENSION} file in the output folder). Save Latent keeps only the "
                   "noisy samples, which cannot regenerate the image.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "latent": ("LATENT", {"tooltip": "The output of an Invert node (or of EDICT Sample)."}),
            "filename_prefix": ("STRING", {"default": "inverted/ComfyUI",
                                           "tooltip": "Name in the output folder; a counter is added. "
                                           f"Move the {storage.EXTENSION} file to the input folder to load it."}),
        }}

    def save(self, latent, filename_prefix):
        folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory())
        name = f"{filename}_{counter:05}_{storage.EXTENSION}"
        storage.save("Save Inverted Latent", latent, os.path.join(folder, name))
        return {"ui": {"latents": [{"filename": name, "subfolder": subfolder, "type": "output"}]}}


class LoadInvertedLatent:
    DESCRIPTION = (f"Load an inverted latent saved by Save Inverted Latent (a {storage.EXTENSION} file "
                   "in the input folder) and connect it to the Sample node of its method, with the "
                   "model that inverted it.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The inverted latent as it was saved, bit for bit.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"inverted_latent": (_inverted_files(), {
            "tooltip": f"A {storage.EXTENSION} file in ComfyUI's input folder."})}}

    def load(self, inverted_latent):
        return (storage.load("Load Inverted Latent", folder_paths.get_annotated_filepath(inverted_latent)),)

    @classmethod
    def IS_CHANGED(cls, inverted_latent):
        with open(folder_paths.get_annotated_filepath(inverted_latent), "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()

    @classmethod
    def VALIDATE_INPUTS(cls, inverted_latent):
        if not folder_paths.exists_annotated_filepath(inverted_latent):
            return f"Load Inverted Latent: no file {inverted_latent!r} in the input folder."
        return True


NODE_CLASS_MAPPINGS = {"SaveInvertedLatent": SaveInvertedLatent, "LoadInvertedLatent": LoadInvertedLatent}
NODE_DISPLAY_NAME_MAPPINGS = {"SaveInvertedLatent": "Save Inverted Latent",
                              "LoadInvertedLatent": "Load Inverted Latent"}
