"""What the nodes do, in ComfyUI terms: GUIDER, SIGMAS, NOISE, LATENT and a Method.

`invert` and `sample` are the one code path of every node. The advanced nodes hand them a
guider and sigmas as they are; the simple nodes first build a CFGGuider from model, prompts
and cfg, and the sigmas from steps, scheduler and denoise (`simple_guider`, `Schedule`),
as KSampler does. Each is three steps: where to start (`Start`: an inverted latent's record,
or a plain latent), one run of the method's spec routine in one ComfyUI sampling session
(session.run_in_session), and the result wrapped as a LATENT with its record. `node` is the
display name that error messages start with.
"""

import logging
from dataclasses import dataclass

import torch

import comfy.sample
import comfy.sampler_helpers
import comfy.samplers

from .. import edict_core as core
from ..edict_core.spec import SPECS
from . import attention
from .errors import NodeInputError, checked
from .fingerprint import conds_digests, model_fingerprint
from .methods import METHOD_TITLES, MIXABLE, Method
from .notices import Notices
from .record import RECORD_KEY, check_pair, plain_latent, read_record, with_record
from .session import generate_from_noise, latent_format_name, model_sampling_kind, run_in_session

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


def blend_outside_mask(source, mask, result):
    """Masked editing: where mask is 0 the result is `source` bit for bit, where it is 1 the
    result as generated, and a soft mask blends the two. source, result: [B, C, ...];
    mask: broadcastable to them. Computed in result's dtype (the state dtype: float64, or
    float32 on a device without it) on result's device."""
    source = source.to(result)
    # source + mask * (r - source) is source exactly wherever mask is 0.
    return source + mask.to(result) * (result - source)


def _keep_outside_mask(latent, source, results):
    """blend_outside_mask for each result, with the LATENT's noise_mask (none: unchanged). The
    whole latent is still generated, so the edit sees its surroundings. Latent space."""
    mask = latent.get("noise_mask")
    if mask is None:
        return results
    mask = comfy.sampler_helpers.prepare_mask(mask, source.shape, source.device)
    return [blend_outside_mask(source, mask, r) for r in results]


def _model_identity(model):
    """What a pair must be sampled with: the model's class (SD15, SDXL, Flux, ...), its
    prediction type and its latent format; and a fingerprint of its weights and patches,
    which tells another checkpoint or LoRA of the same family apart."""
    return {"model_class": type(model.model).__name__,
            "model_sampling": model_sampling_kind(model.get_model_object("model_sampling")),
            "latent_format": latent_format_name(model),
            "model_fingerprint": model_fingerprint(model)}


def _follow_record(notices, record, method, schedule):
    """The method and schedule fields an existing pair was made with, which a run on it must
    follow for exactness; tells the user which of the node's own settings it therefore ignores."""
    recorded = Method.from_record(record)
    differ = {key: value for key, (value, _) in method.differences(recorded).items()}
    recorded_schedule = {key: record[key] for key in ("steps", "scheduler", "denoise") if key in record}
    if schedule is not None:
        differ.update({key: value for key, value in schedule.fields().items()
                       if key in recorded_schedule and recorded_schedule[key] != value})
    if differ:
        notices.info(f"following the latent's own settings {dict(recorded.params, **recorded_schedule)}; "
                     f"this node's {differ} are not used (only the guider, its conditioning and cfg apply).")
    return recorded, recorded_schedule


def _check_same_model(notices, record, identity):
    """A pair sampled with other weights or patches than it was inverted with: a legitimate
    edit, never an exact round trip. Named on the node; older records have no fingerprint."""
    recorded = record.get("model_fingerprint")
    if recorded is not None and recorded != identity["model_fingerprint"]:
        title = METHOD_TITLES[record["method"]]
        notices.warn(f"this model is not the one that inverted latent_image (other weights or patches: "
                     f"another checkpoint, LoRA or strength). An edit with it is fine, but a round trip is "
                     f"not exact: to regenerate the image, connect the model that {title} Invert used.")


