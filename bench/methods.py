"""The methods the bench compares, each as invert(...) -> state and regenerate(state, ...) -> LATENT.

EDICT and BDIA run through the pack's real nodes. DDIM inversion, the baseline, runs
edict_core.invert_ddim / sample_ddim in the same ComfyUI session machinery as the nodes
(comfy_adapter.session.run_in_session, on the schedule comfy_adapter.operations builds), as
tests/test_comfy_roundtrip.py does. SDEdit is ComfyUI's own KSampler (euler) at the same
strength.
"""

from dataclasses import dataclass

import torch

from .env import pack_module, run_node

METHODS = ("EDICT", "BDIA", "DDIM")
MIX_WEIGHT, GAMMA = 0.93, 0.94  # the papers' settings (and the nodes' defaults)


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
    return {"EDICT": dict(mix_weight=MIX_WEIGHT, leapfrog=True), "BDIA": dict(gamma=GAMMA)}[method]


def invert(comfy, method, run, latent):
    """Invert the LATENT `latent` with `method` under `run`. Returns what regenerate takes."""
    if method == "DDIM":
        return _ddim(run, latent["samples"], direction="invert")
    return run_node(comfy, f"{method}Invert", latent_image=latent, **run.node_inputs(), **_extra(method))


def regenerate(comfy, method, run, inverted, positive=None):
    """Sample back from an inverted state, with the inversion's conditioning or with
    `positive` (an edit). Returns LATENT samples [B, C, H, W] float32. EDICT's pair is
    averaged with Latent Pair Mix at 0.5, as in the README's edit workflow."""
    if positive is not None:
        run = Run(**{**run.__dict__, "positive": positive})
    if method == "DDIM":
        return _ddim(run, inverted, direction="sample").to(torch.float32)
    latent = run_node(comfy, f"{method}Sample", latent_image=inverted, seed=0, **run.node_inputs(),
                      **_extra(method))
    if method == "EDICT":
        latent = run_node(comfy, "LatentPairMix", latent=latent, weight=0.5)
    return latent["samples"]


def sdedit(comfy, run, latent, positive, seed=0):
    """Plain img2img: ComfyUI's KSampler (euler) at strength run.denoise with `positive`."""
    return comfy.KSampler().sample(run.model, seed, run.steps, run.cfg, "euler", run.scheduler, positive,
                                   run.negative, latent, denoise=run.denoise)[0]["samples"]


@torch.inference_mode()
def _ddim(run, tensor, direction):
    session_module = pack_module("comfy_adapter.session")
    operations = pack_module("comfy_adapter.operations")
    core = pack_module("edict_core")
    settings = operations.Settings("edict", run.steps, run.scheduler, run.denoise)
    sigmas = operations._sigmas(run.model, settings)
    steps = len(sigmas) - 1

    def invert_routine(session):
        x = session.enter_clean(session.to_model_space(tensor), float(sigmas[-1]))
        return [core.invert_ddim(session.denoise, x, sigmas, callback=session.report)]

    def sample_routine(session):
        x = core.sample_ddim(session.denoise, tensor.to(session.device, session.dtype), sigmas,
                             callback=session.report)
        return [session.to_latent_space(session.leave_clean(x, float(sigmas[-1])))]

    routine = invert_routine if direction == "invert" else sample_routine
    result, = session_module.run_in_session("DDIM", run.model, run.positive, run.negative, run.cfg,
                                            tensor.to(torch.float32), sigmas, steps, routine)
    return result


def calls_per_step(method):
    """Model calls (one batched cond/uncond evaluation each) per step."""
    return 2 if method == "EDICT" else 1
