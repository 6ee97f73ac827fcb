"""The real architectures of ComfyUI's model families, tiny, through the pack's real nodes.

harness/tiny_models.py builds each family's own ComfyUI model class (SDXL, SD3.5, Flux,
Flux Fill, Qwen-Image, AuraFlow, Wan 2.1, the SD1.5 inpainting UNet) with seeded random
weights, its real conditioning inputs, latent format and model_sampling. For each, every
method of the spec at the family's cfg, 5 steps at denoise 0.8 (odd, on a partial schedule):

- the round trip (Invert, then Sample with the same prompt) returns `samples` bit for bit
  and the float64 result to 1e-10;
- an edit prompt moves the result far above rounding;
- the model makes exactly the calls the spec states (MethodSpec.calls): 2 per step for EDICT,
  1 for BDIA and O-BELM, whose Sample from an inverted pair makes N - 1 (the pair already
  holds the state after the first step).

Then the SD1.5 inpainting UNet with ComfyUI's InpaintModelConditioning, and with plain
prompts plus Set Latent Noise Mask: exact round trip, and a masked edit that leaves the
latent outside the mask bit for bit. The figures go to tests/artifacts/families.json and,
as rows of the README table "families", to harness.figures.
"""

import json
import os

import pytest
import torch

from harness import figures as figure_rows, tiny_models
from harness.comfy import REPO, counting_model, relative_error, run_node
from helpers import METHOD_WIDGETS, METHODS, SPEC_OF, read_json

SCHEDULER, DENOISE, REAL_STEPS = "normal", 0.8, 5
# The widget steps that run REAL_STEPS: "normal" on the discrete EPS schedule (SDXL, SD1.5)
# ends at model_sampling.sigma_min, the floor the exact methods stop at, so its last step
# (sigma_min -> 0) is not run; the flow schedules end above their floor.
WIDGET_STEPS = {"sdxl": REAL_STEPS + 1, "sd15_inpaint": REAL_STEPS + 1}
FLOAT64_BOUND = 1e-10
# An edit moves the result far above rounding: about half the smallest change measured here
# over the methods (EDICT, BDIA, O-BELM on 0.3.75: sdxl 1.71, sd3 9.13, flux 0.50, flux_fill
# 0.53, qwen_image 0.0086, auraflow 0.0089, wan21 2.61, sd15_inpaint 21.8, inside the mask 23.8).
EDIT_MIN = {"sdxl": 0.8, "sd3": 4.0, "flux": 0.25, "flux_fill": 0.25, "qwen_image": 0.004, "auraflow": 0.004,
            "wan21": 1.2, "sd15_inpaint": 10.0}
INPAINT_EDIT_MIN = 10.0
# Rex's edits (the matrices' midpoint tableau) move the result less on three families (measured:
# sdxl 0.410, wan21 0.525, sd15_inpaint 3.10, inpainting 2.91), still some 1e13 times its round
# trip's rounding.
EDIT_MIN_OF = {"Rex": dict(EDIT_MIN, sdxl=0.3, wan21=0.4, sd15_inpaint=2.0)}
INPAINT_EDIT_MIN_OF = {"Rex": 2.0}
FAMILIES = list(tiny_models.BUILDERS)
EXPECTED = {  # name: (model_base class, model_sampling kind, latent format, latent dims)
    "sdxl": ("SDXL", "EPS", "SDXL", 4),
    "sd3": ("SD3", "CONST", "SD3", 4),
    "flux": ("Flux", "CONST", "Flux", 4),
    "flux_fill": ("Flux", "CONST", "Flux", 4),
    "qwen_image": ("QwenImage", "CONST", "Wan21", 5),
    "auraflow": ("AuraFlow", "CONST", "SDXL", 4),
    "wan21": ("WAN21", "CONST", "Wan21", 5),
    "sd15_inpaint": ("BaseModel", "EPS", "SD15", 4),
}
ARTIFACT = os.path.join(REPO, "tests", "artifacts", "families.json")


@pytest.fixture(scope="session")
def families(comfy):
    """family name -> TinyFamily, each built once per session."""
    return lambda name: tiny_models.build(comfy, name)


@pytest.fixture(scope="session")
def figures():
    """Measured figures, written to tests/artifacts/families.json at the end of the session
    (merged into what an earlier, partial run left there)."""
    data = {}
    yield data
    if not data:
        return
    old = read_json(ARTIFACT)
    import comfyui_version

    merged = {"comfyui": comfyui_version.__version__, "steps": REAL_STEPS, "denoise": DENOISE,
              "scheduler": SCHEDULER,
              "bounds": {"samples": 0.0, "float64": FLOAT64_BOUND, "edit_min": EDIT_MIN,
                         "inpainting_edit_min": INPAINT_EDIT_MIN}}
    for section in ("families", "inpainting"):
        merged[section] = dict(old.get(section, {}) if old.get("comfyui") == merged["comfyui"] else {})
        for key, value in data.get(section, {}).items():
            merged[section].setdefault(key, {}).update(value)
    os.makedirs(os.path.dirname(ARTIFACT), exist_ok=True)
    with open(ARTIFACT, "w") as f:
        json.dump(merged, f, indent=1, sort_keys=True)


