"""Rex (Blasingame & Liu, ICML 2026, "Rex: A Family of Reversible Exponential (Stochastic)
Runge-Kutta Solvers") in ComfyUI's sampler space.

The pair (x, x_hat) carries two states at one noise level, as EDICT's does. Rex works in the
data-prediction variables of the probability-flow ODE: Z = x / sigma and gamma = 1 / sigma,
where dZ/dgamma = D(sigma Z, sigma) (D the denoised estimate). That holds for every family in
sampler space (EPS / v / EDM: x = x0 + sigma n; CONST flow: x = (1 - sigma) x0 + sigma n, whose
Z = (1/sigma - 1) x0 + n moves the same way), so no input_scale is needed. An explicit
Runge-Kutta tableau applied to that ODE is the Lawson / exponential step

    Psi(sigma_a -> sigma_b; u) = h * sum_i b_i k_i,   h = 1/sigma_b - 1/sigma_a,
    k_i = D(sigma_i Z_i, sigma_i),  1/sigma_i = 1/sigma_a + c_i h,  Z_i = u / sigma_a + h * sum_j a_ij k_j,

and McCallum & Foster's reversible coupling with parameter zeta in (0, 1] runs it as one step
from sigma_n to sigma_{n+1} (r = sigma_{n+1} / sigma_n):

    generation:  x_{n+1}     = r (zeta x_n + (1 - zeta) x_hat_n) + sigma_{n+1} Psi(sigma_n -> sigma_{n+1}; x_hat_n)
                 x_hat_{n+1} = r x_hat_n - sigma_{n+1} Psi(sigma_{n+1} -> sigma_n; x_{n+1})
    inversion:   x_hat_n     = x_hat_{n+1} / r + sigma_n Psi(sigma_{n+1} -> sigma_n; x_{n+1})
                 x_n         = (x_{n+1} / r - (1 - zeta) x_hat_n - sigma_n Psi(sigma_n -> sigma_{n+1}; x_hat_n)) / zeta

This is the official RexTorchdynWrapper (zblasingame/Rex-solver, image-experiments/samplers/
rex.py, prediction_type "data") with its weight sigma_vp = sigma alpha and time variable
alpha / sigma_vp = 1 / sigma; see docs/algorithms.md section 6. Each step makes 2 x stages model
calls (two Psi), in both directions; a run from one latent starts from the pair (x, x).
"""

from dataclasses import dataclass

from ._common import DEFAULT_ZETA, levels, report
from .validation import check_choice, check_zeta


@dataclass(frozen=True)
class Tableau:
    """An explicit Runge-Kutta tableau: nodes c, the strictly lower rows of a, weights b."""
    c: tuple
    a: tuple
    b: tuple
    order: int

    @property
    def stages(self):
        return len(self.c)


TABLEAUS = {
    "euler": Tableau(c=(0.0,), a=((),), b=(1.0,), order=1),
    "midpoint": Tableau(c=(0.0, 0.5), a=((), (0.5,)), b=(0.0, 1.0), order=2),
    "rk4": Tableau(c=(0.0, 0.5, 0.5, 1.0), a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
                   b=(1 / 6, 1 / 3, 1 / 3, 1 / 6), order=4),
}
DEFAULT_TABLEAU = "rk4"


def calls_per_step(tableau):
    """Model calls of one Rex step, either direction: two Psi of `stages` calls each."""
    return 2 * TABLEAUS[tableau].stages