def _schedule_input(schedule):
    """The input a schedule error names: the simple nodes' steps widget, else the SIGMAS input."""
    return "steps" if schedule is not None else "sigmas"


@dataclass
class Start:
    """Where a run starts. prepared: the float64 schedule it walks. source: the clean latent
    [B, C, ...] (latent space) that the guider sees and a mask keeps. pair: a record's two
    states to start from, latent space (None: from a single latent, through the spec's
    start_clean from `source`, or start_noisy from `source` plus `noise`). noise: the seeded
    noise [B, C, ...] for a plain latent. fields: the schedule widgets a record keeps.
    method: the settings that apply (the record's own where a pair is followed)."""
    prepared: torch.Tensor
    source: torch.Tensor
    method: Method
    fields: dict
    pair: tuple = None
    noise: torch.Tensor = None

    @property
    def steps(self):
        return len(self.prepared) - 1

    @property
    def reports(self):
        """How many steps the progress bar counts: each step that runs, and no other."""
        return self.method.spec.reports(self.steps, started=self.pair is None)


def _start_from_record(node, notices, record, samples, method, schedule, identity):
    """The start of a run on a record's pair of this method, after checking that the pair
    still belongs to `samples` and this model: its own schedule, source and settings."""
    check_pair(node, record, samples, identity)
    _check_same_model(notices, record, identity)
    followed, fields = _follow_record(notices, record, method, schedule)
    return Start(record["sigmas"], record["source"], followed, fields, pair=(record["branch"], record["partner"]))


def _invert_start(node, notices, guider, latent, sigmas, method, schedule, identity):
    """An Invert node's start: a clean latent (which the spec's start_clean makes a pair), or
    a clean pair of this method that a Sample node made (its own schedule and source are
    followed: the noisy pair it came from is recovered exactly). None: denoise 0, nothing to do."""
    samples = _samples(node, latent)
    record = read_record(latent)
    if record is not None and record["state"] == "noisy":
        raise NodeInputError(node, "latent_image",
                             f"it is already inverted (by {METHOD_TITLES[record['method']]} Invert).",
                             "Connect the clean latent (VAE Encode's output), not an inverted one.")
    if record is not None and record["method"] == method.name:
        return _start_from_record(node, notices, record, samples, method, schedule, identity)
    prepared = prepare(node, guider.model_patcher, sigmas, _schedule_input(schedule))
    if prepared is None:
        return None
    return Start(prepared, samples, method, schedule.fields() if schedule else {})


def _sample_start(node, notices, guider, latent, method, sigmas, noise, schedule, identity):
    """A Sample node's start: an inverted latent's noisy pair along its own schedule, or a
    plain latent and seeded noise along `sigmas`. None: denoise 0, nothing to do."""
    samples = _samples(node, latent)
    record = read_record(latent)
    if record is not None and record["state"] == "noisy":
        if record["method"] != method.name:
            other = METHOD_TITLES[record["method"]]
            raise NodeInputError(node, "latent_image", f"it was inverted with {other} Invert.",
                                 f"Connect it to {other} Sample, or invert with {method.title} Invert.")
        return _start_from_record(node, notices, record, samples, method, schedule, identity)
    if sigmas is None or noise is None:
        raise NodeInputError(node, "latent_image", "it is a plain latent, and a plain latent is "
                             "sampled from noise, which needs sigmas and noise.",
                             "Connect the SIGMAS and NOISE inputs, or an inverted latent.")
    model = guider.model_patcher
    samples = comfy.sample.fix_empty_latent_channels(model, samples)
    prepared = prepare(node, model, sigmas, _schedule_input(schedule))
    if prepared is None:
        return None
    return Start(prepared, samples, method, schedule.fields() if schedule else {},
                 noise=noise.generate_noise(dict(latent, samples=samples)))


