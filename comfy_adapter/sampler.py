"""An exact method's generation as a ComfyUI SAMPLER, for SamplerCustom and
SamplerCustomAdvanced (text-to-image, img2img): the BDIA authors report better 10-step
FID with gamma 0.5 than DDIM."""

import torch

import comfy.samplers

from .. import edict_core as core
from .errors import NodeInputError
from .operations import blend_outside_mask
from .session import generate_from_noise, model_session

NODE = "Exact Sampler"


class ExactSampler(comfy.samplers.Sampler):
    """Runs `method` (a validated methods.Method) from noise: KSAMPLER's start (noise scaled
    in at sigmas[0]), the method's generation down to the floor that replaces sigma = 0,
    and a noise mask applied to the result as the pack's Sample nodes apply it."""

    def __init__(self, method):
        self.method = method

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None,
               denoise_mask=None, disable_pbar=False):
        model_sampling = model_wrap.inner_model.model_sampling
        try:
            prepared = core.prepare_sigmas(sigmas, float(model_sampling.sigma_min))
        except ValueError as error:
            raise NodeInputError(NODE, "sigmas", str(error), "Connect a scheduler's SIGMAS (noisy to clean).") from None
        if latent_image is None:
            latent_image = torch.zeros_like(noise)
        if len(prepared) < 2:
            return latent_image
        steps = len(prepared) - 1
        self.method.check_steps(NODE, steps, "sigmas")
        reports = self.method.spec.reports(steps, started=True)
        with model_session(NODE, model_wrap, extra_args, callback, reports, noise.device, disable_pbar) as session:
            pair = generate_from_noise(session, self.method, latent_image.to(session.dtype), noise, prepared)
            out = session.leave_clean(pair[0], float(prepared[-1]))
        if denoise_mask is not None:
            out = blend_outside_mask(latent_image, denoise_mask, out)
        return out.to(torch.float32)