def psi(model, u, sigma_a, sigma_b, tableau):
    """The exponential RK increment of Z = x / sigma from sigma_a to sigma_b (either way) for
    the state u ([B, C, ...] at sigma_a). Returns (h * sum_i b_i k_i in Z units, the first
    stage's denoised). `stages` model calls."""
    h = 1.0 / sigma_b - 1.0 / sigma_a
    # Each stage's denoised estimate in the state's dtype at once: the model returns float32,
    # and a Python float times a float32 tensor rounds to float32. The two directions scale
    # the same increment by different factors (sigma_{n+1} against sigma_n / r), so float32
    # products would differ by an ulp and the round trip would lose exactness at 1e-7.
    def denoised(x, sigma):
        return model(x, sigma).to(u.dtype)

    # A stage's estimate is kept only while a later row reads it, and the weighted sum grows in
    # place: an RK4 step holds its first stage, the sum, one stage input and two estimates.
    last_use = {j: i for i, row in enumerate(tableau.a) for j, w in enumerate(row) if w}
    # The first stage (c = 0, every explicit tableau) is the state itself at its own level:
    # fed as it is, with no rounding from dividing by sigma and multiplying back.
    first = denoised(u, sigma_a)
    ks, total = {0: first}, first * (h * tableau.b[0])
    for i in range(1, tableau.stages):
        gamma = 1.0 / sigma_a + tableau.c[i] * h
        stage = u / sigma_a  # Z = u / sigma_a, made again per stage rather than held
        for j, w in enumerate(tableau.a[i]):
            if w:
                stage.add_(ks[j], alpha=h * w)
        k = denoised(stage.div_(gamma), 1.0 / gamma)
        del stage
        ks = {j: v for j, v in ks.items() if last_use.get(j, -1) > i}
        if last_use.get(i, -1) > i:
            ks[i] = k
        if tableau.b[i]:
            total.add_(k, alpha=h * tableau.b[i])
    return total, first


def _check(sigmas, tableau, zeta):
    check_choice(tableau, tuple(TABLEAUS))
    check_zeta(zeta)
    return levels(sigmas), TABLEAUS[tableau]


def sample_rex(model, pair, sigmas, input_scale=None, tableau=DEFAULT_TABLEAU, zeta=DEFAULT_ZETA, callback=None):
    """Generate: move the pair (x, x_hat) from sigmas[0] down to sigmas[-1].

    pair: two [B, C, ...] tensors at sigmas[0] (from noise: (x, x)), ideally float64; not
    modified. sigmas: strictly decreasing, positive (prepare_sigmas). Returns (x, x_hat) at
    sigmas[-1], x the result. 2 x stages model calls per step. input_scale is taken for the
    common call shape and not used (the step needs none, see the module docstring).
    """
    sigmas, tab = _check(sigmas, tableau, zeta)
    x, x_hat = pair
    for n in range(len(sigmas) - 1):
        sigma_n, sigma_m = sigmas[n], sigmas[n + 1]
        r = sigma_m / sigma_n
        step, denoised = psi(model, x_hat, sigma_n, sigma_m, tab)
        x = r * (zeta * x + (1 - zeta) * x_hat) + sigma_m * step
        x_hat = r * x_hat - sigma_m * psi(model, x, sigma_m, sigma_n, tab)[0]
        report(callback, n, sigma_m, x, denoised, state=(x, x_hat))
    return x, x_hat


def invert_rex(model, pair, sigmas, input_scale=None, tableau=DEFAULT_TABLEAU, zeta=DEFAULT_ZETA, callback=None):
    """Invert: move the pair (x, x_hat) from sigmas[-1] up to sigmas[0], undoing sample_rex.

    pair: two [B, C, ...] tensors at sigmas[-1]; a clean latent enters as (x, x); not
    modified. Returns (x, x_hat) at sigmas[0], from which sample_rex with the same model and
    settings returns the input to float rounding. 2 x stages model calls per step; rounding
    grows by 1 / zeta per step (the division below).
    """
    sigmas, tab = _check(sigmas, tableau, zeta)
    x, x_hat = pair
    steps = len(sigmas) - 1
    for i, n in enumerate(reversed(range(steps))):
        sigma_n, sigma_m = sigmas[n], sigmas[n + 1]
        r = sigma_m / sigma_n
        back, denoised = psi(model, x, sigma_m, sigma_n, tab)
        x_hat = x_hat / r + sigma_n * back
        x = (x / r - (1 - zeta) * x_hat - sigma_n * psi(model, x_hat, sigma_n, sigma_m, tab)[0]) / zeta
        report(callback, i, sigma_n, x, denoised)
    return x, x_hat