def _run(node, guider, latent, start, direction, seed=0):
    """One run of the method's spec routine (direction "invert" | "sample") from `start`, in
    one sampling session. Returns the resulting pair in latent space, state dtype."""
    spec, settings = start.method.spec, start.method.params
    prepared, clean_level = start.prepared, float(start.prepared[-1])

    def routine(session):
        report = dict(callback=session.report, **settings)
        if direction == "invert":
            if start.pair is not None:
                pair = [session.enter_clean(session.to_model_space(t), clean_level) for t in start.pair]
            else:
                clean = session.enter_clean(session.to_model_space(start.source), clean_level)
                pair = spec.start_clean(session.denoise, clean, prepared, session.input_scale, **report)
            noisy = spec.invert(session.denoise, pair, prepared, session.input_scale, **report)
            return [session.to_latent_space(t) for t in noisy]
        if start.pair is not None:
            pair = [session.to_model_space(t) for t in start.pair]
            out = spec.sample(session.denoise, pair, prepared, session.input_scale, **report)
        else:
            clean = start.source.to(session.device, session.dtype)
            if torch.count_nonzero(clean) > 0:  # as KSampler: an empty latent is not shifted
                clean = session.to_model_space(clean)
            out = generate_from_noise(session, start.method, clean, start.noise, prepared)
        return [session.to_latent_space(session.leave_clean(t, clean_level)) for t in out]

    return run_in_session(node, guider, start.source, prepared, start.reports, routine, seed=seed,
                          denoise_mask=latent.get("noise_mask"))


def _wrapped(latent, start, state, branch, partner, identity, cfg):
    """The run's pair as a LATENT with its record: how it was made, for the next run on it."""
    extra = {} if cfg is None else {"cfg": float(cfg)}
    return with_record(latent, branch, partner, method=start.method.name, state=state, source=start.source,
                       sigmas=start.prepared, **identity, **start.method.params, **start.fields, **extra)


def invert(node, guider, latent, sigmas, method, schedule=None, cfg=None):
    """Invert a clean latent (or a Sample node's clean pair) with `method` along `sigmas`.

    guider: any GUIDER (its model, conds and cfg are those of the inversion). sigmas: a
    ComfyUI schedule, descending, usually ending in 0. schedule, cfg: the simple nodes'
    widgets, kept in the record. Returns the inverted LATENT: `samples` one noisy state
    [B, C, ...] at sigmas[0], the record holding the float64 pair.
    """
    notices = Notices(node)
    method = method.validated(node)
    identity = _model_identity(guider.model_patcher)
    start = _invert_start(node, notices, guider, latent, sigmas, method, schedule, identity)
    if start is None:  # denoise 0: nothing to invert
        return dict(latent)
    start.method.check_steps(node, start.steps, _schedule_input(schedule))
    notices.warn(start.method.past_exact_range(start.steps))
    notices.warn(start.method.edit_drift(start.prepared))
    branch, partner = _run(node, guider, latent, start, "invert")
    out = _wrapped(latent, start, "noisy", branch, partner, identity, cfg)
    out[RECORD_KEY].update({f"{name}_digest": d for name, d in conds_digests(guider).items()})
    return out


