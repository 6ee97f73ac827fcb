"""O-BELM (Wang et al., NeurIPS 2024, "BELM") in ComfyUI's sampler space.

States X_k sit at sigmas[k] (k grows toward the clean end), h_k = sigma_k - sigma_{k-1}
(negative in generation), rho_k = h_{k+1} / h_k, e_k = d(X_k, sigma_k). One model call per
step. The schedule comes from prepare_sigmas, which has already dropped a last step of
float32 rounding length (inversion divides by rho^2 and would turn the pair into noise):

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

from ._common import check_pair_steps, ddim_inverse_start, ddim_start, direction, levels, report

MIN_STEPS = 2


def second_mode_damping(sigmas):
    """How much a run along `sigmas` damps O-BELM's second solution of its recurrence.

    Beside the mode that follows the ODE the recurrence has one that flips sign each step and
    is multiplied by rho_k^2 per step; over a run the product telescopes to (last step / first
    step)^2 in sigma. Well below 1 (karras, exponential, normal over a whole schedule) it
    dies out; near 1 or above (normal's tail, run by an edit at denoise <= 0.7) the method is
    leapfrog-like and the mode grows where the denoiser contracts: round trips stay exact,
    but an edit, sampled under other conditioning, drifts (bench edit_fidelity, by scheduler).
    """
    sigmas = levels(sigmas)
    if len(sigmas) < 3:
        return 0.0
    return ((sigmas[-1] - sigmas[-2]) / (sigmas[1] - sigmas[0])) ** 2


def _step(sigmas, k):
    # (h_{k+1}, rho_k): the step leaving sigma_k and its ratio to the step that reached it.
    h = sigmas[k + 1] - sigmas[k]
    return h, h / (sigmas[k] - sigmas[k - 1])


def _generate(model, pair, sigmas, callback):
    sigmas = levels(sigmas)
    previous, current = pair
    for k in range(1, len(sigmas) - 1):
        e, denoised = direction(model, current, sigmas[k])
        h, rho = _step(sigmas, k)
        following = current + rho * rho * (previous - current) + (1 + rho) * h * e
        previous, current = current, following
        report(callback, k, sigmas[k + 1], current, denoised, state=(current, previous))
    return current, previous


def sample_obelm_pair(model, pair, sigmas, input_scale=None, callback=None):
    """Generate from the pair (X_0, X_1) at (sigmas[0], sigmas[1]) down to sigmas[-1].

    pair: two [B, C, ...] tensors, as returned by invert_obelm. Returns X_N at sigmas[-1],
    N >= 1 steps. One model call per step, N - 1 in all. input_scale is taken
    for the same call shape as BDIA and not used (see the module docstring).
    """
    return _generate(model, pair, sigmas, callback)[0]


def sample_to_pair(model, pair, sigmas, input_scale=None, callback=None):
    """The method spec's generation: the noisy pair (X_0, X_1) -> the clean pair
    (X_N at sigmas[-1], X_{N-1} at sigmas[-2]). N - 1 model calls."""
    return _generate(model, pair, sigmas, callback)


def sample_obelm(model, x, sigmas, input_scale=None, callback=None):
    """Generate from one noisy latent x ([B, C, ...] at sigmas[0]) down to sigmas[-1].

    The first step is plain DDIM, as in the reference (there is no earlier state yet); the
    rest are O-BELM. Returns the state at sigmas[-1]. One model call per step.
    """
    if len(sigmas) < 2:
        return x
    return sample_obelm_pair(model, ddim_start(model, x, sigmas, input_scale, callback=callback), sigmas,
                             input_scale, callback)


def _check_steps(sigmas):
    return check_pair_steps(sigmas, MIN_STEPS, "O-BELM")


def invert_obelm(model, x, sigmas, input_scale=None, callback=None):
    """Invert the clean-end state x ([B, C, ...] at sigmas[-1]) up to the pair (X_0, X_1).

    The first step up is plain DDIM inversion (the reference's intent: its code adds the
    coefficient without the noise prediction, which only moves X_{N-1}); every later one
    solves the O-BELM recurrence for the earlier state, so sample_obelm_pair with the same
    model returns x to float rounding. Returns (X_0, X_1) at (sigmas[0], sigmas[1]). One
    model call per step, N = len(sigmas) - 1 >= 2 steps.
    """
    _check_steps(sigmas)
    return invert_pair(model, ddim_inverse_start(model, x, sigmas, input_scale, callback=callback), sigmas,
                       input_scale, callback)


def invert_pair(model, pair, sigmas, input_scale=None, callback=None):
    """The method spec's inversion: the clean pair (X_N, X_{N-1}) at (sigmas[-1], sigmas[-2])
    up to (X_0, X_1) at (sigmas[0], sigmas[1]), solving the recurrence for each earlier state.
    From a Sample node's clean pair this recovers the noisy pair it came from exactly; a clean
    latent enters through ddim_inverse_start (invert_obelm). N - 1 model calls.
    """
    sigmas = levels(sigmas)
    n = _check_steps(sigmas)
    following, current = pair
    for i, k in enumerate(range(n - 1, 0, -1), start=1):
        e, denoised = direction(model, current, sigmas[k])
        h, rho = _step(sigmas, k)
        # Dividing by rho^2 amplifies rounding by (h_k / h_{k+1})^2 per step, (h_1 / h_N)^2
        # over the schedule (about 4e4 for karras at 1000 steps); generation damps it back.
        previous = current + (following - current - (1 + rho) * h * e) / (rho * rho)
        following, current = current, previous
        report(callback, i, sigmas[k - 1], current, denoised)
    return current, following
