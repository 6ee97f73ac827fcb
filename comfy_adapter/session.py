"""Run an edict_core routine inside one real ComfyUI sampling session.

`run_in_session` hands a ComfyUI guider (CFGGuider or any subclass) a custom Sampler, so the model is loaded and
patched once, cond and uncond go out in one batch, and LoRA, ControlNet, hooks and model
wrappers apply as they do for KSampler. The routine gets a `ModelSession`: the guided
denoiser in sampler space, the model's input scaling c(sigma), the two ends of the state
(latent space <-> the clean level of sampler space), and a per-step report that drives
ComfyUI's progress bar, live preview and Cancel button.

ComfyUI's own sampler path is bypassed at both ends on purpose (algorithms.md section 2):
`inner_sample` shifts the latent only when it is non-zero and casts the result to float32,
and KSAMPLER noise-scales at sigmas[0] and sigmas[-1]. The routine's float64 result is
kept on the Sampler object and never goes through that path.
"""

import logging
from contextlib import contextmanager

import torch
from tqdm.auto import tqdm

import comfy.model_management
import comfy.samplers
import comfy.utils
import latent_preview

from .errors import NodeInputError

log = logging.getLogger("exact_inversion")


def model_sampling_kind(model_sampling):
    """'EPS', 'V_PREDICTION', 'EDM', 'CONST', ...: the prediction type of a model_sampling
    object. Patch nodes build subclasses on the fly (ModelSamplingAdvanced, ...), so the
    kind is the first mixin in the MRO that is not the torch module holding the schedule."""
    for cls in type(model_sampling).__mro__:
        if cls is not object and not issubclass(cls, torch.nn.Module):
            return cls.__name__
    return type(model_sampling).__name__


def latent_format_name(model):
    return type(model.get_model_object("latent_format")).__name__


def has_float64(device):
    return torch.device(device).type != "mps"


def state_dtype(device):
    """float64 where the device has it. Apple's MPS has no float64, so the pair falls back to
    float32 there, which loses digits in the round trip but keeps it close."""
    if has_float64(device):
        return torch.float64
    if not getattr(state_dtype, "warned", False):
        log.warning("exact inversion: this device has no float64; keeping the pair in "
                    "float32, so round trips are close but not exact to float64 precision.")
        state_dtype.warned = True
    return torch.float32


def diverged(node, when):
    return NodeInputError(
        node, "model", f"the run diverged: the latent holds NaN or infinite values {when}, so it "
        "was stopped and returns nothing.",
        "Lower cfg, check the model and its patches (LoRA, ControlNet), or try another scheduler.")


class ModelSession:
    """What an edict_core routine needs from ComfyUI during one sampling session.

    `denoise(x, sigma)` is edict_core's `model`: x [B, C, ...] in sampler space at noise
    level sigma (state dtype), returns the CFG-combined denoised estimate, same shape, in
    float32 (edict_core's arithmetic promotes it to the state dtype; no float64 copy is
    kept). The network itself runs in its own dtype: the state goes in as float32, the
    dtype of ComfyUI's samplers, and the model casts it further as it always does.
    """

    def __init__(self, node, model_wrap, extra_args, progress, total_steps, device):
        self.node = node
        self.total_steps = total_steps
        self.model_wrap = model_wrap
        self.extra_args = extra_args
        self.model_sampling = model_wrap.inner_model.model_sampling
        self.device = device
        self.dtype = state_dtype(device)
        self._progress = progress

    def denoise(self, x, sigma):
        comfy.model_management.throw_exception_if_processing_interrupted()
        x_model = x.to(torch.float32)
        sigma_batch = x_model.new_full((x_model.shape[0],), sigma)
        return self.model_wrap(x_model, sigma_batch, **self.extra_args)

    def input_scale(self, sigma):
        one = torch.ones(1, dtype=torch.float64)
        return float(self.model_sampling.calculate_input(torch.tensor(sigma, dtype=torch.float64), one))

    def to_model_space(self, latent):
        """Latent space ([B, C, ...], as in LATENT["samples"]) -> the model's latent space,
        on the session's device in the state dtype."""
        latent = latent.to(self.device, self.dtype)
        return self.model_wrap.inner_model.process_latent_in(latent)

    def to_latent_space(self, x):
        """The inverse of to_model_space; returns a CPU tensor in the state dtype."""
        return self.model_wrap.inner_model.process_latent_out(x).cpu()

    def enter_clean(self, x, sigma_floor):
        """A clean model-space latent as the sampler-space state at sigma_floor (for CONST
        models that is (1 - sigma_floor) * x; for the others x itself)."""
        sigma = torch.tensor(sigma_floor, dtype=x.dtype, device=x.device)
        return self.model_sampling.noise_scaling(sigma, torch.zeros_like(x), x)

    def leave_clean(self, x, sigma_floor):
        sigma = torch.tensor(sigma_floor, dtype=x.dtype, device=x.device)
        return self.model_sampling.inverse_noise_scaling(sigma, x)

    def enter_noisy(self, latent, noise, sigmas):
        """KSampler's start: seeded noise added to a model-space latent at sigmas[0]."""
        max_denoise = comfy.samplers.Sampler().max_denoise(self.model_wrap, sigmas)
        sigma = torch.tensor(float(sigmas[0]), dtype=latent.dtype, device=latent.device)
        return self.model_sampling.noise_scaling(sigma, noise.to(latent), latent, max_denoise)

    def report(self, info):
        """edict_core's callback: progress bar, preview, the Cancel button, and a stop as soon
        as the state stops being finite (a diverging model would otherwise return NaNs)."""
        if not torch.isfinite(info["x"]).all():
            raise diverged(self.node, f"after step {info['i'] + 1} of {self.total_steps} "
                                      f"(sigma {info['sigma']:.4g})")
        self._progress(info)
        comfy.model_management.throw_exception_if_processing_interrupted()