def sample(node, guider, latent, method, sigmas=None, noise=None, schedule=None, cfg=None, control=None,
           source_guider=None, source_inputs=None):
    """Generate with `method`: from an inverted latent's pair along its own schedule (exact
    regeneration, or an edit when the guider's conditioning differs), or from a plain latent
    like SamplerCustomAdvanced (noise from `noise` at sigmas[0], then `method`).

    Returns a LATENT at the clean end: `samples` the result [B, C, ...], the record its clean
    pair (EDICT's two branches, which Latent Pair Mix mixes; every method's Invert takes it
    back along the same schedule).

    control, source_guider: an ATTENTION_CONTROL and the source branch's guider (the
    inversion's conditioning and cfg): the edit then runs in lockstep with the source branch,
    reading its attention (comfy_adapter/attention.py); only for an inverted latent.
    source_inputs: {"positive" | "negative": (input, fix)}, the node's inputs that gave the
    source guider each conditioning (default: its source_guider input), named where one is
    not the inversion's.
    """
    notices = Notices(node)
    method = method.validated(node)
    identity = _model_identity(guider.model_patcher)
    if control is not None:
        return _sample_controlled(node, notices, guider, source_guider, latent, method, schedule, cfg, control,
                                  identity, source_inputs)
    start = _sample_start(node, notices, guider, latent, method, sigmas, noise, schedule, identity)
    if start is None:  # denoise 0
        return dict(latent)
    start.method.check_steps(node, start.steps, _schedule_input(schedule))
    result = _run(node, guider, latent, start, "sample", seed=getattr(noise, "seed", 0) or 0)
    branch, partner = _keep_outside_mask(latent, start.source, result)
    return _wrapped(latent, start, "clean", branch, partner, identity, cfg)


def _sample_controlled(node, notices, guider, source_guider, latent, method, schedule, cfg, control, identity,
                       source_inputs=None):
    """sample() with attention control: an inverted pair, two branches in lockstep."""
    control.resolved(node, guider.model_patcher)  # the family first: no latent makes it supported
    record = read_record(latent)
    if record is None or record["state"] != "noisy":
        raise NodeInputError(node, "attention_control", "attention control needs an inverted latent (the "
                             "source branch retraces the inversion), but latent_image is "
                             + ("a plain latent." if record is None else "a Sample node's clean output."),
                             "Connect the output of an Invert node to latent_image, or disconnect "
                             "attention_control.")
    attention.check_source_guider(node, guider, source_guider)
    _check_source_conds(node, record, source_guider, source_inputs)
    _check_edit_conds(node, guider, control, source_inputs)
    start = _sample_start(node, notices, guider, latent, method, None, None, schedule, identity)
    start.method.check_steps(node, start.steps, _schedule_input(schedule))
    edit, source, report = attention.sample_controlled(node, source_guider, guider, latent, start, control)
    _control_notices(notices, report, control, start.steps)
    branch, partner = _keep_outside_mask(latent, start.source, edit)
    out = _wrapped(latent, start, "clean", branch, partner, identity, cfg)
    out[RECORD_KEY]["attention_control"] = dict(report, source_branch=source[0])
    return out


ADVANCED_SOURCE = ("source_guider", "Connect the GUIDER that Exact Invert (Advanced) used (the same prompts and "
                                     "cfg), or invert again with this one.")


def _check_source_conds(node, record, source_guider, source_inputs=None):
    """Refuse a source branch whose conditioning is not the inversion's (the digests Invert
    recorded; records older than them are not checked): it would not retrace the photo, and
    the edit would read attention from another picture."""
    digests = conds_digests(source_guider)
    for name in ("positive", "negative"):
        recorded = record.get(f"{name}_digest")
        if recorded is None or name not in digests or digests[name] == recorded:
            continue
        what, fix = (source_inputs or {}).get(name, ADVANCED_SOURCE)
        raise NodeInputError(node, what, f"the source branch's {name} prompt is not the one Invert used, so it "
                             "would not retrace the photo and the edit would read another picture's attention.",
                             fix)


def _check_edit_conds(node, guider, control, source_inputs=None):
    """Refuse an edit prompt that is not the one Exact Prompt-to-Prompt encoded and aligned
    (its edit_text): the maps would be aligned to words the edit does not have."""
    expected = control.p2p.edit_digest if control.p2p is not None else None
    if expected is None or conds_digests(guider).get("positive") in (None, expected):
        return
    where = "positive" if source_inputs is not None else "guider"
    raise NodeInputError(node, where, f"the edit prompt is not the edit_text that {attention.P2P_NODE} encoded "
                         "and aligned, so its maps would land on other words.",
                         f"Connect {attention.P2P_NODE}'s edit_conditioning output to "
                         + ("positive." if where == "positive" else "the edit guider's positive."))


