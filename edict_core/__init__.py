"""Exact diffusion inversion (EDICT, BDIA) in ComfyUI's sampler coordinates.

Pure torch: no ComfyUI import. Every routine works on states in the variance-exploding
"sampler space" that ComfyUI's k-diffusion samplers use, over two callables:

    model(x, sigma) -> denoised      x: [B, ...] at noise level sigma (a Python float)
    input_scale(sigma) -> float      c(sigma): the factor the network applies to its input

See ../shared/docs/algorithms.md (mirrored in README) for the recurrences.
"""

from .bdia import invert_bdia, sample_bdia, sample_bdia_pair
from .ddim import invert_ddim, sample_ddim
from .edict import invert_edict, sample_edict
from .schedule import denoise_schedule, prepare_sigmas
from .validation import check_gamma, check_mix_weight, check_steps, relative_error

__all__ = [
    "invert_bdia", "sample_bdia", "sample_bdia_pair",
    "invert_ddim", "sample_ddim",
    "invert_edict", "sample_edict",
    "denoise_schedule", "prepare_sigmas",
    "check_gamma", "check_mix_weight", "check_steps", "relative_error",
]
