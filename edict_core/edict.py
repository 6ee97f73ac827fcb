"""EDICT (Wallace, Gokul, Naik, CVPR 2023) in ComfyUI's sampler space.

The pair (x, y) carries two copies of the state at one noise level. Each step updates one
branch from the other with an affine Euler/DDIM step, then mixes them; every part is
affine in the branch being changed, so the inverse applies the same network calls in
reverse order. See algorithms.md section 3.
"""

from ._common import DEFAULT_MIX_WEIGHT, direction, levels, report


def _x_goes_first(k, leapfrog):
    # The parity is keyed on the step's place in the schedule, which inversion and
    # generation share, never on a loop counter that runs the other way (the diffusers
    # community pipeline does that, and its round trip breaks for odd step counts).
    return not leapfrog or k % 2 == 0


def _step_inputs(sigmas, k, input_scale):
    sigma_a, sigma_b = sigmas[k], sigmas[k + 1]
    # The second branch is already at sigma_b but the reference feeds it to the network
    # labelled sigma_a unchanged in VP space; in sampler space that is this rescale.
    rescale = input_scale(sigma_b) / input_scale(sigma_a)
    return sigma_a, sigma_b - sigma_a, rescale


def sample_edict(model, pair, sigmas, input_scale, mix_weight=DEFAULT_MIX_WEIGHT, leapfrog=True, callback=None):
    """Generate: move the pair from sigmas[0] down to sigmas[-1].

    pair: (x, y), each [B, C, H, W] at noise level sigmas[0], ideally float64; not modified.
    sigmas: strictly decreasing, positive (see prepare_sigmas).
    Returns (x, y) at sigmas[-1]. Two model calls per step.
    """
    # Private copies, updated in place: besides the pair, only one direction and one
    # model input are alive at a time (the model call is where memory peaks).
    x, y = (t.clone() for t in pair)
    p = mix_weight
    sigmas = levels(sigmas)
    for k in range(len(sigmas) - 1):
        sigma_a, h, rescale = _step_inputs(sigmas, k, input_scale)
        # `first` and `second` are x and y themselves, not copies: the in-place updates below
        # change the pair. Rebinding either name (first = first + ...) would silently leave
        # x and y behind; test_core's round trips would catch it.
        first, second = (x, y) if _x_goes_first(k, leapfrog) else (y, x)
        first.add_(direction(model, second, sigma_a)[0], alpha=h)
        d_first, denoised = direction(model, first * rescale, sigma_a)
        second.add_(d_first, alpha=h)
        del d_first
        x.mul_(p).add_(y, alpha=1 - p)
        y.mul_(p).add_(x, alpha=1 - p)
        report(callback, k, sigmas[k + 1], x, denoised, state=(x, y))
    return x, y


def invert_edict(model, pair, sigmas, input_scale, mix_weight=DEFAULT_MIX_WEIGHT, leapfrog=True, callback=None):
    """Invert: move the pair from sigmas[-1] up to sigmas[0], undoing sample_edict exactly.

    pair: (x, y), each [B, C, H, W] at noise level sigmas[-1]; a clean latent enters as
    (x, x); not modified. Returns (x, y) at sigmas[0], from which sample_edict with the same
    model and settings returns the input to float rounding. Two model calls per step.
    """
    x, y = (t.clone() for t in pair)  # private copies, updated in place (see sample_edict)
    p = mix_weight
    sigmas = levels(sigmas)
    steps = len(sigmas) - 1
    for i, k in enumerate(reversed(range(steps))):
        sigma_a, h, rescale = _step_inputs(sigmas, k, input_scale)
        y.sub_(x, alpha=1 - p).div_(p)
        x.sub_(y, alpha=1 - p).div_(p)
        first, second = (x, y) if _x_goes_first(k, leapfrog) else (y, x)  # aliases (see sample_edict)
        second.sub_(direction(model, first * rescale, sigma_a)[0], alpha=h)
        d_second, denoised = direction(model, second, sigma_a)
        first.sub_(d_second, alpha=h)
        del d_second
        report(callback, i, sigma_a, x, denoised)
    return x, y
