"""No model call is spent on a step of zero or rounding length at the clean end.

The exact methods stop at the model's floor, model_sampling.sigma_min, instead of sigma = 0
(edict_core.prepare_sigmas). ComfyUI computes its schedules in float32, and several end a
few float32 ulps off that floor (normal and exponential 1 ulp above on the discrete
schedules, karras up to 10); a floor appended after such a sigma is a step of rounding
length, which costs EDICT 2 model calls and BDIA 1 and changes nothing. Here, for every
scheduler in comfy.samplers.SCHEDULER_NAMES on EPS, v-prediction, EDM and flow models (the
tiny checkpoint under ComfyUI's model-sampling patch nodes), the calls of an EDICT and a
BDIA inversion equal 2 and 1 per real step, a real step being one longer than rounding;
and prepare_sigmas itself is pinned on the float32 and float64 cases.
"""

import math

import pytest
import torch

import edict_core as core
from harness.comfy import counting_model, patched_model, run_node

MODEL_KINDS = {
    "eps": ("ModelSamplingDiscrete", {"sampling": "eps", "zsnr": False}),
    "v_prediction": ("ModelSamplingDiscrete", {"sampling": "v_prediction", "zsnr": False}),
    "edm": ("ModelSamplingContinuousEDM", {"sampling": "edm", "sigma_max": 120.0, "sigma_min": 0.002}),
    "flow": ("ModelSamplingSD3", {"shift": 3.0}),
}
STEPS = 3  # the widget: enough for BDIA's 2 steps where the last one is the floor itself
ROUNDING = 1e-5  # relative: a step this short is rounding (float32 eps is 1.2e-7; a
# genuine step near the floor is over 1e-3 relative even at 1000 steps)
SD15_SIGMA_MIN, SD15_SIGMA_MAX = 0.029167158529162407, 14.614640235900879  # float32, as ComfyUI has them


def real_steps(sigmas, floor):
    """Steps longer than rounding in a ComfyUI schedule run to the floor: the trailing 0 is
    the floor (where the schedule ends above it)."""
    values = [float(s) for s in sigmas]
    levels = [s for s in values if s > 0.0]
    if values[-1] == 0.0 and levels and levels[-1] > floor:
        levels.append(floor)
    return sum(1 for a, b in zip(levels, levels[1:]) if a - b > ROUNDING * a)


def float32_neighbour(value, ulps):
    """The float32 number `ulps` steps above (or below, for negative ulps) float32(value)."""
    x = torch.tensor(value, dtype=torch.float32)
    toward = torch.tensor(math.inf if ulps > 0 else -math.inf, dtype=torch.float32)
    for _ in range(abs(ulps)):
        x = torch.nextafter(x, toward)
    return float(x)


# ------------------------------------------------------------------ prepare_sigmas itself

@pytest.mark.parametrize("ulps", [1, 3, 10, -1, -3])
def test_last_sigma_within_float32_rounding_of_the_floor_is_the_floor(ulps):
    near = float32_neighbour(SD15_SIGMA_MIN, ulps)
    out = core.prepare_sigmas(torch.tensor([14.6, 1.0, 0.2, near, 0.0], dtype=torch.float32), SD15_SIGMA_MIN)
    assert out.tolist() == [float(torch.tensor(v, dtype=torch.float32)) for v in (14.6, 1.0, 0.2)] + [SD15_SIGMA_MIN]


def test_last_sigma_within_float64_rounding_of_the_floor_is_the_floor():
    ramp = torch.linspace(0, 1, 10, dtype=torch.float64)  # karras in float64: ends 3.5e-18 above
    karras = (0.0292 ** (1 / 7) * ramp + 14.61 ** (1 / 7) * (1 - ramp)) ** 7
    assert float(karras[-1]) != 0.0292
    out = core.prepare_sigmas(torch.cat([karras, karras.new_zeros(1)]), 0.0292)
    assert len(out) == 10 and float(out[-1]) == 0.0292 and float(out[-2]) == float(karras[-2])


