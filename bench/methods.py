"""The methods the bench compares, each as invert(...) -> state and regenerate(state, ...) -> LATENT.

The exact methods are edict_core.spec.SPECS, in its order, named by their titles ("EDICT",
"BDIA", "O-BELM", "Rex"): each runs through the pack's real nodes (spec.node_id("Invert"),
spec.node_id("Sample")) at its spec's default settings, which are the nodes' defaults. A
method added to SPECS joins every part of the bench with no bench file edited. The
baselines: DDIM inversion is harness.ddim (the same session machinery as the nodes), as in
tests/test_comfy_roundtrip.py; SDEdit is ComfyUI's own KSampler (euler) at the same strength.

Every Sample node returns a LATENT whose `samples` is the float32 result and whose record
("exact_inversion") holds the clean float64 pair: record["branch"] is `samples` before its
cast, record["partner"] the other state (EDICT's second branch, Rex's x_hat; BDIA's and
O-BELM's state one step before). The bench reads `samples`, or record["branch"] where float64 matters.
"""

from dataclasses import dataclass

import torch

from edict_core.spec import SPECS
from harness.ddim import ddim

from .env import run_node

RECORD_KEY = "exact_inversion"  # comfy_adapter/record.py's key of the pair a LATENT carries
SPEC = {spec.title: spec for spec in SPECS.values()}  # "EDICT" -> its MethodSpec
EXACT = tuple(SPEC)
METHODS = EXACT + ("DDIM",)
PALETTE = ("tab:blue", "tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
BASELINE_COLORS = {"DDIM": "tab:red", "SDEdit": "tab:gray", "KSampler": "tab:gray"}


def color(method):
    """A plot colour per method: the exact methods in SPECS order, the baselines fixed."""
    if method in BASELINE_COLORS:
        return BASELINE_COLORS[method]
    return PALETTE[EXACT.index(method) % len(PALETTE)]


@dataclass
class Run:
    """One model, conditioning pair, cfg and schedule: what invert and regenerate share."""
    model: object
    positive: list
    negative: list
    cfg: float
    steps: int
    denoise: float = 1.0
    scheduler: str = "normal"

    def node_inputs(self, **changes):
        inputs = dict(model=self.model, positive=self.positive, negative=self.negative,
                      steps=self.steps, cfg=self.cfg, scheduler=self.scheduler, denoise=self.denoise)
        inputs.update(changes)
        return inputs


def settings(method):
    """The method's settings widgets at the spec's defaults (the nodes' own)."""
    return dict(SPEC[method].defaults)


def settings_text(method):
    """'EDICT (mix_weight 0.93, leapfrog True)': what a table's method ran with."""
    values = settings(method)
    return method + (f" ({', '.join(f'{k} {v}' for k, v in values.items())})" if values else "")


def node(method, role):
    """The node id of an exact method's role ("Invert" | "Sample"): EDICTInvert, OBELMSample, ..."""
    return SPEC[method].node_id(role)


def calls_per_step(method):
    """Model calls (one batched cond/uncond evaluation each) per step."""
    return 1 if method == "DDIM" else SPEC[method].step_calls()


def calls(method, steps, started):
    """Model calls of one invert or sample run over `steps` prepared steps; started: the run
    began from a single latent (inversion from a clean latent, sampling from noise), not
    from a pair."""
    return steps if method == "DDIM" else SPEC[method].calls(steps, started)


def invert(comfy, method, run, latent):
    """Invert the LATENT `latent` with `method` under `run`. Returns what regenerate takes."""
    if method == "DDIM":
        return _ddim(run, latent["samples"], direction="invert")
    return run_node(comfy, node(method, "Invert"), latent_image=latent, **run.node_inputs(), **settings(method))


def sample(comfy, method, run, inverted, positive=None):
    """The Sample node's output LATENT from an inverted one (exact method only), with the
    inversion's conditioning or with `positive` (an edit)."""
    if positive is not None:
        run = Run(**{**run.__dict__, "positive": positive})
    return run_node(comfy, node(method, "Sample"), latent_image=inverted, seed=0, **run.node_inputs(),
                    **settings(method))


def regenerate(comfy, method, run, inverted, positive=None):
    """Sample back from an inverted state, with the inversion's conditioning or with
    `positive` (an edit). Returns LATENT samples [B, C, H, W] float32. EDICT's pair (two
    branches at one level) is averaged with Latent Pair Mix at 0.5, as in the README's edit
    workflow; the other methods' pairs hold two levels, and their result is `samples`."""
    if method == "DDIM":
        if positive is not None:
            run = Run(**{**run.__dict__, "positive": positive})
        return _ddim(run, inverted, direction="sample").to(torch.float32)
    latent = sample(comfy, method, run, inverted, positive)
    if SPEC[method].name == "edict":
        latent = run_node(comfy, "LatentPairMix", latent=latent, weight=0.5)
    return latent["samples"]


def sdedit(comfy, run, latent, positive, seed=0):
    """Plain img2img: ComfyUI's KSampler (euler) at strength run.denoise with `positive`."""
    return comfy.KSampler().sample(run.model, seed, run.steps, run.cfg, "euler", run.scheduler, positive,
                                   run.negative, latent, denoise=run.denoise)[0]["samples"]


def _ddim(run, tensor, direction):
    return ddim(run.model, run.positive, run.negative, run.cfg, tensor, run.steps, run.denoise,
                run.scheduler, invert=direction == "invert")
