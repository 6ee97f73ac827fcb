"""Pieces every method shares."""

# The papers' settings, and the nodes' defaults: EDICT's mixing weight p (Wallace et al.),
# BDIA's gamma (the authors' editing notebook) and Rex's zeta.
DEFAULT_MIX_WEIGHT = 0.93
DEFAULT_GAMMA = 0.94
# Rex's coupling zeta: that of the official rex_forward and of the authors' editing runs
# (image-experiments/run_rex.sh); their RexTorchdynWrapper defaults to 0.5.
DEFAULT_ZETA = 0.999


def direction(model, x, sigma):
    """d(x, sigma) = (x - D(x, sigma)) / sigma: k-diffusion's to_d, the predicted noise for
    EPS models and the velocity for flow models. Returns (d, denoised)."""
    denoised = model(x, sigma)
    return (x - denoised).div_(sigma), denoised


def report(callback, i, sigma, x, denoised, state=None):
    """The callback's view of step i: x the state at `sigma`, denoised the model's last output;
    state, in the sampling routines, the whole state the next step continues from (the pair, x
    among it). x and state are the routine's live tensors: a callback that keeps them must copy
    them, and one that changes state in place (LocalBlend, edict_core.attention.blend) changes
    what the recurrence continues from."""
    if callback is not None:
        callback({"i": i, "sigma": sigma, "x": x, "denoised": denoised, "state": state})


def levels(sigmas):
    """Schedule as Python floats, so each step's arithmetic is the same in both directions."""
    return [float(s) for s in sigmas]


def check_pair_steps(sigmas, minimum, title):
    """The step count N = len(sigmas) - 1 of a two-level method's run, refused below `minimum`:
    with one step the pair is (DDIM-inverted x, x) and sampling hands x back without a model
    call, so an "edit" would ignore its prompt."""
    n = len(sigmas) - 1
    if n < minimum:
        raise ValueError(f"{title} needs at least {minimum} steps, got {n}.")
    return n


def twin(model, x, sigmas, input_scale, callback=None, **settings):
    """A one-level method's start from one latent x ([B, C, ...], clean at sigmas[-1] or noisy
    at sigmas[0]): the pair (x, x), no model call (EDICT's two branches begin equal)."""
    return x, x


def ddim_inverse_start(model, x, sigmas, input_scale, callback=None, **settings):
    """A two-level method's start of inversion from one clean latent x ([B, C, ...] at
    sigmas[-1]): the clean pair (x, one plain DDIM inversion step at sigmas[-2]), as the BDIA
    and BELM reference code begins inversion. One model call."""
    sigmas = levels(sigmas)
    e, denoised = direction(model, x, sigmas[-1])
    up = x + (sigmas[-2] - sigmas[-1]) * e
    report(callback, 0, sigmas[-2], up, denoised)
    return x, up


def ddim_start(model, x, sigmas, input_scale, callback=None, **settings):
    """A two-level method's start from one noisy latent x ([B, C, ...] at sigmas[0]): the pair
    (x at sigmas[0], one plain DDIM step at sigmas[1]), as the BDIA and BELM reference code
    begins generation (there is no earlier state yet). One model call."""
    sigmas = levels(sigmas)
    e, denoised = direction(model, x, sigmas[0])
    first_step = x + (sigmas[1] - sigmas[0]) * e
    report(callback, 0, sigmas[1], first_step, denoised)
    return x, first_step
