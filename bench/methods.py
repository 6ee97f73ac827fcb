"""The methods the bench compares, each as invert(...) -> state and regenerate(state, ...) -> LATENT.

EDICT, BDIA and O-BELM run through the pack's real nodes. DDIM inversion, the baseline, is
harness.ddim (the same session machinery as the nodes), as in tests/test_comfy_roundtrip.py. SDEdit is ComfyUI's own KSampler (euler) at the same
strength.
"""

from dataclasses import dataclass

import torch

from edict_core import DEFAULT_GAMMA as GAMMA, DEFAULT_MIX_WEIGHT as MIX_WEIGHT  # the nodes' defaults
from harness.ddim import ddim

from .env import run_node

EXACT = ("EDICT", "BDIA", "O-BELM")
METHODS = EXACT + ("DDIM",)
NODE_PREFIX = {"EDICT": "EDICT", "BDIA": "BDIA", "O-BELM": "OBELM"}  # EDICTInvert, OBELMSample, ...


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


def _extra(method):
    return {"EDICT": dict(mix_weight=MIX_WEIGHT, leapfrog=True), "BDIA": dict(gamma=GAMMA), "O-BELM": {}}[method]


def invert(comfy, method, run, latent):
    """Invert the LATENT `latent` with `method` under `run`. Returns what regenerate takes."""
    if method == "DDIM":
        return _ddim(run, latent["samples"], direction="invert")
    return run_node(comfy, f"{NODE_PREFIX[method]}Invert", latent_image=latent, **run.node_inputs(), **_extra(method))


def regenerate(comfy, method, run, inverted, positive=None):
    """Sample back from an inverted state, with the inversion's conditioning or with
    `positive` (an edit). Returns LATENT samples [B, C, H, W] float32. EDICT's pair is
    averaged with Latent Pair Mix at 0.5, as in the README's edit workflow."""
    if positive is not None:
        run = Run(**{**run.__dict__, "positive": positive})
    if method == "DDIM":
        return _ddim(run, inverted, direction="sample").to(torch.float32)
    latent = run_node(comfy, f"{NODE_PREFIX[method]}Sample", latent_image=inverted, seed=0, **run.node_inputs(),
                      **_extra(method))
    if method == "EDICT":
        latent = run_node(comfy, "LatentPairMix", latent=latent, weight=0.5)
    return latent["samples"]


def sdedit(comfy, run, latent, positive, seed=0):
    """Plain img2img: ComfyUI's KSampler (euler) at strength run.denoise with `positive`."""
    return comfy.KSampler().sample(run.model, seed, run.steps, run.cfg, "euler", run.scheduler, positive,
                                   run.negative, latent, denoise=run.denoise)[0]["samples"]


def _ddim(run, tensor, direction):
    return ddim(run.model, run.positive, run.negative, run.cfg, tensor, run.steps, run.denoise,
                run.scheduler, invert=direction == "invert")


def calls_per_step(method):
    """Model calls (one batched cond/uncond evaluation each) per step."""
    return 2 if method == "EDICT" else 1
