"""What the nodes do, in ComfyUI terms: GUIDER, SIGMAS, NOISE, LATENT and a Method.

`invert` and `sample` are the one code path of every node. The advanced nodes hand them a
guider and sigmas as they are; the simple nodes first build a CFGGuider from model, prompts
and cfg, and the sigmas from steps, scheduler and denoise (`simple_guider`, `Schedule`),
as KSampler does. Each runs one edict_core routine in one ComfyUI sampling session
(session.run_in_session). `node` is the display name that error messages start with.
"""

import logging
from dataclasses import dataclass

import torch

import comfy.sample
import comfy.sampler_helpers
import comfy.samplers

from .. import edict_core as core
from .errors import NodeInputError, checked
from .methods import METHOD_TITLES, Method
from .record import check_pair, plain_latent, read_record, with_record
from .session import latent_format_name, model_sampling_kind, run_in_session

log = logging.getLogger("exact_inversion")


@dataclass(frozen=True)
class Schedule:
    """The simple nodes' schedule widgets, read as KSampler reads them."""
    steps: int
    scheduler: str
    denoise: float

    def validated(self, node, method):
        checked(node, "steps", lambda steps: core.check_steps(steps, method.spec.min_steps), self.steps)
        if self.scheduler not in comfy.samplers.SCHEDULER_NAMES:
            raise NodeInputError(node, "scheduler", f"unknown scheduler {self.scheduler!r}.",
                                 f"Use one of {', '.join(comfy.samplers.SCHEDULER_NAMES)}.")
        if not 0.0 <= float(self.denoise) <= 1.0:
            raise NodeInputError(node, "denoise", f"denoise must be in [0, 1], got {self.denoise}.",
                                 "Use about 0.6 to 0.9 for edits, 1.0 for text-to-image.")
        return self

    def sigmas(self, model):
        """KSampler's sigmas for these widgets (empty for denoise 0)."""
        model_sampling = model.get_model_object("model_sampling")
        return core.denoise_schedule(
            lambda n: comfy.samplers.calculate_sigmas(model_sampling, self.scheduler, n),
            self.steps, self.denoise)

    def fields(self):
        return {"steps": int(self.steps), "scheduler": self.scheduler, "denoise": float(self.denoise)}


def simple_guider(model, positive, negative, cfg):
    """The guider KSampler builds: cfg between the positive and negative conditioning."""
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    return guider


class SeededNoise:
    """KSampler's seeded noise, as a NOISE object (what RandomNoise makes): it follows the
    latent's batch_index, so Latent From Batch gives the same image as the full batch."""

    def __init__(self, seed):
        self.seed = seed

    def generate_noise(self, latent):
        return comfy.sample.prepare_noise(latent["samples"], self.seed, latent.get("batch_index"))


def prepare(node, model, sigmas, input_name="sigmas"):
    """The float64 schedule an exact method walks (edict_core.prepare_sigmas, with the
    model's sigma_min as the clean floor), or None where the schedule holds no step (denoise
    0). A schedule whose steps all end at the floor comes back with no step, for the
    method's step check to refuse by name: a silent no-op would look like a finished edit."""
    sigmas = torch.as_tensor(sigmas)
    if sigmas.numel() < 2:
        return None
    floor = float(model.get_model_object("model_sampling").sigma_min)
    try:
        return core.prepare_sigmas(sigmas, floor)
    except ValueError as error:
        fix = ("Connect a scheduler's SIGMAS (noisy to clean)." if input_name == "sigmas"
               else "The scheduler gave no usable schedule for these steps: use more steps or another scheduler.")
        raise NodeInputError(node, input_name, str(error), fix) from None