@contextmanager
def model_session(node, model_wrap, extra_args, callback, total_steps, device, disable_pbar):
    """A ModelSession inside a Sampler's `sample`, with ComfyUI's progress bar (tqdm in the
    terminal, the node's bar and live preview in the UI through `callback`)."""
    bar = tqdm(total=total_steps, disable=disable_pbar)
    done = [0]

    def progress(info):
        # Counted here, not from info["i"]: a run from a two-level pair starts at its step 1,
        # and the bar must end at its total, the steps that run.
        done[0] += 1
        bar.update(1)
        if callback is not None:
            callback(done[0] - 1, info["denoised"].to(torch.float32), info["x"].to(torch.float32), total_steps)

    try:
        yield ModelSession(node, model_wrap, extra_args, progress, total_steps, device)
    finally:
        bar.close()


def generate_from_noise(session, method, clean, noise, sigmas):
    """A plain latent's generation: KSampler's start (seeded noise scaled in at sigmas[0]),
    the method's start_noisy, then its sample. clean: the model-space latent [B, C, ...] (zeros
    for text-to-image), noise: the same shape, sigmas: prepared. Returns the clean pair in
    sampler space at sigmas[-1]; pair[0] is the result."""
    spec, settings = method.spec, dict(callback=session.report, **method.params)
    noisy = session.enter_noisy(clean, noise, sigmas)
    pair = spec.start_noisy(session.denoise, noisy, sigmas, session.input_scale, **settings)
    return spec.sample(session.denoise, pair, sigmas, session.input_scale, **settings)


class _RoutineSampler(comfy.samplers.Sampler):
    def __init__(self, node, routine, total_steps):
        self.node = node
        self.routine = routine
        self.total_steps = total_steps
        self.result = None

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None,
               denoise_mask=None, disable_pbar=False):
        with model_session(self.node, model_wrap, extra_args, callback, self.total_steps, noise.device,
                           disable_pbar) as session:
            self.result = self.routine(session)
        return noise  # ComfyUI casts and shifts this; the real result is self.result


def run_in_session(node, guider, latent, sigmas, total_steps, routine, seed=0, denoise_mask=None):
    """Run `routine(session)` inside one sampling session of `guider` and return its result,
    a list of finite tensors. `node` names the node in errors.

    guider: a ComfyUI GUIDER (CFGGuider or a subclass: BasicGuider, DualCFGGuider, ...) with
    its model and conds set. latent: [B, C, ...] latent space, the clean latent that both
    directions of a round trip hand to the guider (shapes, device placement, and the conds
    of concat-conditioned models, which fall back to it). sigmas: the schedule the routine
    walks (descending); ComfyUI exposes it to model patches as sample_sigmas. total_steps:
    how many times the routine reports, for the progress bar. denoise_mask: the latent's
    noise_mask, which such conds also read; the masking itself is the caller's.
    """
    sampler = _RoutineSampler(node, routine, total_steps)
    callback = latent_preview.prepare_callback(guider.model_patcher, total_steps)
    latent = latent.to(torch.float32)
    guider.sample(torch.zeros_like(latent), latent, sampler, sigmas.to(torch.float32),
                  denoise_mask=denoise_mask, callback=callback,
                  disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
    if not all(torch.isfinite(t).all() for t in sampler.result):
        raise diverged(node, f"after the last of its {total_steps} steps")
    return sampler.result
