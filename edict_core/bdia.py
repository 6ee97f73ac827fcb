"""BDIA (Zhang, Lewis, Kleijn, ECCV 2024) in ComfyUI's sampler space.

States X_k sit at sigmas[k] (k grows toward the clean end). Generation combines the
previous state with a forward and a backward DDIM step from the current one; solved for
X_{k-1} the same relation runs backward, one model call per step. See algorithms.md
section 4.
"""

from ._common import check_pair_steps, ddim_inverse_start, ddim_start, direction, levels, report

MIN_STEPS = 2


def _ratio(sigmas, k, input_scale):
    # r = c(sigma_{k-1}) / c(sigma_{k+1}) turns the VP-space recurrence of the paper into
    # sampler space; it is 1 for flow models.
    return input_scale(sigmas[k - 1]) / input_scale(sigmas[k + 1])


def _generate(model, pair, sigmas, input_scale, gamma, callback):
    sigmas = levels(sigmas)
    previous, current = pair
    for k in range(1, len(sigmas) - 1):
        e, denoised = direction(model, current, sigmas[k])
        backward_residual = previous - current - (sigmas[k - 1] - sigmas[k]) * e
        following = (gamma * _ratio(sigmas, k, input_scale) * backward_residual
                     + current + (sigmas[k + 1] - sigmas[k]) * e)
        previous, current = current, following
        report(callback, k, sigmas[k + 1], current, denoised, state=(current, previous))
    return current, previous


def sample_bdia_pair(model, pair, sigmas, input_scale, gamma, callback=None):
    """Generate from the pair (X_0, X_1) at (sigmas[0], sigmas[1]) down to sigmas[-1].

    pair: two [B, C, ...] tensors, as returned by invert_bdia. Returns X_N at sigmas[-1],
    N = len(sigmas) - 1 >= 1. One model call per step, N - 1 in all.
    """
    return _generate(model, pair, sigmas, input_scale, gamma, callback)[0]


def sample_to_pair(model, pair, sigmas, input_scale, gamma, callback=None):
    """The method spec's generation: the noisy pair (X_0, X_1) -> the clean pair
    (X_N at sigmas[-1], X_{N-1} at sigmas[-2]). N - 1 model calls."""
    return _generate(model, pair, sigmas, input_scale, gamma, callback)


def sample_bdia(model, x, sigmas, input_scale, gamma, callback=None):
    """Generate from one noisy latent x at sigmas[0] down to sigmas[-1].

    x: [B, C, ...] at sigmas[0]. The first step is plain DDIM (there is no earlier state
    yet), the rest are BDIA. Returns the state at sigmas[-1]. One model call per step.
    """
    if len(sigmas) < 2:
        return x
    return sample_bdia_pair(model, ddim_start(model, x, sigmas, input_scale, callback=callback), sigmas,
                            input_scale, gamma, callback)


def _check_steps(sigmas):
    return check_pair_steps(sigmas, MIN_STEPS, "BDIA")


def invert_bdia(model, x, sigmas, input_scale, gamma, callback=None):
    """Invert the clean-end state x at sigmas[-1] up to the pair (X_0, X_1).

    x: [B, C, ...] at sigmas[-1]. The first step up is plain DDIM inversion; every later one
    solves the BDIA recurrence for the earlier state, so sample_bdia_pair with the same
    model and settings returns x to float rounding. Returns (X_0, X_1) at
    (sigmas[0], sigmas[1]). One model call per step, N = len(sigmas) - 1 >= 2 in all.
    """
    _check_steps(sigmas)
    return invert_pair(model, ddim_inverse_start(model, x, sigmas, input_scale, callback=callback), sigmas,
                       input_scale, gamma, callback)


def invert_pair(model, pair, sigmas, input_scale, gamma, callback=None):
    """The method spec's inversion: the clean pair (X_N, X_{N-1}) at (sigmas[-1], sigmas[-2])
    up to (X_0, X_1) at (sigmas[0], sigmas[1]), solving the recurrence for each earlier state.
    From a Sample node's clean pair this recovers the noisy pair it came from exactly; a clean
    latent enters through ddim_inverse_start (invert_bdia). N - 1 model calls.
    """
    sigmas = levels(sigmas)
    n = _check_steps(sigmas)
    following, current = pair
    for i, k in enumerate(range(n - 1, 0, -1), start=1):
        e, denoised = direction(model, current, sigmas[k])
        forward_residual = following - current - (sigmas[k + 1] - sigmas[k]) * e
        previous = (current + (sigmas[k - 1] - sigmas[k]) * e
                    + forward_residual / (gamma * _ratio(sigmas, k, input_scale)))
        following, current = current, previous
        report(callback, i, sigmas[k - 1], current, denoised)
    return current, following
