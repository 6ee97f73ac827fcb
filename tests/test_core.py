"""edict_core on analytic denoisers in float64: exactness, parity with the references,
schedule edge cases and parameter errors. No ComfyUI needed."""

import math

import pytest
import torch

import edict_core as core

SIGMA_MIN, SIGMA_MAX = 0.0292, 14.61


def karras(n, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, rho=7.0):
    """A KSampler-style schedule of n steps ending in 0."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def eps_scale(sigma):
    """c(sigma) of EPS / v / EDM models with sigma_data = 1."""
    return 1.0 / math.sqrt(sigma * sigma + 1.0)


def flow_scale(sigma):
    return 1.0


class AnalyticDenoiser:
    """A nonlinear, conditioned denoiser with classifier-free guidance, in float64.

    D(x, sigma) = D_u + cfg * (D_c - D_u), each branch (x + sigma^2 * tanh(A x + b)) /
    (1 + sigma^2) with its own A, b: smooth, strongly nonlinear at high noise, and not a
    linear map, so no step can be undone by accident. Counts its calls.
    """

    def __init__(self, channels=4, cfg=7.0, seed=0, flow=False):
        g = torch.Generator().manual_seed(seed)
        self.a_cond = torch.randn(channels, channels, generator=g, dtype=torch.float64) / 2
        self.a_uncond = torch.randn(channels, channels, generator=g, dtype=torch.float64) / 2
        self.b_cond = torch.randn(channels, 1, 1, generator=g, dtype=torch.float64)
        self.b_uncond = torch.randn(channels, 1, 1, generator=g, dtype=torch.float64)
        self.cfg, self.flow, self.calls = cfg, flow, 0

    def _branch(self, x, sigma, a, b):
        mixed = torch.einsum("oc,bchw->bohw", a, x) + b
        if self.flow:  # a velocity model: D = x - sigma * v(x)
            return x - sigma * torch.tanh(mixed)
        return (x + sigma * sigma * torch.tanh(mixed)) / (1.0 + sigma * sigma)

    def __call__(self, x, sigma):
        self.calls += 1
        uncond = self._branch(x, sigma, self.a_uncond, self.b_uncond)
        cond = self._branch(x, sigma, self.a_cond, self.b_cond)
        return uncond + self.cfg * (cond - uncond)


def clean_latent(seed=1, shape=(2, 4, 6, 5)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def schedule(steps, denoise=1.0, floor=SIGMA_MIN / 2):
    # The floor sits below karras's last sigma, so every one of `steps` is a real step (a last
    # sigma within rounding of the floor is snapped to it: one step fewer).
    return core.prepare_sigmas(core.denoise_schedule(karras, steps, denoise), floor)


def flow_schedule(steps, denoise=1.0):
    full = lambda n: torch.cat([torch.linspace(1.0, 0.0, n + 1, dtype=torch.float64)[:-1], torch.zeros(1, dtype=torch.float64)])
    return core.prepare_sigmas(core.denoise_schedule(full, steps, denoise), 1e-3)


# Step counts: even, odd, and the odd counts that a partial denoise leaves
# (e.g. 7 steps at denoise 0.8 run the last 7 of an 8-step schedule).
STEP_CASES = [(10, 1.0), (11, 1.0), (7, 0.8), (25, 0.6), (1, 1.0)]
BDIA_STEP_CASES = STEP_CASES[:-1]  # BDIA needs two steps (test_invert_bdia_needs_two_steps)


@pytest.mark.parametrize("steps,denoise", STEP_CASES)
@pytest.mark.parametrize("leapfrog", [True, False])
@pytest.mark.parametrize("mix_weight", [0.93, 1.0])
def test_edict_round_trip_is_exact(steps, denoise, leapfrog, mix_weight):
    model, x0 = AnalyticDenoiser(), clean_latent()
    sigmas = schedule(steps, denoise)
    assert len(sigmas) - 1 == steps
    noisy = core.invert_edict(model, (x0, x0), sigmas, eps_scale, mix_weight, leapfrog)
    assert model.calls == 2 * steps
    x, y = core.sample_edict(model, noisy, sigmas, eps_scale, mix_weight, leapfrog)
    error = max(core.relative_error(x, x0), core.relative_error(y, x0))
    print(f"EDICT steps={steps} denoise={denoise} leapfrog={leapfrog} p={mix_weight}: {error:.2e}")
    assert error <= 1e-10
    # The inverted state is really noisy, not the input handed back.
    assert core.relative_error(noisy[0], x0) > 0.5


@pytest.mark.parametrize("steps,denoise", BDIA_STEP_CASES)
@pytest.mark.parametrize("gamma", [0.5, 1.0])
def test_bdia_round_trip_is_exact(steps, denoise, gamma):
    model, x0 = AnalyticDenoiser(), clean_latent()
    sigmas = schedule(steps, denoise)
    pair = core.invert_bdia(model, x0, sigmas, eps_scale, gamma)
    assert model.calls == steps
    x = core.sample_bdia_pair(model, pair, sigmas, eps_scale, gamma)
    error = core.relative_error(x, x0)
    print(f"BDIA steps={steps} denoise={denoise} gamma={gamma}: {error:.2e}")
    assert error <= 1e-10
    assert core.relative_error(pair[0], x0) > 0.5


@pytest.mark.parametrize("steps", [10, 11])
def test_round_trips_hold_for_flow_models(steps):
    model, x0 = AnalyticDenoiser(flow=True), clean_latent()
    sigmas = flow_schedule(steps)
    start = (1 - float(sigmas[-1])) * x0  # the clean latent entered at the floor
    noisy = core.invert_edict(model, (start, start), sigmas, flow_scale, 0.93, True)
    x, _ = core.sample_edict(model, noisy, sigmas, flow_scale, 0.93, True)
    assert core.relative_error(x, start) <= 1e-10
    pair = core.invert_bdia(model, start, sigmas, flow_scale, 0.94)
    assert core.relative_error(core.sample_bdia_pair(model, pair, sigmas, flow_scale, 0.94), start) <= 1e-10


def test_ddim_inversion_is_only_approximate_at_high_cfg():
    """The contrast the exact methods exist for: same model, same schedule."""
    model, x0 = AnalyticDenoiser(cfg=7.0), clean_latent()
    sigmas = schedule(20)
    ddim = core.relative_error(core.sample_ddim(model, core.invert_ddim(model, x0, sigmas), sigmas), x0)
    noisy = core.invert_edict(model, (x0, x0), sigmas, eps_scale)
    edict = core.relative_error(core.sample_edict(model, noisy, sigmas, eps_scale)[0], x0)
    print(f"cfg 7, 20 steps: DDIM {ddim:.2e}, EDICT {edict:.2e}")
    assert ddim > 1e-3 > 1e-10 >= edict


def test_sample_bdia_starts_with_one_ddim_step():
    model, x = AnalyticDenoiser(), clean_latent() * SIGMA_MAX
    sigmas = schedule(6)
    full = core.sample_bdia(model, x, sigmas, eps_scale, 0.5)
    first = core.sample_ddim(model, x, sigmas[:2])
    assert torch.equal(full, core.sample_bdia_pair(model, (x, first), sigmas, eps_scale, 0.5))
    # with one step it is exactly DDIM
    assert torch.equal(core.sample_bdia(model, x, sigmas[:2], eps_scale, 0.5), first)


def test_callbacks_report_every_step_in_order():
    model, x0 = AnalyticDenoiser(), clean_latent()
    sigmas = schedule(5)
    seen = []
    noisy = core.invert_edict(model, (x0, x0), sigmas, eps_scale, callback=lambda info: seen.append(info["i"]))
    core.sample_edict(model, noisy, sigmas, eps_scale, callback=lambda info: seen.append(info["i"]))
    pair = core.invert_bdia(model, x0, sigmas, eps_scale, 0.9, callback=lambda info: seen.append(info["i"]))
    core.sample_bdia_pair(model, pair, sigmas, eps_scale, 0.9, callback=lambda info: seen.append(info["i"]))
    assert seen == [0, 1, 2, 3, 4] * 3 + [1, 2, 3, 4]


def test_routines_leave_their_inputs_alone():
    """EDICT updates its pair in place, on copies: the caller's tensors (ComfyUI's cached
    outputs) must not change, even when both branches are one tensor, as a clean latent's are."""
    model, x0 = AnalyticDenoiser(), clean_latent()
    before = x0.clone()
    sigmas = schedule(4)
    noisy = core.invert_edict(model, (x0, x0), sigmas, eps_scale)
    noisy_before = [t.clone() for t in noisy]
    core.sample_edict(model, noisy, sigmas, eps_scale)
    assert torch.equal(x0, before)
    assert all(torch.equal(t, u) for t, u in zip(noisy, noisy_before))


