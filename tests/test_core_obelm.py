"""O-BELM (edict_core.obelm) on analytic denoisers in float64: exactness, parity with the
official code (zituitui/BELM, samplers/BELM.py) written in VP form, one model call per
step, and second-order convergence. No ComfyUI needed."""

import math

import pytest
import torch

import edict_core as core
from edict_core.obelm import invert_obelm, sample_obelm, sample_obelm_pair
from test_core import (SIGMA_MAX, SIGMA_MIN, AnalyticDenoiser, AnalyticEps, alpha_bar, clean_latent, eps_scale,
                       flow_scale, flow_schedule, karras, schedule)

STEP_CASES = [(10, 1.0), (11, 1.0), (7, 0.8), (25, 0.6)]


def karras_levels(steps):
    """A karras schedule of `steps` steps that ends exactly on the floor."""
    levels = [float(s) for s in karras(steps + 1)[:-1]]
    levels[-1] = SIGMA_MIN
    return levels


@pytest.mark.parametrize("steps,denoise", STEP_CASES)
def test_obelm_round_trip_is_exact(steps, denoise):
    model, x0 = AnalyticDenoiser(cfg=7.0), clean_latent()
    sigmas = schedule(steps, denoise)
    kept = len(sigmas) - 1
    pair = invert_obelm(model, x0, sigmas, eps_scale)
    assert model.calls == kept
    x = sample_obelm_pair(model, pair, sigmas, eps_scale)
    assert model.calls == 2 * kept - 1
    error = core.relative_error(x, x0)
    print(f"O-BELM steps={steps} denoise={denoise}: {error:.2e}")
    assert error <= 1e-10
    assert core.relative_error(pair[0], x0) > 0.5


@pytest.mark.parametrize("steps,denoise", [(10, 1.0), (11, 1.0), (9, 0.6)])
def test_obelm_round_trip_holds_for_flow_models(steps, denoise):
    model, x0 = AnalyticDenoiser(flow=True), clean_latent()
    sigmas = flow_schedule(steps, denoise)
    start = (1 - float(sigmas[-1])) * x0  # the clean latent entered at the floor
    pair = invert_obelm(model, start, sigmas, flow_scale)
    error = core.relative_error(sample_obelm_pair(model, pair, sigmas, flow_scale), start)
    print(f"O-BELM flow steps={steps} denoise={denoise}: {error:.2e}")
    assert error <= 1e-10


def test_comfyui_float32_karras_round_trips():
    """ComfyUI's karras (k_diffusion get_sigmas_karras, float32) on SD1.5's model_sampling ends
    1.9e-8 above sigma_min: a step to the floor after it would be 1e-6 times the one before,
    where inversion would divide by rho^2 ~ 1e-12. prepare_sigmas, the one mechanism for a
    schedule's float32 tail, takes that last sigma for the floor."""
    sigma_min, sigma_max = 0.029167158529162407, 14.614640235900879  # SD1.5's, as float32 gives them
    ramp = torch.linspace(0, 1, 20)
    comfy_karras = (sigma_max ** (1 / 7) + ramp * (sigma_min ** (1 / 7) - sigma_max ** (1 / 7))) ** 7
    assert 0 < float(comfy_karras[-1]) - sigma_min < 1e-7
    sigmas = core.prepare_sigmas(torch.cat([comfy_karras, comfy_karras.new_zeros(1)]), sigma_min)
    kept = [float(s) for s in sigmas]
    assert len(kept) == 20 and kept[0] == float(sigmas[0]) and kept[-1] == sigma_min
    steps = [a - b for a, b in zip(kept, kept[1:])]
    assert min(b / a for a, b in zip(steps, steps[1:])) > 0.1
    model, x0 = AnalyticDenoiser(), clean_latent()
    pair = invert_obelm(model, x0, sigmas, eps_scale)
    assert model.calls == 19
    assert core.relative_error(pair[0], x0) < 1e3  # noise, not rounding blown up by 1e12
    assert core.relative_error(sample_obelm_pair(model, pair, sigmas, eps_scale), x0) <= 1e-10


def test_one_model_call_per_step():
    model, x = AnalyticDenoiser(), clean_latent() * SIGMA_MAX
    sigmas = karras_levels(9)
    sample_obelm(model, x, sigmas, eps_scale)
    assert model.calls == 9
    model.calls = 0
    pair = invert_obelm(model, clean_latent(), sigmas, eps_scale)
    assert model.calls == 9
    sample_obelm_pair(model, pair, sigmas, eps_scale)
    assert model.calls == 9 + 8  # the pair already holds X_1: no call for the first step