def record_row(row, family, steps, samples_error, float64_error, edit_change, invert_calls, sample_calls):
    """One row of the README table "families" (scripts/figures.py)."""
    model = family.describe()
    figure_rows.record(
        "families", row, **{"model class": f"{model['model_class']} ({family.config}, {family.built})",
                            "sampling": model["model_sampling"], "latent": "x".join(map(str, model["latent_shape"])),
                            "cfg": family.cfg, "steps": steps, "round trip (samples)": samples_error,
                            "round trip (float64)": float64_error, "edit change": edit_change,
                            "calls per step (invert / sample)": f"{invert_calls / steps:g} / {sample_calls / steps:g}"})


class Runs:
    """Invert / Sample of one family and method through the real nodes, on a model that
    counts its network calls."""

    def __init__(self, comfy, family, method, steps, negative=None):
        self.comfy, self.method = comfy, method
        self.model, self.calls = counting_model(family.model)
        self.common = dict(model=self.model, negative=negative or family.negative, steps=steps, cfg=family.cfg,
                           scheduler=SCHEDULER, denoise=DENOISE, **METHOD_WIDGETS[method])

    def invert(self, positive, latent):
        return self._counted(f"{self.method}Invert", positive=positive, latent_image=latent)

    def sample(self, positive, inverted):
        return self._counted(f"{self.method}Sample", positive=positive, latent_image=inverted, seed=0)

    def _counted(self, node, **inputs):
        before = len(self.calls)
        out = run_node(self.comfy, node, **inputs, **self.common)
        return out, len(self.calls) - before


def float64_result(out):
    """The float64 result of a Sample node: its record's first state, which `samples` casts."""
    branch = out["exact_inversion"]["branch"]
    assert branch.dtype == torch.float64
    return branch


def check_calls(method, steps, invert_calls, sample_calls, edit_calls):
    spec = SPEC_OF[method]
    settings = METHOD_WIDGETS[method]
    want_invert, want_sample = spec.calls(steps, True, settings), spec.calls(steps, False, settings)
    assert (invert_calls, sample_calls, edit_calls) == (want_invert, want_sample, want_sample)


# ------------------------------------------------------------------------- the families

@pytest.mark.parametrize("name", FAMILIES)
def test_family_is_the_real_architecture(families, figures, name):
    """Each builder gives the family's own ComfyUI model class, model_sampling and latent
    format; the loader-built ones were detected by comfy.sd as their config."""
    from comfy import model_base

    family = families(name)
    model_class, kind, latent_format, dims = EXPECTED[name]
    described = family.describe()
    print(f"\n[family] {name}: {described}")
    assert type(family.model.model) is getattr(model_base, model_class)
    assert (described["model_sampling"], described["latent_format"]) == (kind, latent_format)
    assert family.latent["samples"].ndim == dims and family.latent["samples"].dtype == torch.float32
    config = type(family.model.model.model_config).__name__
    assert config == family.config.split(" ")[0]
    if name == "sd15_inpaint":
        assert family.model.model.concat_keys == ("mask", "masked_image")  # set_inpaint()
    if name == "flux_fill":
        assert family.model.model.diffusion_model.img_in.weight.shape[1] == 96 * 4
    figures.setdefault("families", {}).setdefault(name, {})["model"] = described


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", FAMILIES)
def test_round_trip_edit_and_calls(comfy, families, figures, name, method):
    family = families(name)
    runs = Runs(comfy, family, method, WIDGET_STEPS.get(name, REAL_STEPS))
    original = family.latent["samples"]

    inverted, invert_calls = runs.invert(family.positive, family.latent)
    record = inverted["exact_inversion"]
    steps = len(record["sigmas"]) - 1
    _, kind, latent_format, _ = EXPECTED[name]
    assert (record["model_sampling"], record["latent_format"]) == (kind, latent_format)
    assert inverted["samples"].shape == original.shape
    noisy = relative_error(inverted["samples"], original)
    assert noisy > 0.1  # genuinely noisy, not the input handed back

    back, sample_calls = runs.sample(family.positive, inverted)
    samples_error = relative_error(back["samples"], original)
    float64_error = relative_error(float64_result(back), original)
    edited, edit_calls = runs.sample(family.edit, inverted)
    edit_change = relative_error(edited["samples"], back["samples"])

    figures.setdefault("families", {}).setdefault(name, {})[method] = {
        "steps": steps, "samples_error": samples_error, "float64_error": float64_error,
        "edit_change": edit_change, "inverted_vs_clean": noisy, "invert_calls": invert_calls,
        "sample_calls": sample_calls, "invert_calls_per_step": invert_calls / steps,
        "sample_calls_per_step": sample_calls / steps, "cfg": family.cfg}
    record_row(f"{name} {method}", family, steps, samples_error, float64_error, edit_change, invert_calls,
               sample_calls)
    print(f"\n[family] {name} {method} cfg={family.cfg} steps={steps}: samples {samples_error:.2e}  "
          f"float64 {float64_error:.2e}  edit {edit_change:.3g}  calls {invert_calls}/{sample_calls}/{edit_calls}")

    assert steps == REAL_STEPS
    assert samples_error == 0.0 and float64_error <= FLOAT64_BOUND  # measured: samples 0 everywhere
    assert edit_change > EDIT_MIN_OF.get(method, EDIT_MIN)[name]
    check_calls(method, steps, invert_calls, sample_calls, edit_calls)


