"""The reference ODE solution the convergence figures and the order tests measure against: pure
torch, no ComfyUI, so the core tests import it as the bench does."""


def rk4_solve(model, x, start, end, steps, rho=7.0):
    """Classical RK4 on dx/dsigma = (x - D(x, sigma)) / sigma from sigma `start` to `end`, in
    karras' ramp variable u (sigma = (a + u (b - a))^rho, a = start^(1/rho), b = end^(1/rho)), at
    `steps` equal steps in u. model(x, sigma) -> D, the denoised estimate, shaped as x."""
    a, b = start ** (1 / rho), end ** (1 / rho)

    def f(x, u):
        base = a + u * (b - a)
        sigma = base ** rho
        return (x - model(x, sigma)) / sigma * (rho * base ** (rho - 1) * (b - a))

    h = 1.0 / steps
    for i in range(steps):
        u = i * h
        k1 = f(x, u)
        k2 = f(x + h / 2 * k1, u + h / 2)
        k3 = f(x + h / 2 * k2, u + h / 2)
        k4 = f(x + h * k3, u + h)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x