def _span(window):
    """[start, end] of a step or layer window, as a user reads it: "0.08 to 1"."""
    return f"{window[0]:g} to {window[1]:g}"


def _control_notices(notices, report, control, steps):
    """What a controlled run did, on the node: an info of the calls it controlled and where the
    source branch ended, and a warning for each part that controlled no call (a window that
    selects no step or no layer of this run, or a model with no such layer)."""
    self_part = report["steps"][0] < report["steps"][1]
    done = []
    if self_part:
        done.append(f"the source's {report['inject']} in {report['injected_calls']} self-attention calls "
                    f"(steps {_span(report['steps'])}, layers {_span(report['layers'])})")
    p2p = control.p2p
    cross_part = p2p is not None and not p2p.steps.empty
    self_maps_part = p2p is not None and not p2p.self_steps.empty
    if cross_part or (p2p is not None and not self_maps_part and p2p.blend is None):
        done.append(f"prompt-to-prompt in {report['p2p_calls']} cross-attention calls "
                    f"(steps {_span(report['p2p_steps'])})")
    if self_maps_part:
        done.append(f"the source's self-attention maps in {report['self_replaced_calls']} calls (steps "
                    f"{_span(report['self_replace_steps'])}, layers of at most {attention.SELF_REPLACE_MAX_TOKENS} "
                    "tokens)")
    if p2p is not None and p2p.blend is not None:
        coverage = report["blend_coverage"]
        done.append(f"LocalBlend of {', '.join(report['blend_words'])} in {report['blend_steps']} steps"
                    + (f" (the last mask covers {coverage:.0%} of the latent)" if coverage is not None else ""))
    notices.info(f"attention control: {'; '.join(done) or 'nothing'}; the source branch ends "
                 f"{report['source_end_error']:.2e} from the source latent.")
    where = f"of this {steps}-step run on {report['family']}"
    if self_part and report["injected_calls"] == 0:
        notices.warn(f"attention control injected the source into no self-attention call: its step window "
                     f"{_span(report['steps'])} and layer window {_span(report['layers'])} select no step or no "
                     f"layer {where}. Widen them (preset custom: step_start, step_end, layer_start, layer_end) "
                     "or run more steps.")
    if p2p is not None and report["p2p_calls"] == 0 and (cross_part or not (self_maps_part or p2p.blend)):
        notices.warn(f"prompt-to-prompt replaced no cross-attention map: its step window "
                     f"{_span(report['p2p_steps'])} selects no step {where}. Widen step_start and step_end on "
                     "Exact Prompt-to-Prompt, or run more steps.")
    if self_maps_part and report["self_replaced_calls"] == 0:
        notices.warn(f"prompt-to-prompt replaced no self-attention map: self_replace_steps "
                     f"{p2p.self_steps.end:g} selects no step {where}, or it has no self-attention layer of at most "
                     f"{attention.SELF_REPLACE_MAX_TOKENS} tokens. Raise self_replace_steps, or set it to 0.")
    if p2p is not None and p2p.blend is not None and report["blend_steps"] == 0:
        notices.warn(f"LocalBlend kept nothing of the source: it blends from step {p2p.blend.steps.start:g} of the "
                     f"steps on and made no mask {where} (no cross-attention layer of at most "
                     f"{attention.BLEND_STORE_MAX_TOKENS} tokens?). Run more steps, or clear blend_words.")
    if not self_part and control.p2p is None:
        notices.warn(f"attention control has an empty step window ({_span(report['steps'])}), so the edit reads "
                     "nothing from the source. Set step_end above step_start on Exact Attention Control, or "
                     "disconnect attention_control.")


def _follows_record(latent, method, state):
    """Whether a run on `latent` follows its record (a pair of this method in `state`), so
    the simple nodes' schedule widgets are not used and not checked."""
    record = read_record(latent)
    return record is not None and record["state"] == state and record["method"] == method.name


