"""Pieces every method shares."""

# The papers' settings, and the nodes' defaults: EDICT's mixing weight p (Wallace et al.)
# and BDIA's gamma (the authors' editing notebook).
DEFAULT_MIX_WEIGHT = 0.93
DEFAULT_GAMMA = 0.94


def direction(model, x, sigma):
    """d(x, sigma) = (x - D(x, sigma)) / sigma: k-diffusion's to_d, the predicted noise for
    EPS models and the velocity for flow models. Returns (d, denoised)."""
    denoised = model(x, sigma)
    return (x - denoised).div_(sigma), denoised


def report(callback, i, sigma, x, denoised):
    # x may be the routine's live state, updated in place after the callback returns:
    # a callback that keeps it must copy it.
    if callback is not None:
        callback({"i": i, "sigma": sigma, "x": x, "denoised": denoised})


def levels(sigmas):
    """Schedule as Python floats, so each step's arithmetic is the same in both directions."""
    return [float(s) for s in sigmas]