# ---------------------------------------------------------------- parity with the references
#
# The official code works in VP space: alpha_bar = 1 / (1 + sigma^2), state z = c(sigma) x,
# network eps(z, sigma) called on z directly. In sampler space the same network is the
# denoiser D(x, sigma) = x - sigma * eps(c(sigma) x, sigma).

def alpha_bar(sigma):
    return 1.0 / (1.0 + sigma * sigma)


class AnalyticEps:
    def __init__(self, seed=3, channels=4):
        g = torch.Generator().manual_seed(seed)
        self.a = torch.randn(channels, channels, generator=g, dtype=torch.float64) / 2
        self.b = torch.randn(channels, 1, 1, generator=g, dtype=torch.float64)

    def eps(self, z, sigma):
        return torch.tanh(torch.einsum("oc,bchw->bohw", self.a, z) * (1 + sigma) + self.b)

    def denoiser(self, x, sigma):
        return x - sigma * self.eps(eps_scale(sigma) * x, sigma)


def reference_edict_generate(eps, z_pair, sigmas, p, leapfrog):
    """salesforce/EDICT's coupled step, written out for VP states."""
    x, y = z_pair
    for k in range(len(sigmas) - 1):
        a_cur, a_next = alpha_bar(sigmas[k]), alpha_bar(sigmas[k + 1])
        a = math.sqrt(a_next / a_cur)
        b = math.sqrt(1 - a_next) - math.sqrt(a_next * (1 - a_cur) / a_cur)
        x_first = not leapfrog or k % 2 == 0
        first, second = (x, y) if x_first else (y, x)
        first = a * first + b * eps(second, sigmas[k])
        second = a * second + b * eps(first, sigmas[k])
        x, y = (first, second) if x_first else (second, first)
        x = p * x + (1 - p) * y
        y = (1 - p) * x + p * y
    return x, y