def invert_simple(node, model, positive, negative, latent, cfg, schedule, method):
    """invert() for the simple nodes' widgets. A Sample node's clean pair is inverted along
    its own schedule, so the schedule widgets are not checked for it."""
    method = method.validated(node)
    following = _follows_record(latent, method, "clean")
    if not following:
        schedule = schedule.validated(node, method)
    return invert(node, simple_guider(model, positive, negative, cfg), latent,
                  None if following else schedule.sigmas(model), method, schedule, cfg)


def sample_simple(node, model, positive, negative, latent, cfg, seed, schedule, method, control=None):
    """sample() for the simple nodes' widgets; the seed makes KSampler's noise. An inverted
    latent follows its own schedule, so the schedule widgets are not checked for it. With an
    attention control, the source guider is the control's source prompt, this negative and the
    cfg the inversion recorded (this node's where it recorded none)."""
    method = method.validated(node)
    following = _follows_record(latent, method, "noisy")
    if not following:
        schedule = schedule.validated(node, method)
    source_guider = None
    if control is not None:
        if control.source_positive is None:
            raise NodeInputError(node, "attention_control", "the control carries no source prompt, which the "
                                 "simple Sample nodes build the source branch from.",
                                 "Connect the prompt Invert used to the control's source_positive input.")
        record = read_record(latent) or {}
        source_guider = simple_guider(model, control.source_positive, negative, record.get("cfg", cfg))
    return sample(node, simple_guider(model, positive, negative, cfg), latent, method,
                  None if following else schedule.sigmas(model), SeededNoise(seed), schedule, cfg,
                  control=control, source_guider=source_guider,
                  source_inputs=P2P_SOURCE if control is not None and control.p2p is not None
                  and control.p2p.edit_digest is not None else SIMPLE_SOURCE)


# Where the simple Sample nodes' source branch gets each conditioning, for _check_source_conds.
SIMPLE_SOURCE = {
    "positive": ("attention_control", "Connect the prompt Invert used (its CLIP Text Encode) to the control's "
                                      "source_positive; the edit prompt goes to Sample's positive."),
    "negative": ("negative", "Connect the negative Invert used: the source branch borrows Sample's negative, "
                             "so an edit changes only the positive."),
}
# The same where Exact Prompt-to-Prompt encoded the source prompt from its source_text.
P2P_SOURCE = dict(SIMPLE_SOURCE, positive=(
    "attention_control", f"Connect {attention.P2P_NODE}'s source_conditioning output to Invert's positive and "
                         "invert again, or make its source_text the prompt Invert used."))


def mix_pair(node, latent, weight):
    """weight * x + (1 - weight) * partner of a pair whose two states sit at one noise level
    (MethodSpec.mixable: EDICT's branches, Rex's x and x_hat), as a plain LATENT."""
    record = read_record(latent)
    if record is None:
        raise NodeInputError(node, "latent", "it is a plain latent with no pair to mix.",
                             f"Connect the output of a Sample or Invert node of {MIXABLE}.")
    if not SPECS[record["method"]].mixable:
        raise NodeInputError(node, "latent", f"it holds a {METHOD_TITLES[record['method']]} pair, whose "
                             "two states sit at different noise levels and cannot be mixed.",
                             f"Connect {METHOD_TITLES[record['method']]} Sample's output to VAE Decode directly.")
    if not 0.0 <= float(weight) <= 1.0:
        raise NodeInputError(node, "weight", f"weight must be in [0, 1], got {weight}.",
                             "0.5 averages the two branches.")
    if tuple(record["partner"].shape) != tuple(latent["samples"].shape):
        raise NodeInputError(node, "latent", "its samples and its pair partner differ in shape: a "
                             "node between them changed only `samples`.",
                             f"Connect {METHOD_TITLES[record['method']]} Sample's output directly.")
    x, y = record["branch"], record["partner"]
    return plain_latent(latent, weight * x + (1 - weight) * y)