# -------------------------------------------------------------------- inpainting (SD1.5)

def _all_outputs(comfy, name, **inputs):
    node = comfy.NODE_CLASS_MAPPINGS[name]()
    with torch.inference_mode():
        return getattr(node, node.FUNCTION)(**inputs)


def inpainting_inputs(comfy, family, how):
    """(positive, negative, edit, latent) for the inpainting UNet: through ComfyUI's
    InpaintModelConditioning (conds with concat_latent_image / concat_mask, a latent with a
    noise_mask), or plain prompts and Set Latent Noise Mask."""
    pixels, mask, vae = family.extra["pixels"], family.extra["mask"], family.extra["vae"]
    if how == "InpaintModelConditioning":
        positive, negative, latent = _all_outputs(comfy, "InpaintModelConditioning", positive=family.positive,
                                                  negative=family.negative, vae=vae, pixels=pixels, mask=mask,
                                                  noise_mask=True)
        edit = _all_outputs(comfy, "InpaintModelConditioning", positive=family.edit, negative=family.negative,
                            vae=vae, pixels=pixels, mask=mask, noise_mask=True)[0]
        assert "concat_latent_image" in positive[0][1] and "concat_mask" in edit[0][1]
        return positive, negative, edit, latent
    latent = run_node(comfy, "SetLatentNoiseMask", samples=family.latent, mask=mask)
    return family.positive, family.negative, family.edit, latent


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("how", ["InpaintModelConditioning", "SetLatentNoiseMask"])
def test_inpainting_round_trip_and_masked_edit(comfy, families, figures, how, method):
    from comfy.sampler_helpers import prepare_mask

    family = families("sd15_inpaint")
    positive, negative, edit, latent = inpainting_inputs(comfy, family, how)
    original = latent["samples"]
    runs = Runs(comfy, family, method, WIDGET_STEPS["sd15_inpaint"], negative=negative)

    inverted, invert_calls = runs.invert(positive, latent)
    steps = len(inverted["exact_inversion"]["sigmas"]) - 1
    assert "noise_mask" in inverted
    back, sample_calls = runs.sample(positive, inverted)
    samples_error = relative_error(back["samples"], original)
    float64_error = relative_error(float64_result(back), original)
    edited, edit_calls = runs.sample(edit, inverted)

    # the mask as the pack applies it, in latent space: 0 outside, 1 inside, soft at the rim
    mask = prepare_mask(latent["noise_mask"], original.shape, "cpu").expand_as(original)
    outside, inside = mask == 0, mask == 1
    assert outside.any() and inside.any()
    outside_identical = torch.equal(edited["samples"][outside], original[outside])
    inside_change = relative_error(edited["samples"][inside], back["samples"][inside])

    figures.setdefault("inpainting", {})[f"{how} {method}"] = {
        "steps": steps, "samples_error": samples_error, "float64_error": float64_error,
        "edit_change_inside": inside_change, "outside_bit_identical": outside_identical,
        "invert_calls": invert_calls, "sample_calls": sample_calls, "cfg": family.cfg}
    record_row(f"sd15_inpaint {how} {method} (edit: inside the mask)", family, steps, samples_error,
               float64_error, inside_change, invert_calls, sample_calls)
    print(f"\n[inpainting] {how} {method} steps={steps}: samples {samples_error:.2e}  float64 "
          f"{float64_error:.2e}  edit inside {inside_change:.3g}  outside identical {outside_identical}  "
          f"calls {invert_calls}/{sample_calls}/{edit_calls}")

    assert steps == REAL_STEPS
    assert samples_error == 0.0 and float64_error <= FLOAT64_BOUND
    assert outside_identical
    assert torch.equal(back["samples"][outside], original[outside])
    assert inside_change > INPAINT_EDIT_MIN_OF.get(method, INPAINT_EDIT_MIN)
    check_calls(method, steps, invert_calls, sample_calls, edit_calls)
