"""Parameter checks shared by every entry point. Messages say what is wrong and the fix."""

import math

import torch

from ._common import DEFAULT_MIX_WEIGHT


def check_mix_weight(mix_weight):
    """EDICT's mixing weight p: inversion divides by it, and p > 1 makes mixing expansive."""
    mix_weight = float(mix_weight)
    if not (math.isfinite(mix_weight) and 0.0 < mix_weight <= 1.0):
        raise ValueError(
            f"mix_weight must be in (0, 1], got {mix_weight}. The EDICT paper uses "
            f"{DEFAULT_MIX_WEIGHT}; 1.0 turns mixing off.")
    return mix_weight


def check_gamma(gamma):
    """BDIA's gamma: inversion divides by it."""
    gamma = float(gamma)
    if not (math.isfinite(gamma) and 0.0 < gamma <= 1.0):
        raise ValueError(
            f"gamma must be in (0, 1], got {gamma}. The BDIA authors recommend 0.92 to 1.0 "
            "for editing and about 0.5 for 10-step text-to-image.")
    return gamma


def check_steps(steps, minimum=1):
    if isinstance(steps, bool) or int(steps) != steps or steps < minimum:
        raise ValueError(f"steps must be a whole number of at least {minimum}, got {steps}.")
    return int(steps)


def relative_error(actual, expected):
    """||actual - expected|| / ||expected||, computed in float64."""
    actual = actual.to(torch.float64)
    expected = expected.to(torch.float64)
    return float(torch.linalg.vector_norm(actual - expected) / torch.linalg.vector_norm(expected))
