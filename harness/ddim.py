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


@torch.inference_mode()
def ddim_controlled(model, source_positive, positive, negative, cfg, noisy, steps, denoise, control,
                    scheduler="normal"):
    """DDIM sampling of a DDIM-inverted state `noisy` (sampler space, [B, C, ...]) with an
    ATTENTION_CONTROL, as the Sample nodes run an exact pair: a source branch (source_positive)
    in lockstep with the edit (positive), the edit reading the source's attention. The source
    branch does not retrace the source here (DDIM inversion is not exact): the baseline of
    PIE-Bench's "DDIM + P2P". Returns (edit latent, source-branch latent, report), latent space."""
    operations = pack_module("comfy_adapter.operations")
    attention = pack_module("comfy_adapter.attention")
    core = pack_module("edict_core")
    sigmas = operations.prepare("DDIM", model, operations.Schedule(steps, scheduler, denoise).sigmas(model))
    clean_level, batch = float(sigmas[-1]), noisy.shape[0]

    def routine(lockstep_model, session, report):
        x = torch.cat([noisy.to(session.device, session.dtype)] * 2)
        x = core.sample_ddim(lockstep_model, x, sigmas, callback=report)
        return [session.to_latent_space(session.leave_clean(x, clean_level))]

    source_guider = operations.simple_guider(model, source_positive, negative, cfg)
    guider = operations.simple_guider(model, positive, negative, cfg)
    (both,), report = attention.run_lockstep("DDIM", source_guider, guider, control, noisy.to(torch.float32),
                                             sigmas, len(sigmas) - 1, 1, routine, len(sigmas) - 1)
    return both[batch:], both[:batch], report
