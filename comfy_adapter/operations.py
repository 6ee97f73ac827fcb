"""What the nodes do, one function per node, in ComfyUI terms: MODEL, CONDITIONING, LATENT.

Each function validates its inputs, builds the schedule, and runs one edict_core routine
in one ComfyUI sampling session (session.run_in_session). `node` is the display name that
error messages start with.
"""

import logging
from dataclasses import dataclass

import torch

import comfy.sample
import comfy.sampler_helpers
import comfy.samplers

from .. import edict_core as core
from .errors import NodeInputError, checked
from .record import METHOD_TITLES, check_pair, plain_latent, read_record, with_record
from .session import latent_format_name, model_sampling_kind, run_in_session

log = logging.getLogger("exact_inversion")


@dataclass(frozen=True)
class Settings:
    """Widget values that shape the trajectory. Exactness needs the same ones both ways."""
    method: str  # "edict" | "bdia"
    steps: int
    scheduler: str
    denoise: float
    mix_weight: float = 0.93
    leapfrog: bool = True
    gamma: float = 0.94

    def validated(self, node):
        checked(node, "steps", core.check_steps, self.steps)
        if self.scheduler not in comfy.samplers.SCHEDULER_NAMES:
            raise NodeInputError(node, "scheduler", f"unknown scheduler {self.scheduler!r}.",
                                 f"Use one of {', '.join(comfy.samplers.SCHEDULER_NAMES)}.")
        if not 0.0 <= float(self.denoise) <= 1.0:
            raise NodeInputError(node, "denoise", f"denoise must be in [0, 1], got {self.denoise}.",
                                 "Use about 0.6 to 0.9 for edits, 1.0 for text-to-image.")
        if self.method == "edict":
            checked(node, "mix_weight", core.check_mix_weight, self.mix_weight)
        else:
            checked(node, "gamma", core.check_gamma, self.gamma)
        return self

    def trajectory_fields(self):
        fields = {"steps": self.steps, "scheduler": self.scheduler, "denoise": float(self.denoise)}
        if self.method == "edict":
            fields.update(mix_weight=float(self.mix_weight), leapfrog=bool(self.leapfrog))
        else:
            fields.update(gamma=float(self.gamma))
        return fields


def _sigmas(model, settings):
    """The prepared float64 schedule (see edict_core.prepare_sigmas); empty for denoise 0."""
    model_sampling = model.get_model_object("model_sampling")
    full = core.denoise_schedule(
        lambda n: comfy.samplers.calculate_sigmas(model_sampling, settings.scheduler, n),
        settings.steps, settings.denoise)
    if full.numel() == 0:
        return full.to(torch.float64)
    return core.prepare_sigmas(full, float(model_sampling.sigma_min))


def _samples(node, latent):
    """The latent's samples [B, C, H, W], after refusing what no exact run can use."""
    samples = latent["samples"]
    if getattr(samples, "is_nested", False) or samples.ndim != 4:
        raise NodeInputError(node, "latent_image",
                             f"expected an image latent [batch, channels, height, width], got shape "
                             f"{tuple(samples.shape)}.", "Exact inversion supports image models only.")
    if not torch.isfinite(samples).all():
        raise NodeInputError(node, "latent_image", "it holds NaN or infinite values.",
                             "Check the nodes before it (VAE Encode of a broken image?).")
    record = read_record(latent)
    if record is not None and not torch.isfinite(record["partner"]).all():
        raise NodeInputError(node, "latent_image", "its pair partner holds NaN or infinite values.",
                             f"Invert again with {METHOD_TITLES[record['method']]} Invert.")
    mask = latent.get("noise_mask")
    if mask is not None and not torch.isfinite(mask).all():
        raise NodeInputError(node, "latent_image", "its noise mask holds NaN or infinite values.",
                             "Check the mask nodes before Set Latent Noise Mask.")
    return samples


