"""DDIM inversion (the usual "unsampling") and DDIM sampling through the pack's own session
machinery: the approximate baseline that the exact methods are measured against, in the
tests and the bench. Not a node: users get it from ComfyUI's FlipSigmas + euler."""

import torch

from .comfy import pack_module


@torch.inference_mode()
def ddim(model, positive, negative, cfg, tensor, steps, denoise, scheduler="normal", invert=True):
    """invert=True takes a clean latent [B, C, ...] (latent space) to the noisy state at
    sigmas[0] (sampler space, the state dtype); invert=False takes such a noisy state back to
    a clean latent (latent space). The schedule is the simple nodes' for steps/scheduler/denoise."""
    operations = pack_module("comfy_adapter.operations")
    core = pack_module("edict_core")
    run_in_session = pack_module("comfy_adapter.session").run_in_session
    schedule = operations.Schedule(steps, scheduler, denoise)
    sigmas = operations.prepare("DDIM", model, schedule.sigmas(model))
    clean_level = float(sigmas[-1])

    def routine(session):
        if invert:
            x = session.enter_clean(session.to_model_space(tensor), clean_level)
            return [core.invert_ddim(session.denoise, x, sigmas, callback=session.report)]
        x = core.sample_ddim(session.denoise, tensor.to(session.device, session.dtype), sigmas,
                             callback=session.report)
        return [session.to_latent_space(session.leave_clean(x, clean_level))]

    guider = operations.simple_guider(model, positive, negative, cfg)
    result, = run_in_session("DDIM", guider, tensor.to(torch.float32), sigmas, len(sigmas) - 1, routine)
    return result


def ddim_round_trip(model, positive, negative, cfg, latent, steps, denoise, scheduler="normal"):
    """DDIM inversion then DDIM sampling of LATENT samples `latent`; returns the latent."""
    noisy = ddim(model, positive, negative, cfg, latent, steps, denoise, scheduler, invert=True)
    return ddim(model, positive, negative, cfg, noisy, steps, denoise, scheduler, invert=False)