def _samples(node, latent):
    """The latent's samples [B, C, H, W] or, for video, [B, C, T, H, W], after refusing what
    no exact run can use."""
    samples = latent["samples"]
    if getattr(samples, "is_nested", False) or samples.ndim not in (4, 5):
        raise NodeInputError(node, "latent_image",
                             f"expected an image latent [batch, channels, height, width] or a video "
                             f"latent [batch, channels, frames, height, width], got shape "
                             f"{tuple(samples.shape)}.", "Connect a VAE Encode or Empty Latent output.")
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
    is still generated, so the edit sees its surroundings. source and results: [B, C, ...]
    latent space."""
    mask = latent.get("noise_mask")
    if mask is None:
        return results
    source = source.to(torch.float64)
    mask = comfy.sampler_helpers.prepare_mask(mask, source.shape, source.device).to(torch.float64)
    # source + mask * (r - source) is source exactly wherever mask is 0.
    return [(source + mask * (r.to(torch.float64) - source)).to(r.dtype) for r in results]


def _model_identity(model):
    """What a pair must be sampled with: the model's class (SD15, SDXL, Flux, ...), its
    prediction type and its latent format."""
    return {"model_class": type(model.model).__name__,
            "model_sampling": model_sampling_kind(model.get_model_object("model_sampling")),
            "latent_format": latent_format_name(model)}


def _follow_record(node, record, method, schedule):
    """The method and schedule fields an existing pair was made with, which a run on it must
    follow for exactness; logs the settings of the node's own that it therefore ignores."""
    recorded = Method.from_record(record)
    differ = {key: value for key, (value, _) in method.differences(recorded).items()}
    recorded_schedule = {key: record[key] for key in ("steps", "scheduler", "denoise") if key in record}
    if schedule is not None:
        differ.update({key: value for key, value in schedule.fields().items()
                       if key in recorded_schedule and recorded_schedule[key] != value})
    if differ:
        log.info("%s: following the latent's own settings %s; this node's %s are not used "
                 "(only the guider, its conditioning and cfg apply).",
                 node, {**recorded.params, **recorded_schedule}, differ)
    return recorded, recorded_schedule


def _schedule_input(schedule):
    """The input a schedule error names: the simple nodes' steps widget, else the SIGMAS input."""
    return "steps" if schedule is not None else "sigmas"


def invert(node, guider, latent, sigmas, method, schedule=None):
    """Invert a clean latent (or EDICT Sample's pair) with `method` along `sigmas`.

    guider: any GUIDER (its model, conds and cfg are those of the inversion). sigmas: a
    ComfyUI schedule, descending, usually ending in 0. schedule: the simple nodes' widgets,
    kept in the record. Returns the inverted LATENT: `samples` one noisy state [B, C, ...]
    at sigmas[0], the record holding the float64 pair.
    """
    method = method.validated(node)
    schedule_input = _schedule_input(schedule)
    samples = _samples(node, latent)
    model = guider.model_patcher
    identity = _model_identity(model)
    record = read_record(latent)
    if record is not None and record["state"] == "noisy":
        raise NodeInputError(node, "latent_image",
                             f"it is already inverted (by {METHOD_TITLES[record['method']]} Invert).",
                             "Connect the clean latent (VAE Encode's output), not an inverted one.")
    if record is not None and record["method"] == method.name and method.spec.pair_in:
        # EDICT Sample's output is a pair at the clean end: invert it exactly, along the
        # schedule and settings it was sampled with and with the same clean latent.
        check_pair(node, record, samples, identity)
        method, schedule_fields = _follow_record(node, record, method, schedule)
        prepared, source = record["sigmas"], record["source"]
        start = (record["branch"], record["partner"])
    else:
        prepared = prepare(node, model, sigmas, schedule_input)
        if prepared is None:  # denoise 0: nothing to invert
            return dict(latent)
        schedule_fields = schedule.fields() if schedule else {}
        source, start = samples, (samples, samples)
    steps = len(prepared) - 1
    method.check_steps(node, steps, schedule_input)
    method.warn_past_exact_range(node, steps)
    method.warn_about_edits(node, prepared)
    clean_level = float(prepared[-1])

    def routine(session):
        pair = [session.enter_clean(session.to_model_space(t), clean_level) for t in start]
        noisy = method.spec.invert(session.denoise, pair, prepared, session.input_scale,
                                   callback=session.report, **method.params)
        return [session.to_latent_space(t) for t in noisy]

    branch, partner = run_in_session(node, guider, source, prepared, steps, routine,
                                     denoise_mask=latent.get("noise_mask"))
    return with_record(latent, branch, partner, method=method.name, state="noisy", source=source,
                       sigmas=prepared, **identity,
                       **method.params, **schedule_fields)


