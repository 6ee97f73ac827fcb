"""The thin layer between edict_core and ComfyUI: sampling sessions and LATENT records."""
