"""Plain DDIM (Euler in sampler space) and its approximate inversion: the baseline that
exact methods are measured against."""

from ._common import direction, levels, report


def sample_ddim(model, x, sigmas, callback=None):
    """Euler/DDIM from sigmas[0] down to sigmas[-1]; x: [B, C, H, W] at sigmas[0]."""
    sigmas = levels(sigmas)
    for k in range(len(sigmas) - 1):
        e, denoised = direction(model, x, sigmas[k])
        x = x + (sigmas[k + 1] - sigmas[k]) * e
        report(callback, k, sigmas[k + 1], x, denoised)
    return x


def invert_ddim(model, x, sigmas, callback=None):
    """DDIM inversion from sigmas[-1] up to sigmas[0]. Approximate: each step uses the
    direction at the level it leaves, where the exact inverse would need the one at the
    level it reaches. x: [B, C, H, W] at sigmas[-1]."""
    sigmas = levels(sigmas)
    steps = len(sigmas) - 1
    for i, k in enumerate(reversed(range(steps))):
        e, denoised = direction(model, x, sigmas[k + 1])
        x = x + (sigmas[k] - sigmas[k + 1]) * e
        report(callback, i, sigmas[k], x, denoised)
    return x