def sample(node, guider, latent, method, sigmas=None, noise=None, schedule=None):
    """Generate with `method`: from an inverted latent's pair along its own schedule (exact
    regeneration, or an edit when the guider's conditioning differs), or from a plain latent
    like SamplerCustomAdvanced (noise from `noise` at sigmas[0], then `method`).

    Returns a LATENT at the clean end; for EDICT it carries the pair, which EDICT Invert
    takes back exactly.
    """
    method = method.validated(node)
    schedule_input = _schedule_input(schedule)
    samples = _samples(node, latent)
    model = guider.model_patcher
    identity = _model_identity(model)
    record = read_record(latent)
    if record is not None and record["state"] == "noisy":
        if record["method"] != method.name:
            other = METHOD_TITLES[record["method"]]
            raise NodeInputError(node, "latent_image", f"it was inverted with {other} Invert.",
                                 f"Connect it to {other} Sample, or invert with {method.title} Invert.")
        check_pair(node, record, samples, identity)
        method, schedule_fields = _follow_record(node, record, method, schedule)
        prepared, source = record["sigmas"], record["source"]
        start, noise_tensor = (record["branch"], record["partner"]), None
    else:
        if sigmas is None or noise is None:
            raise NodeInputError(node, "latent_image", "it is a plain latent, and a plain latent is "
                                 "sampled from noise, which needs sigmas and noise.",
                                 "Connect the SIGMAS and NOISE inputs, or an inverted latent.")
        samples = comfy.sample.fix_empty_latent_channels(model, samples)
        prepared = prepare(node, model, sigmas, schedule_input)
        if prepared is None:  # denoise 0
            return dict(latent)
        schedule_fields = schedule.fields() if schedule else {}
        noise_tensor = noise.generate_noise(dict(latent, samples=samples))
        source, start = samples, None
    steps = len(prepared) - 1
    method.check_steps(node, steps, schedule_input)
    clean_level = float(prepared[-1])

    def routine(session):
        spec, settings = method.spec, dict(callback=session.report, **method.params)
        if start is not None:
            pair = [session.to_model_space(t) for t in start]
            out = spec.sample_pair(session.denoise, pair, prepared, session.input_scale, **settings)
        else:
            clean = samples.to(session.device, session.dtype)
            if torch.count_nonzero(clean) > 0:  # as KSampler: an empty latent is not shifted
                clean = session.to_model_space(clean)
            noisy = session.enter_noisy(clean, noise_tensor, prepared)
            out = spec.sample_noise(session.denoise, (noisy, noisy) if spec.pair_in else noisy, prepared,
                                    session.input_scale, **settings)
        out = out if spec.pair_in else [out]
        return [session.to_latent_space(session.leave_clean(t, clean_level)) for t in out]

    result = run_in_session(node, guider, source, prepared, steps, routine,
                            seed=getattr(noise, "seed", 0) or 0, denoise_mask=latent.get("noise_mask"))
    result = _keep_outside_mask(latent, source, result)
    if method.spec.pair_in:
        # The pair at the clean end: EDICT Invert takes it back exactly.
        return with_record(latent, result[0], result[1], method=method.name, state="clean", source=source,
                           sigmas=prepared, **identity,
                           **method.params, **schedule_fields)
    return plain_latent(latent, result[0])


def invert_simple(node, model, positive, negative, latent, cfg, schedule, method):
    """invert() for the simple nodes' widgets."""
    method = method.validated(node)
    schedule = schedule.validated(node, method)
    return invert(node, simple_guider(model, positive, negative, cfg), latent, schedule.sigmas(model),
                  method, schedule)


def sample_simple(node, model, positive, negative, latent, cfg, seed, schedule, method):
    """sample() for the simple nodes' widgets; the seed makes KSampler's noise."""
    method = method.validated(node)
    schedule = schedule.validated(node, method)
    return sample(node, simple_guider(model, positive, negative, cfg), latent, method,
                  schedule.sigmas(model), SeededNoise(seed), schedule)


def mix_pair(node, latent, weight):
    """weight * x + (1 - weight) * y of an EDICT pair, as a plain LATENT."""
    record = read_record(latent)
    if record is None:
        raise NodeInputError(node, "latent", "it is a plain latent with no EDICT pair.",
                             "Connect the output of EDICT Sample or EDICT Invert.")
    if record["method"] != "edict":
        raise NodeInputError(node, "latent", f"it holds a {METHOD_TITLES[record['method']]} pair, whose "
                             "two states sit at different noise levels and cannot be mixed.",
                             f"Connect {METHOD_TITLES[record['method']]} Sample's output to VAE Decode directly.")
    if not 0.0 <= float(weight) <= 1.0:
        raise NodeInputError(node, "weight", f"weight must be in [0, 1], got {weight}.",
                             "0.5 averages the two branches.")
    if tuple(record["partner"].shape) != tuple(latent["samples"].shape):
        raise NodeInputError(node, "latent", "its samples and its pair partner differ in shape: a "
                             "node between them changed only `samples`.",
                             "Connect EDICT Sample's output directly.")
    x, y = record["branch"], record["partner"]
    return plain_latent(latent, weight * x + (1 - weight) * y)