def _keep_outside_mask(latent, source, results):
    """Masked editing: where the latent's noise_mask is 0 each result is `source` bit for bit,
    where it is 1 the result as generated, and a soft mask blends the two. The whole latent
    is still generated, so the edit sees its surroundings. source: [B, C, H, W] latent
    space; results: tensors of that shape in latent space."""
    mask = latent.get("noise_mask")
    if mask is None:
        return results
    source = source.to(torch.float64)
    mask = comfy.sampler_helpers.prepare_mask(mask, source.shape, source.device).to(torch.float64)
    # source + mask * (r - source) is source exactly wherever mask is 0.
    return [(source + mask * (r.to(torch.float64) - source)).to(r.dtype) for r in results]


def _model_identity(model):
    return model_sampling_kind(model.get_model_object("model_sampling")), latent_format_name(model)


def invert(node, model, positive, negative, latent, cfg, settings):
    """EDICT or BDIA inversion of a clean latent (or of an EDICT Sample pair)."""
    settings.validated(node)
    samples = _samples(node, latent)
    kind, latent_format = _model_identity(model)
    record = read_record(latent)
    start_pair = None
    if record is not None and record["state"] == "noisy":
        raise NodeInputError(node, "latent_image",
                             f"it is already inverted (by {METHOD_TITLES[record['method']]} Invert).",
                             "Connect the clean latent (VAE Encode's output), not an inverted one.")
    if record is not None and record["method"] == "edict" and settings.method == "edict":
        # EDICT Sample's output is a pair at the clean end: invert it as it is, exactly.
        check_pair(node, record, samples, kind, latent_format)
        start_pair = (record["branch"], record["partner"])
    sigmas = _sigmas(model, settings)
    if len(sigmas) < 2:  # denoise 0: nothing to invert
        return dict(latent)
    steps = len(sigmas) - 1
    clean_level = float(sigmas[-1])

    def routine(session):
        pair = start_pair or (samples, samples)
        pair = [session.enter_clean(session.to_model_space(t), clean_level) for t in pair]
        if settings.method == "edict":
            noisy = core.invert_edict(session.denoise, pair, sigmas, session.input_scale,
                                      settings.mix_weight, settings.leapfrog, callback=session.report)
        else:
            noisy = core.invert_bdia(session.denoise, pair[0], sigmas, session.input_scale,
                                     settings.gamma, callback=session.report)
        return [session.to_latent_space(t) for t in noisy]

    branch, partner = run_in_session(node, model, positive, negative, cfg, samples, sigmas, steps, routine)
    return with_record(latent, branch, partner, method=settings.method, state="noisy", source=samples,
                       sigmas=sigmas, model_sampling=kind, latent_format=latent_format,
                       **settings.trajectory_fields())


def _log_widget_differences(node, record, settings):
    used = {k: record[k] for k in settings.trajectory_fields()}
    differ = {k: v for k, v in settings.trajectory_fields().items() if used[k] != v}
    if differ:
        log.info("%s: following the inverted latent's settings %s; the widgets' %s are not used "
                 "(only cfg and the conditioning apply).", node, used, differ)


