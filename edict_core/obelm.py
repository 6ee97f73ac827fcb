"""O-BELM (Wang et al., NeurIPS 2024, "BELM") in ComfyUI's sampler space.

States X_k sit at sigmas[k] (k grows toward the clean end), h_k = sigma_k - sigma_{k-1}
(negative in generation), rho_k = h_{k+1} / h_k, e_k = d(X_k, sigma_k). One model call per
step (a step of float32 rounding length is dropped first, see SAME_LEVEL):

    generation:  X_{k+1} = X_k + rho_k^2 (X_{k-1} - X_k) + (1 + rho_k) h_{k+1} e_k
    inversion:   X_{k-1} = X_k + (X_{k+1} - X_k - (1 + rho_k) h_{k+1} e_k) / rho_k^2

This is the official VP-space code (zituitui/BELM, samplers/BELM.py) with z = alpha x and
its t = sigma_vp / alpha: for EPS models alpha = c(sigma) and t = sigma, so its alpha ratios
are exactly the change of variables z = c(sigma) x and no c ratio is left (unlike BDIA,
whose backward DDIM residual lives at another level). The same formula is O-BELM on
dX/dsigma = d(X, sigma), so it serves flow models as they are: their velocity ODE in sigma
is finite at sigma = 1, where the reference's t = sigma / (1 - sigma) is not. It is the
second-order (leapfrog for equal steps) member of the BELM family; for any step sizes the
two X coefficients sum to 1 and a straight trajectory X = x0 + sigma * d is followed exactly.
"""

from ._common import direction, levels, report

MIN_STEPS = 2
# Levels closer than this (relative) are one level. ComfyUI computes schedules in float32:
# karras, exponential and normal end a few float32 ulps (up to 6e-7 relative) above
# model_sampling.sigma_min, and prepare_sigmas appends the floor after that, a step some
# 1e-6 times the one before it. Inversion divides by rho^2 (1e12 there) and would turn the
# pair into rounding noise; dropping that level moves the result by less than float32 shows.
SAME_LEVEL = 1e-5


def _levels(sigmas):
    """The schedule as floats, less every level within SAME_LEVEL of the next one (the first
    and the last level are always kept). Generation and inversion drop the same levels."""
    sigmas = levels(sigmas)
    kept = sigmas[-1:]
    for sigma in reversed(sigmas[1:-1]):
        if sigma - kept[-1] > SAME_LEVEL * kept[-1]:
            kept.append(sigma)
    if len(sigmas) > 1:
        if len(kept) > 1 and sigmas[0] - kept[-1] <= SAME_LEVEL * kept[-1]:
            kept.pop()  # the start is the input's level: drop the one just below it instead
        kept.append(sigmas[0])
    return kept[::-1]


def second_mode_damping(sigmas):
    """How much a run along `sigmas` damps O-BELM's second solution of its recurrence.

    Beside the mode that follows the ODE the recurrence has one that flips sign each step and
    is multiplied by rho_k^2 per step; over a run the product telescopes to (last step / first
    step)^2 in sigma. Well below 1 (karras, exponential, normal over a whole schedule) it
    dies out; near 1 or above (normal's tail, run by an edit at denoise <= 0.7) the method is
    leapfrog-like and the mode grows where the denoiser contracts: round trips stay exact,
    but an edit, sampled under other conditioning, drifts (bench edit_fidelity, by scheduler).
    """
    sigmas = _levels(sigmas)
    if len(sigmas) < 3:
        return 0.0
    return ((sigmas[-1] - sigmas[-2]) / (sigmas[1] - sigmas[0])) ** 2


def _step(sigmas, k):
    # (h_{k+1}, rho_k): the step leaving sigma_k and its ratio to the step that reached it.
    h = sigmas[k + 1] - sigmas[k]
    return h, h / (sigmas[k] - sigmas[k - 1])


def sample_obelm_pair(model, pair, sigmas, input_scale=None, callback=None):
    """Generate from the pair (X_0, X_1) at (sigmas[0], sigmas[1]) down to sigmas[-1].

    pair: two [B, C, ...] tensors, as returned by invert_obelm. Returns X_N at sigmas[-1],
    N >= 1 steps. One model call per step, N - 1 in all. input_scale is taken
    for the same call shape as BDIA and not used (see the module docstring).
    """
    sigmas = _levels(sigmas)
    previous, current = pair
    for k in range(1, len(sigmas) - 1):
        e, denoised = direction(model, current, sigmas[k])
        h, rho = _step(sigmas, k)
        following = current + rho * rho * (previous - current) + (1 + rho) * h * e
        previous, current = current, following
        report(callback, k, sigmas[k + 1], current, denoised)
    return current


def sample_obelm(model, x, sigmas, input_scale=None, callback=None):
    """Generate from one noisy latent x ([B, C, ...] at sigmas[0]) down to sigmas[-1].

    The first step is plain DDIM, as in the reference (there is no earlier state yet); the
    rest are O-BELM. Returns the state at sigmas[-1]. One model call per step.
    """
    sigmas = _levels(sigmas)
    if len(sigmas) < 2:
        return x
    e, denoised = direction(model, x, sigmas[0])
    first_step = x + (sigmas[1] - sigmas[0]) * e
    report(callback, 0, sigmas[1], first_step, denoised)
    return sample_obelm_pair(model, (x, first_step), sigmas, input_scale, callback)


def invert_obelm(model, x, sigmas, input_scale=None, callback=None):
    """Invert the clean-end state x ([B, C, ...] at sigmas[-1]) up to the pair (X_0, X_1).

    The first step up is plain DDIM inversion (the reference's intent: its code adds the
    coefficient without the noise prediction, which only moves X_{N-1}); every later one
    solves the O-BELM recurrence for the earlier state, so sample_obelm_pair with the same
    model returns x to float rounding. Returns (X_0, X_1) at (sigmas[0], sigmas[1]). One
    model call per step, N >= 2 steps (N = len(sigmas) - 1 unless a rounding step was dropped).
    """
    sigmas = _levels(sigmas)
    n = len(sigmas) - 1
    if n < MIN_STEPS:
        # With one step the pair is (DDIM-inverted x, x) and sampling hands x back without a
        # model call: an "edit" would ignore its prompt.
        raise ValueError(f"O-BELM needs at least {MIN_STEPS} steps, got {n}.")
    e, denoised = direction(model, x, sigmas[n])
    following, current = x, x + (sigmas[n - 1] - sigmas[n]) * e
    report(callback, 0, sigmas[n - 1], current, denoised)
    for i, k in enumerate(range(n - 1, 0, -1), start=1):
        e, denoised = direction(model, current, sigmas[k])
        h, rho = _step(sigmas, k)
        # Dividing by rho^2 amplifies rounding by (h_k / h_{k+1})^2 per step, (h_1 / h_N)^2
        # over the schedule (about 4e4 for karras at 1000 steps); generation damps it back.
        previous = current + (following - current - (1 + rho) * h * e) / (rho * rho)
        following, current = current, previous
        report(callback, i, sigmas[k - 1], current, denoised)
    return current, following
