"""Noise schedules for exact methods: no step to sigma = 0, no zero-length step."""

import math

import torch


def denoise_schedule(make_sigmas, steps, denoise):
    """The sigmas KSampler would run for `steps` at strength `denoise`.

    make_sigmas(n) -> [n + 1] descending sigmas of a full schedule (usually ending in 0).
    For denoise < 1 a schedule of int(steps / denoise) steps is built and its last
    steps + 1 sigmas kept, exactly as comfy.samplers.KSampler.set_steps does, so that the
    papers' "strength" and ComfyUI's "denoise" mean the same thing. denoise <= 0 gives an
    empty schedule: nothing to do.
    """
    denoise = float(denoise)
    if not math.isfinite(denoise) or denoise > 1.0:
        raise ValueError(f"denoise must be in [0, 1], got {denoise}.")
    if denoise <= 0.0:
        return torch.zeros(0, dtype=torch.float64)
    if denoise > 0.9999:
        return make_sigmas(steps)
    return make_sigmas(int(steps / denoise))[-(steps + 1):]


# How far (in float32 ulps of the floor) a schedule's last sigma may lie from the floor and
# still be the floor. Measured on ComfyUI 0.3.75, every scheduler, 1 to 1000 steps: up to 10
# ulps (karras: its power rho = 7 magnifies float32 rounding), 1 ulp for exponential and
# normal. A genuine last step is over 1e-3 relative (some 10^4 ulps) even at 1000 steps.
FLOOR_ULPS = 64


def _float32_ulp(value):
    """The spacing of float32 numbers at a positive normal `value`."""
    return 2.0 ** (math.frexp(value)[1] - 24)


def _near_floor(value, sigma_floor):
    return abs(value - sigma_floor) <= FLOOR_ULPS * _float32_ulp(sigma_floor)


def prepare_sigmas(sigmas, sigma_floor):
    """Turn a ComfyUI schedule into one an exact method can run forward and backward.

    sigmas: 1-D descending schedule, possibly ending in 0. sigma_floor: the positive level
    that stands in for "clean" (the model's sigma_min, where the reference code's t = 0
    sits), because a step to sigma = 0 discards the state and cannot be inverted.

    A trailing run of zeros is replaced by the floor (or dropped if the schedule already
    reached the floor), equal neighbours are merged (a zero-length step needs no model call
    and would divide by zero in inversion). "Reached the floor" allows for rounding: ComfyUI
    computes schedules in float32, and karras, exponential and normal end a few float32 ulps
    off model_sampling.sigma_min (see _near_floor); that last sigma counts as the floor, so
    no model call is spent on a step of rounding length. Returns a float64 CPU tensor that
    is strictly decreasing, positive and finite, with at least one entry; raises ValueError
    otherwise.
    """
    sigma_floor = float(sigma_floor)
    if not (math.isfinite(sigma_floor) and sigma_floor > 0.0):
        raise ValueError(f"the sigma floor must be positive and finite, got {sigma_floor}.")
    values = [float(s) for s in torch.as_tensor(sigmas).detach().flatten().cpu().tolist()]
    if not values:
        raise ValueError("the schedule is empty: there is no step to run.")
    ends_clean = values[-1] == 0.0
    while values and values[-1] == 0.0:
        values.pop()
    if ends_clean:
        while values and _near_floor(values[-1], sigma_floor):
            values.pop()
        if not values or values[-1] > sigma_floor:
            values.append(sigma_floor)
    merged = []
    for value in values:
        if not merged or value != merged[-1]:
            merged.append(value)
    for value in merged:
        if not math.isfinite(value) or value <= 0.0:
            raise ValueError(f"every sigma must be positive and finite; the schedule holds {value}.")
    for a, b in zip(merged, merged[1:]):
        if not b < a:
            raise ValueError(
                f"the schedule must strictly decrease, but {a} is followed by {b}. "
                "Exact inversion needs a descending schedule (noisy to clean).")
    return torch.tensor(merged, dtype=torch.float64)