def reference_edict_invert(eps, z_pair, sigmas, p, leapfrog):
    """salesforce/EDICT's inverse step: unmix, then undo the coupled step, k = N-1 .. 0."""
    x, y = z_pair
    for k in reversed(range(len(sigmas) - 1)):
        a_cur, a_next = alpha_bar(sigmas[k]), alpha_bar(sigmas[k + 1])
        a = math.sqrt(a_next / a_cur)
        b = math.sqrt(1 - a_next) - math.sqrt(a_next * (1 - a_cur) / a_cur)
        y = (y - (1 - p) * x) / p
        x = (x - (1 - p) * y) / p
        x_first = not leapfrog or k % 2 == 0
        first, second = (x, y) if x_first else (y, x)
        second = (second - b * eps(first, sigmas[k])) / a
        first = (first - b * eps(second, sigmas[k])) / a
        x, y = (first, second) if x_first else (second, first)
    return x, y


def reference_ddim(z, eps_value, sigma_from, sigma_to):
    a_from, a_to = alpha_bar(sigma_from), alpha_bar(sigma_to)
    z0 = (z - math.sqrt(1 - a_from) * eps_value) / math.sqrt(a_from)
    return math.sqrt(a_to) * z0 + math.sqrt(1 - a_to) * eps_value


def reference_bdia_generate(eps, z_pair, sigmas, gamma):
    """guoqiang-zhang-x/BDIA's update: z_{k+1} = gamma (z_{k-1} - DDIM(z_k -> k-1))
    + DDIM(z_k -> k+1), one network call per step."""
    previous, current = z_pair
    for k in range(1, len(sigmas) - 1):
        e = eps(current, sigmas[k])
        following = (gamma * (previous - reference_ddim(current, e, sigmas[k], sigmas[k - 1]))
                     + reference_ddim(current, e, sigmas[k], sigmas[k + 1]))
        previous, current = current, following
    return current


