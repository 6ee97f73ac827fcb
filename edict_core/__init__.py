"""Exact diffusion inversion (EDICT, BDIA, O-BELM, Rex) in ComfyUI's sampler coordinates.

Pure torch: no ComfyUI import. Every routine works on states in the variance-exploding
"sampler space" that ComfyUI's k-diffusion samplers use, over two callables:

    model(x, sigma) -> denoised      x: [B, C, ...] (an image or a video latent) at noise level sigma (a Python float)
    input_scale(sigma) -> float      c(sigma): the factor the network applies to its input

See docs/algorithms.md in this repository for the recurrences and their traps.
"""

from ._common import DEFAULT_GAMMA, DEFAULT_MIX_WEIGHT, DEFAULT_ZETA
from .bdia import invert_bdia, sample_bdia, sample_bdia_pair
from .ddim import invert_ddim, sample_ddim
from .edict import invert_edict, sample_edict
from .obelm import invert_obelm, sample_obelm, sample_obelm_pair
from .rex import invert_rex, sample_rex
from .schedule import denoise_schedule, prepare_sigmas
from .validation import check_gamma, check_mix_weight, check_steps, relative_error

__all__ = [
    "DEFAULT_GAMMA", "DEFAULT_MIX_WEIGHT", "DEFAULT_ZETA",
    "invert_bdia", "sample_bdia", "sample_bdia_pair",
    "invert_ddim", "sample_ddim",
    "invert_edict", "sample_edict",
    "invert_obelm", "sample_obelm", "sample_obelm_pair",
    "invert_rex", "sample_rex",
    "denoise_schedule", "prepare_sigmas",
    "check_gamma", "check_mix_weight", "check_steps", "relative_error",
]
