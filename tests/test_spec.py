"""The method spec (edict_core.spec) on an analytic denoiser in float64, for every method it
lists: its four routines fit together, its call counts are what it states, and a Sample
run's clean pair inverts back to the very noisy pair it came from. A method added to SPECS
is tested here with nothing edited. No ComfyUI needed."""

import pytest

import edict_core as core
from edict_core.spec import SPECS
from test_core import AnalyticDenoiser, clean_latent, eps_scale, schedule

STEPS = 9


@pytest.mark.parametrize("name", list(SPECS))
def test_spec_round_trip_calls_and_re_inversion(name):
    spec, model, x0 = SPECS[name], AnalyticDenoiser(cfg=7.0), clean_latent()
    sigmas, settings = schedule(STEPS, 0.8), SPECS[name].defaults
    clean = spec.start_clean(model, x0, sigmas, eps_scale, **settings)
    noisy = spec.invert(model, clean, sigmas, eps_scale, **settings)
    assert model.calls == spec.calls(STEPS, started=True)
    model.calls = 0
    back = spec.sample(model, noisy, sigmas, eps_scale, **settings)
    assert model.calls == spec.calls(STEPS, started=False)
    error = core.relative_error(back[0], x0)
    # The clean pair a Sample run returns recovers its noisy pair exactly (no start step).
    model.calls = 0
    again = spec.invert(model, back, sigmas, eps_scale, **settings)
    assert model.calls == spec.calls(STEPS, started=False)
    recovered = max(core.relative_error(a, b) for a, b in zip(again, noisy))
    print(f"{spec.title}: round trip {error:.2e}, noisy pair recovered to {recovered:.2e}")
    assert error <= 1e-10 and recovered <= 1e-10
    assert core.relative_error(noisy[0], x0) > 0.5  # really noisy


@pytest.mark.parametrize("name", list(SPECS))
def test_spec_generation_from_noise(name):
    """start_noisy then sample: the method's generation from one noisy latent, with the
    calls the spec states and a finite clean result."""
    spec, model = SPECS[name], AnalyticDenoiser(cfg=3.0)
    sigmas, settings = schedule(STEPS), SPECS[name].defaults
    x = clean_latent(seed=3) * float(sigmas[0])
    pair = spec.start_noisy(model, x, sigmas, eps_scale, **settings)
    out = spec.sample(model, pair, sigmas, eps_scale, **settings)
    assert model.calls == spec.calls(STEPS, started=True)
    assert out[0].shape == x.shape and out[0].isfinite().all()
    assert spec.reports(STEPS, started=True) == STEPS


def test_node_ids_and_settings_are_unique():
    prefixes = [spec.node_prefix for spec in SPECS.values()]
    assert len(set(prefixes)) == len(prefixes) and all(s.name == k for k, s in SPECS.items())
    for spec in SPECS.values():
        for setting in spec.settings:
            assert spec.checks[setting.name](setting.default) == setting.default


@pytest.mark.parametrize("value", ["0.5", True, None, [0.5]])
def test_float_settings_refuse_what_only_looks_like_a_number(value):
    with pytest.raises(ValueError, match="expected a number"):
        SPECS["bdia"].checks["gamma"](value)


@pytest.mark.parametrize("value", ["RK4", "dopri5", 4, None])
def test_combo_settings_refuse_what_is_not_one_of_their_options(value):
    """Rex's tableau is a COMBO: the string itself, never a look-alike; the message lists the options."""
    with pytest.raises(ValueError, match="expected one of 'euler', 'midpoint', 'rk4'"):
        SPECS["rex"].checks["tableau"](value)


def test_calls_per_step_follow_the_settings():
    """Rex's calls a step are 2 x its tableau's stages; the other methods' do not depend on settings."""
    rex = SPECS["rex"]
    assert [rex.step_calls({"tableau": t}) for t in ("euler", "midpoint", "rk4")] == [2, 4, 8]
    assert rex.step_calls() == 8 and rex.calls(5, started=True, settings={"tableau": "midpoint"}) == 20
    assert SPECS["edict"].step_calls({"mix_weight": 0.5}) == 2