def reference_bdia_invert(eps, z, sigmas, gamma):
    """The BDIA update solved for z_{k-1}: one DDIM inversion step from the clean end, then
    z_{k-1} = DDIM(z_k -> k-1) + (z_{k+1} - DDIM(z_k -> k+1)) / gamma."""
    n = len(sigmas) - 1
    following, current = z, reference_ddim(z, eps(z, sigmas[n]), sigmas[n], sigmas[n - 1])
    for k in range(n - 1, 0, -1):
        e = eps(current, sigmas[k])
        previous = (reference_ddim(current, e, sigmas[k], sigmas[k - 1])
                    + (following - reference_ddim(current, e, sigmas[k], sigmas[k + 1])) / gamma)
        following, current = current, previous
    return current, following


@pytest.mark.parametrize("steps", [11, 12])
@pytest.mark.parametrize("leapfrog", [True, False])
def test_edict_inversion_matches_reference(leapfrog, steps):
    net, sigmas = AnalyticEps(), schedule(steps)
    s = [float(v) for v in sigmas]
    x, y = clean_latent(5), clean_latent(6)
    ours = core.invert_edict(net.denoiser, (x, y), sigmas, eps_scale, 0.93, leapfrog)
    ref = reference_edict_invert(net.eps, (eps_scale(s[-1]) * x, eps_scale(s[-1]) * y), s, 0.93, leapfrog)
    for mine, theirs in zip(ours, ref):
        assert core.relative_error(eps_scale(s[0]) * mine, theirs) <= 1e-10


@pytest.mark.parametrize("steps", [11, 12])
def test_bdia_inversion_matches_reference(steps):
    net, sigmas = AnalyticEps(), schedule(steps)
    s = [float(v) for v in sigmas]
    x = clean_latent(5)
    ours = core.invert_bdia(net.denoiser, x, sigmas, eps_scale, 0.94)
    ref = reference_bdia_invert(net.eps, eps_scale(s[-1]) * x, s, 0.94)
    for mine, theirs, level in zip(ours, ref, s[:2]):
        assert core.relative_error(eps_scale(level) * mine, theirs) <= 1e-10


@pytest.mark.parametrize("leapfrog", [True, False])
def test_edict_matches_reference_recurrence(leapfrog):
    net, sigmas = AnalyticEps(), schedule(12)
    s = [float(v) for v in sigmas]
    x = clean_latent(5) * s[0]
    y = clean_latent(6) * s[0]
    ours = core.sample_edict(net.denoiser, (x, y), sigmas, eps_scale, 0.93, leapfrog)
    ref = reference_edict_generate(net.eps, (eps_scale(s[0]) * x, eps_scale(s[0]) * y), s, 0.93, leapfrog)
    for mine, theirs in zip(ours, ref):
        assert core.relative_error(eps_scale(s[-1]) * mine, theirs) <= 1e-10


def test_bdia_matches_reference_recurrence():
    net, sigmas = AnalyticEps(), schedule(12)
    s = [float(v) for v in sigmas]
    x0, x1 = clean_latent(5) * s[0], clean_latent(6) * s[1]
    ours = core.sample_bdia_pair(net.denoiser, (x0, x1), sigmas, eps_scale, 0.94)
    ref = reference_bdia_generate(net.eps, (eps_scale(s[0]) * x0, eps_scale(s[1]) * x1), s, 0.94)
    assert core.relative_error(eps_scale(s[-1]) * ours, ref) <= 1e-10


def test_ddim_is_the_euler_step():
    net, sigmas = AnalyticEps(), schedule(4)
    s = [float(v) for v in sigmas]
    x = clean_latent(5) * s[0]
    z = eps_scale(s[0]) * x
    for k in range(len(s) - 1):
        z = reference_ddim(z, net.eps(z, s[k]), s[k], s[k + 1])
    ours = core.sample_ddim(net.denoiser, x, sigmas)
    assert core.relative_error(eps_scale(s[-1]) * ours, z) <= 1e-12


# ---------------------------------------------------------------- schedules

def test_trailing_zero_becomes_the_floor():
    out = core.prepare_sigmas(torch.tensor([14.6, 3.0, 0.5, 0.0]), 0.03)
    assert out.dtype == torch.float64
    assert out.tolist() == pytest.approx([14.6, 3.0, 0.5, 0.03])
    assert float(out[-1]) == 0.03