def test_a_genuine_last_step_is_kept():
    above = SD15_SIGMA_MIN * (1 + 1e-3)
    out = core.prepare_sigmas(torch.tensor([1.0, above, 0.0], dtype=torch.float64), SD15_SIGMA_MIN)
    assert out.tolist() == [1.0, above, SD15_SIGMA_MIN]


def test_a_schedule_without_zero_keeps_its_end_near_the_floor():
    near = float32_neighbour(SD15_SIGMA_MIN, 1)
    out = core.prepare_sigmas(torch.tensor([1.0, near], dtype=torch.float64), SD15_SIGMA_MIN)
    assert out.tolist() == [1.0, near]


def test_only_rounding_above_the_floor_means_no_step():
    near = float32_neighbour(SD15_SIGMA_MIN, 2)
    out = core.prepare_sigmas(torch.tensor([near, 0.0], dtype=torch.float64), SD15_SIGMA_MIN)
    assert out.tolist() == [SD15_SIGMA_MIN]


@pytest.mark.parametrize("n", [3, 10, 20, 50])
def test_comfyui_float32_karras_ends_on_the_floor(n):
    """k_diffusion's get_sigmas_karras as ComfyUI runs it (float32, SD1.5's float32 limits):
    its last sigma is sigma_min to float32 rounding, so n sigmas make n - 1 steps."""
    ramp = torch.linspace(0, 1, n)
    lo, hi = SD15_SIGMA_MIN ** (1 / 7), SD15_SIGMA_MAX ** (1 / 7)
    sigmas = torch.cat([(hi + ramp * (lo - hi)) ** 7, torch.zeros(1)])
    out = core.prepare_sigmas(sigmas, SD15_SIGMA_MIN)
    assert len(out) - 1 == n - 1 == real_steps(sigmas, SD15_SIGMA_MIN)
    assert float(out[-1]) == SD15_SIGMA_MIN


# ----------------------------------------------- every scheduler, through a real ComfyUI

@pytest.fixture(scope="module")
def clean_end(comfy, scene):
    """The tiny checkpoint under each model-sampling patch, its floor, and a 1-image latent."""
    models = {kind: patched_model(comfy, comfy.tiny["model"], node, **options)
              for kind, (node, options) in MODEL_KINDS.items()}
    return {"models": models, "latent": {"samples": scene["latent"]["samples"][:1]}, "figures": []}


@pytest.mark.parametrize("kind", list(MODEL_KINDS))
def test_no_call_on_a_rounding_length_step(comfy, scene, clean_end, kind):
    import comfy.samplers as samplers

    model = clean_end["models"][kind]
    model_sampling = model.get_model_object("model_sampling")
    floor = float(model_sampling.sigma_min)
    failures = []
    for scheduler in samplers.SCHEDULER_NAMES:
        raw = samplers.calculate_sigmas(model_sampling, scheduler, STEPS)
        real = real_steps(raw, floor)
        counts = {}
        for method, widgets, per_step in (("EDICT", {"mix_weight": 0.93, "leapfrog": True}, 2),
                                          ("BDIA", {"gamma": 0.94}, 1)):
            counted, calls = counting_model(model)
            inverted = run_node(comfy, f"{method}Invert", model=counted, positive=scene["positive"],
                                negative=scene["negative"], latent_image=clean_end["latent"], steps=STEPS,
                                cfg=1.0, scheduler=scheduler, denoise=1.0, **widgets)
            steps = len(inverted["exact_inversion"]["sigmas"]) - 1
            counts[method] = (len(calls), steps)
            if len(calls) != per_step * real or steps != real:
                failures.append(f"{kind}/{scheduler} {method}: {len(calls)} calls, {steps} steps run, "
                                f"{real} real (last sigmas {[float(s) for s in raw[-3:]]}, floor {floor})")
        line = (f"{kind:13s} {scheduler:16s} last sigma - floor = {float(raw[raw > 0][-1]) - floor:+.3e}  "
                f"real steps {real}  EDICT calls {counts['EDICT'][0]}  BDIA calls {counts['BDIA'][0]}")
        clean_end["figures"].append(line)
        print("\n[clean end] " + line, end="")
    print()
    assert not failures, "model calls on rounding-length steps:\n" + "\n".join(failures)