@pytest.mark.parametrize("sigmas", [[0.03], [1.0, 0.03]])
def test_invert_obelm_needs_two_steps(sigmas):
    """With one step the pair would be (DDIM step of x, x) and sampling would hand x back
    without calling the model, so an edit would ignore its prompt."""
    with pytest.raises(ValueError, match="O-BELM needs at least 2 steps"):
        invert_obelm(AnalyticDenoiser(), clean_latent(), torch.tensor(sigmas, dtype=torch.float64), eps_scale)


def test_sample_obelm_starts_with_one_ddim_step():
    model, x = AnalyticDenoiser(), clean_latent() * SIGMA_MAX
    sigmas = karras_levels(6)
    first = core.sample_ddim(model, x, sigmas[:2])
    assert torch.equal(sample_obelm(model, x, sigmas, eps_scale), sample_obelm_pair(model, (x, first), sigmas))
    assert torch.equal(sample_obelm(model, x, sigmas[:2], eps_scale), first)  # one step: DDIM


def test_equal_steps_make_it_leapfrog():
    """rho = 1: X_{k+1} = X_{k-1} + 2 h e_k, which is also BDIA at gamma 1 where r = 1 (flow)."""
    model, x = AnalyticDenoiser(flow=True), clean_latent()
    sigmas = [1.0 - k / 8 for k in range(8)]
    pair = (x, x + 0.1 * clean_latent(2))
    ours = sample_obelm_pair(model, pair, sigmas, flow_scale)
    assert core.relative_error(ours, core.sample_bdia_pair(model, pair, sigmas, flow_scale, 1.0)) <= 1e-14


def test_callbacks_report_every_step_in_order():
    model, x0 = AnalyticDenoiser(), clean_latent()
    sigmas, seen = karras_levels(5), []
    pair = invert_obelm(model, x0, sigmas, eps_scale, callback=lambda info: seen.append((info["i"], info["sigma"])))
    sample_obelm_pair(model, pair, sigmas, eps_scale, callback=lambda info: seen.append((info["i"], info["sigma"])))
    assert seen == [(i, sigmas[4 - i]) for i in range(5)] + [(i, sigmas[i + 1]) for i in range(1, 5)]


# ---------------------------------------------------------------- parity with the reference
#
# samplers/BELM.py works in VP space: alpha = sqrt(alpha_bar), sigma_vp = sqrt(1 - alpha_bar),
# state z = c(sigma) x, network eps(z, sigma) called on z directly, and its own variable
# t = sigma_vp / alpha (which is the sampler-space sigma for EPS models).

def _vp(sigma):
    return math.sqrt(alpha_bar(sigma)), math.sqrt(1.0 - alpha_bar(sigma))


def reference_obelm_generate(eps, z, sigmas, z_second=None):
    """intermediate_to_latent (rev_forward when z_second is None): the first step is DDIM, or
    z_second (the reference still calls the network there, and drops the result); each later
    one combines the two latest states and the noise prediction at the latest."""
    xis = [z]
    for i in range(len(sigmas) - 1):
        noise_pred = eps(xis[-1], sigmas[i])
        (alpha_t, sigma_t), (alpha_s, sigma_s) = _vp(sigmas[i]), _vp(sigmas[i + 1])
        if i == 0:
            xis.append(z_second if z_second is not None
                       else alpha_s / alpha_t * xis[-1] + (sigma_s - sigma_t * alpha_s / alpha_t) * noise_pred)
            continue
        alpha_p, sigma_p = _vp(sigmas[i - 1])
        t_p, t_t, t_s = sigma_p / alpha_p, sigma_t / alpha_t, sigma_s / alpha_s
        delta_1, delta_2, delta_3 = t_t - t_p, t_s - t_t, t_s - t_p
        coef_1 = delta_2 * delta_3 * alpha_s / delta_1
        coef_2 = (delta_2 / delta_1) ** 2 * (alpha_s / alpha_p)
        coef_3 = (delta_1 - delta_2) * delta_3 / (delta_1 ** 2) * (alpha_s / alpha_t)
        xis.append(coef_1 * noise_pred + coef_2 * xis[-2] + coef_3 * xis[-1])
    return xis[-1]