def test_zero_length_steps_are_dropped():
    # karras ends at sigma_min, so replacing the 0 by the floor repeats it
    out = core.prepare_sigmas(torch.tensor([5.0, 2.0, 2.0, 0.03, 0.0], dtype=torch.float64), 0.03)
    assert out.tolist() == [5.0, 2.0, 0.03]


def test_schedule_that_ends_below_the_floor_keeps_its_own_end():
    out = core.prepare_sigmas(torch.tensor([5.0, 0.01, 0.0], dtype=torch.float64), 0.03)
    assert out.tolist() == [5.0, 0.01]


def test_schedule_without_zero_is_kept():
    out = core.prepare_sigmas(torch.tensor([5.0, 1.0], dtype=torch.float64), 0.03)
    assert out.tolist() == [5.0, 1.0]


@pytest.mark.parametrize("bad,message", [
    ([1.0, 2.0, 0.0], "strictly decrease"),
    ([float("nan"), 1.0, 0.0], "positive and finite"),
    ([float("inf"), 1.0, 0.0], "positive and finite"),
    ([2.0, -1.0], "positive and finite"),
    ([], "empty"),
])
def test_bad_schedules_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        core.prepare_sigmas(torch.tensor(bad, dtype=torch.float64), 0.03)


def test_bad_floor_is_refused():
    with pytest.raises(ValueError, match="floor"):
        core.prepare_sigmas(torch.tensor([1.0, 0.0]), 0.0)


def test_denoise_schedule_follows_ksampler():
    calls = []

    def make(n):
        calls.append(n)
        return karras(n)

    assert torch.equal(core.denoise_schedule(make, 20, 1.0), karras(20))
    partial = core.denoise_schedule(make, 20, 0.8)
    assert calls[-1] == 25 and torch.equal(partial, karras(25)[-21:])
    assert core.denoise_schedule(make, 20, 0.0).numel() == 0
    with pytest.raises(ValueError, match="denoise"):
        core.denoise_schedule(make, 20, 1.5)


def test_only_a_floor_means_no_step():
    # denoise so small that the kept schedule is [sigma_min, 0]: nothing left to run
    out = core.prepare_sigmas(torch.tensor([0.03, 0.0], dtype=torch.float64), 0.03)
    assert out.tolist() == [0.03]
    model, x0 = AnalyticDenoiser(), clean_latent()
    assert torch.equal(core.sample_edict(model, (x0, x0), out, eps_scale)[0], x0)
    assert model.calls == 0


# ---------------------------------------------------------------- parameters

@pytest.mark.parametrize("value", [0.0, -0.1, 1.01, float("nan"), float("inf")])
def test_mix_weight_outside_unit_interval_is_refused(value):
    with pytest.raises(ValueError, match=r"mix_weight must be in \(0, 1\]"):
        core.check_mix_weight(value)


@pytest.mark.parametrize("value", [0.0, -1.0, 1.5, float("nan")])
def test_gamma_outside_unit_interval_is_refused(value):
    with pytest.raises(ValueError, match=r"gamma must be in \(0, 1\]"):
        core.check_gamma(value)


@pytest.mark.parametrize("value", [0, -3, 1.5, True])
def test_steps_below_one_are_refused(value):
    with pytest.raises(ValueError, match="steps must be"):
        core.check_steps(value)


def test_valid_parameters_pass_through():
    assert core.check_mix_weight(0.93) == 0.93 and core.check_mix_weight(1) == 1.0
    assert core.check_gamma(1.0) == 1.0
    assert core.check_steps(50) == 50


@pytest.mark.parametrize("sigmas", [[0.03], [1.0, 0.03]])
def test_invert_bdia_needs_two_steps(sigmas):
    """With one step the pair would be (DDIM step of x, x) and sampling would hand x back
    without calling the model, so an edit would ignore its prompt."""
    with pytest.raises(ValueError, match="BDIA needs at least 2 steps"):
        core.invert_bdia(AnalyticDenoiser(), clean_latent(), torch.tensor(sigmas, dtype=torch.float64),
                         eps_scale, 0.9)
