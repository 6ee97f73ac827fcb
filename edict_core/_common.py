"""Pieces every method shares."""


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