def reference_obelm_invert(eps, z, sigmas):
    """latent_to_intermediate: step i takes the state at level index + 1 (and the one below
    it) to level index = N - 1 - i. Returns (z_0, z_1). Its first step reads
    `(alpha_i/alpha_i_minus_1)*latent + (sigma_i - (alpha_i/alpha_i_minus_1)*sigma_i_minus_1)`,
    without `* noise_pred`; the DDIM inversion it means is written here. (Any z_{N-1} round-
    trips exactly; that slip only makes the inverted pair less like noise.)"""
    n = len(sigmas) - 1
    xis = [z]
    for i in range(n):
        index = n - i - 1
        noise_pred = eps(xis[-1], sigmas[index + 1])
        (alpha_i, sigma_i), (alpha_i_minus_1, sigma_i_minus_1) = _vp(sigmas[index]), _vp(sigmas[index + 1])
        if i == 0:
            ratio = alpha_i / alpha_i_minus_1
            xis.append(ratio * xis[-1] + (sigma_i - ratio * sigma_i_minus_1) * noise_pred)
            continue
        alpha_i_minus_2, sigma_i_minus_2 = _vp(sigmas[index + 2])
        h_i = sigma_i / alpha_i - sigma_i_minus_1 / alpha_i_minus_1
        h_i_minus_1 = sigma_i_minus_1 / alpha_i_minus_1 - sigma_i_minus_2 / alpha_i_minus_2
        coef_x_i_minus_2 = (alpha_i / alpha_i_minus_2) * (h_i ** 2) / (h_i_minus_1 ** 2)
        coef_x_i_minus_1 = (alpha_i / alpha_i_minus_1) * (h_i_minus_1 ** 2 - h_i ** 2) / (h_i_minus_1 ** 2)
        coef_eps = alpha_i * (h_i_minus_1 + h_i) * h_i / h_i_minus_1
        xis.append(coef_x_i_minus_2 * xis[-2] + coef_x_i_minus_1 * xis[-1] + coef_eps * noise_pred)
    return xis[-1], xis[-2]


PARITY_SCHEDULES = {"karras 11": karras_levels(11), "karras 12": karras_levels(12),
                    "partial 9 of 15": karras_levels(15)[-10:]}


@pytest.mark.parametrize("name", PARITY_SCHEDULES)
def test_obelm_generation_matches_reference(name):
    net, s = AnalyticEps(), PARITY_SCHEDULES[name]
    x = clean_latent(5) * s[0]
    ref = reference_obelm_generate(net.eps, eps_scale(s[0]) * x, s)
    assert core.relative_error(eps_scale(s[-1]) * sample_obelm(net.denoiser, x, s, eps_scale), ref) <= 1e-10
    second = clean_latent(6) * s[1]
    ref = reference_obelm_generate(net.eps, eps_scale(s[0]) * x, s, eps_scale(s[1]) * second)
    ours = sample_obelm_pair(net.denoiser, (x, second), s, eps_scale)
    assert core.relative_error(eps_scale(s[-1]) * ours, ref) <= 1e-10


@pytest.mark.parametrize("name", PARITY_SCHEDULES)
def test_obelm_inversion_matches_reference(name):
    net, s = AnalyticEps(), PARITY_SCHEDULES[name]
    x = clean_latent(5)
    ours = invert_obelm(net.denoiser, x, s, eps_scale)
    ref = reference_obelm_invert(net.eps, eps_scale(s[-1]) * x, s)
    for mine, theirs, level in zip(ours, ref, s[:2]):
        assert core.relative_error(eps_scale(level) * mine, theirs) <= 1e-10


# ---------------------------------------------------------------- order of convergence

def rk4_karras(model, x, steps):
    """The bench's reference solve (bench/reference.py) from SIGMA_MAX to SIGMA_MIN."""
    from bench.reference import rk4_solve

    return rk4_solve(model, x, SIGMA_MAX, SIGMA_MIN, steps)


def test_obelm_is_second_order():
    """On a smooth denoiser (test_core's, cfg 1) the error against a fine RK4 solve falls 4x
    when the steps double; DDIM's falls 2x. (Measured: O-BELM 3.97, 3.99; DDIM ~2.)"""
    model, x = AnalyticDenoiser(cfg=1.0), clean_latent(5) * SIGMA_MAX
    reference = rk4_karras(model, x, 1000)
    assert core.relative_error(rk4_karras(model, x, 500), reference) < 1e-9
    errors = {n: (core.relative_error(sample_obelm(model, x, karras_levels(n), eps_scale), reference),
                  core.relative_error(core.sample_ddim(model, x, karras_levels(n)), reference))
              for n in (20, 40, 80)}
    print({n: f"O-BELM {e:.3e}, DDIM {d:.3e}" for n, (e, d) in errors.items()})
    for n in (20, 40):
        obelm_ratio, ddim_ratio = errors[n][0] / errors[2 * n][0], errors[n][1] / errors[2 * n][1]
        assert 3.8 <= obelm_ratio <= 4.2 and 1.8 <= ddim_ratio <= 2.3, (n, obelm_ratio, ddim_ratio)


def test_second_mode_damping_is_the_squared_ratio_of_last_to_first_step():
    """The product of rho_k^2 over a run telescopes to (last step / first step)^2."""
    from edict_core.obelm import second_mode_damping

    assert second_mode_damping(torch.tensor([4.0, 3.0, 2.0, 1.0], dtype=torch.float64)) == 1.0
    assert second_mode_damping(torch.tensor([8.0, 4.0, 2.0, 1.0], dtype=torch.float64)) == 0.0625
    assert second_mode_damping(torch.tensor([2.0, 1.0], dtype=torch.float64)) == 0.0  # one step: no mode
