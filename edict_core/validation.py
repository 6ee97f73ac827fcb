"""Parameter checks shared by every entry point. Messages say what is wrong and the fix."""

import math

import torch

from ._common import DEFAULT_MIX_WEIGHT, DEFAULT_ZETA


def _in_unit_interval(name, value, advice):
    """A weight that inversion divides by: a finite number in (0, 1], else ValueError with `advice`."""
    value = float(value)
    if not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise ValueError(f"{name} must be in (0, 1], got {value}. {advice}")
    return value


def check_mix_weight(mix_weight):
    """EDICT's mixing weight p: inversion divides by it, and p > 1 makes mixing expansive."""
    return _in_unit_interval("mix_weight", mix_weight,
                             f"The EDICT paper uses {DEFAULT_MIX_WEIGHT}; 1.0 turns mixing off.")


def check_gamma(gamma):
    """BDIA's gamma: inversion divides by it."""
    return _in_unit_interval("gamma", gamma, "The BDIA authors recommend 0.92 to 1.0 for editing and about 0.5 "
                             "for 10-step text-to-image.")


def check_zeta(zeta):
    """Rex's coupling zeta: inversion divides by it each step."""
    return _in_unit_interval("zeta", zeta, f"The Rex authors edit with {DEFAULT_ZETA}; below about 0.9 the "
                             "inverted pair grows far from noise.")


def check_choice(value, options):
    """A setting that is one of a few strings (a COMBO widget): the string itself, never a
    look-alike."""
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"expected one of {', '.join(repr(o) for o in options)}, got {value!r}.")
    return value


def check_steps(steps, minimum=1):
    if isinstance(steps, bool) or int(steps) != steps or steps < minimum:
        raise ValueError(f"steps must be a whole number of at least {minimum}, got {steps}.")
    return int(steps)


def relative_error(actual, expected):
    """||actual - expected|| / ||expected||, computed in float64."""
    actual = actual.to(torch.float64)
    expected = expected.to(torch.float64)
    return float(torch.linalg.vector_norm(actual - expected) / torch.linalg.vector_norm(expected))