def sample(node, model, positive, negative, latent, cfg, seed, settings):
    """Generate with EDICT or BDIA: from an inverted latent's pair along its own schedule
    (exact regeneration or edit), or from a plain latent like KSampler (seeded noise)."""
    settings.validated(node)
    samples = _samples(node, latent)
    kind, latent_format = _model_identity(model)
    record = read_record(latent)
    title = METHOD_TITLES[settings.method]
    if record is not None and record["state"] == "noisy":
        if record["method"] != settings.method:
            other = METHOD_TITLES[record["method"]]
            raise NodeInputError(node, "latent_image", f"it was inverted with {other} Invert.",
                                 f"Connect it to {other} Sample, or invert with {title} Invert.")
        check_pair(node, record, samples, kind, latent_format)
        _log_widget_differences(node, record, settings)
        settings = Settings(method=settings.method, steps=record["steps"], scheduler=record["scheduler"],
                            denoise=record["denoise"], mix_weight=record.get("mix_weight", 0.93),
                            leapfrog=record.get("leapfrog", True), gamma=record.get("gamma", 0.94))
        sigmas = record["sigmas"]
        start = (record["branch"], record["partner"])
        source = record["source"]
    else:
        samples = comfy.sample.fix_empty_latent_channels(model, samples)
        sigmas = _sigmas(model, settings)
        start = None
        source = samples
        if len(sigmas) < 2:  # denoise 0
            return dict(latent)
        noise = comfy.sample.prepare_noise(samples, seed, latent.get("batch_index"))
    steps = len(sigmas) - 1
    clean_level = float(sigmas[-1])

    def routine(session):
        if start is not None:
            pair = [session.to_model_space(t) for t in start]
        else:
            clean = samples.to(session.device, session.dtype)
            if torch.count_nonzero(clean) > 0:  # as KSampler: an empty latent is not shifted
                clean = session.to_model_space(clean)
            noisy = session.enter_noisy(clean, noise, sigmas)
            pair = [noisy, noisy]
        if settings.method == "edict":
            out = core.sample_edict(session.denoise, pair, sigmas, session.input_scale,
                                    settings.mix_weight, settings.leapfrog, callback=session.report)
        elif start is not None:
            out = [core.sample_bdia_pair(session.denoise, pair, sigmas, session.input_scale,
                                         settings.gamma, callback=session.report)]
        else:
            out = [core.sample_bdia(session.denoise, pair[0], sigmas, session.input_scale,
                                    settings.gamma, callback=session.report)]
        return [session.to_latent_space(session.leave_clean(t, clean_level)) for t in out]

    result = run_in_session(node, model, positive, negative, cfg, samples, sigmas, steps, routine, seed=seed)
    result = _keep_outside_mask(latent, source, result)
    if settings.method == "edict":
        # The pair at the clean end: EDICT Invert takes it back exactly.
        return with_record(latent, result[0], result[1], method="edict", state="clean", source=source,
                           sigmas=sigmas, model_sampling=kind, latent_format=latent_format,
                           **settings.trajectory_fields())
    return plain_latent(latent, result[0])


def ddim_baseline(model, positive, negative, cfg, tensor, settings, invert):
    """DDIM inversion (the usual "unsampling") or DDIM sampling in the same session
    machinery as the nodes: the approximate baseline that the exact methods are measured
    against (tests and bench/); not a node. invert=True takes a clean latent [B, C, H, W]
    (latent space) to the noisy state at sigmas[0] (sampler space, state dtype); invert=False
    takes such a noisy state back to a clean latent (latent space)."""
    sigmas = _sigmas(model, settings)
    clean_level = float(sigmas[-1])

    def routine(session):
        if invert:
            x = session.enter_clean(session.to_model_space(tensor), clean_level)
            return [core.invert_ddim(session.denoise, x, sigmas, callback=session.report)]
        x = core.sample_ddim(session.denoise, tensor.to(session.device, session.dtype), sigmas,
                             callback=session.report)
        return [session.to_latent_space(session.leave_clean(x, clean_level))]

    result, = run_in_session("DDIM", model, positive, negative, cfg, tensor.to(torch.float32), sigmas,
                             len(sigmas) - 1, routine)
    return result


def mix_pair(node, latent, weight):
    """weight * x + (1 - weight) * y of an EDICT pair, as a plain LATENT."""
    record = read_record(latent)
    if record is None:
        raise NodeInputError(node, "latent", "it is a plain latent with no EDICT pair.",
                             "Connect the output of EDICT Sample or EDICT Invert.")
    if record["method"] != "edict":
        raise NodeInputError(node, "latent", "it holds a BDIA pair, whose two states sit at "
                             "different noise levels and cannot be mixed.",
                             "Connect BDIA Sample's output to VAE Decode directly.")
    if not 0.0 <= float(weight) <= 1.0:
        raise NodeInputError(node, "weight", f"weight must be in [0, 1], got {weight}.",
                             "0.5 averages the two branches.")
    if tuple(record["partner"].shape) != tuple(latent["samples"].shape):
        raise NodeInputError(node, "latent", "its samples and its pair partner differ in shape: a "
                             "node between them changed only `samples`.",
                             "Connect EDICT Sample's output directly.")
    x, y = record["branch"], record["partner"]
    return plain_latent(latent, weight * x + (1 - weight) * y)
