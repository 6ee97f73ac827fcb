"""The example workflows as a user meets them: listed by the template browser, carrying the
recommended settings, and with API-format copies identical to what the real frontend makes
of the UI files (app.graphToPrompt, as the frontend queues or exports them)."""

import json
import os
import urllib.request

import pytest
from playwright.sync_api import sync_playwright

from edict_core.spec import SPECS
from harness.browser import drop_workflow, graph_to_prompt, launch_chromium, open_frontend
from harness.comfy import PACK_NAME
from harness.workflows import (ALL_NAMES, DEFAULT_CKPT, FLUX_MODELS, NAMES, OTHER_MODEL_NAMES, UI_DIR, api_prompt,
                               nodes_of_type, ui_text)


@pytest.fixture(scope="module")
def page(server):
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield open_frontend(browser, server.url)
        browser.close()


def test_template_route_lists_every_example_and_serves_it(server):
    listed = server.get("/workflow_templates")[PACK_NAME]
    assert sorted(listed) == sorted(ALL_NAMES)  # the api/ copies are not listed as templates
    for name in ALL_NAMES:
        with urllib.request.urlopen(f"{server.url}/api/workflow_templates/{PACK_NAME}/{name}.json") as response:
            assert json.loads(response.read()) == json.loads(ui_text(name))


def test_template_browser_shows_the_examples_and_opens_one(page):
    page.get_by_role("button", name="Templates").click()
    page.get_by_text(PACK_NAME, exact=True).click()
    for name in ALL_NAMES:
        page.get_by_text(name, exact=True).wait_for(timeout=10_000)
    page.get_by_text("edict_edit", exact=True).click()
    page.wait_for_function("app.graph.nodes.some(n => n.type === 'EDICTSample')", timeout=20_000)
    assert graph_to_prompt(page) == api_prompt("edict_edit")


# Every example, also those for models this server lacks: loading and exporting needs no model.
@pytest.mark.parametrize("name", ALL_NAMES)
def test_api_copy_is_what_the_frontend_makes_of_the_ui_file(page, name):
    drop_workflow(page, name, ui_text(name))
    assert graph_to_prompt(page) == api_prompt(name), (
        f"example_workflows/api/{name}.json is stale: export the UI file again with 'Export (API)'")


def test_examples_carry_the_recommended_settings():
    assert sorted(f[:-5] for f in os.listdir(UI_DIR) if f.endswith(".json")) == sorted(ALL_NAMES)
    for name in NAMES:
        prompt = api_prompt(name)
        assert [prompt[i]["inputs"]["ckpt_name"] for i in nodes_of_type(prompt, "CheckpointLoaderSimple")] == [DEFAULT_CKPT]
        assert DEFAULT_CKPT in note_text(name)
        for spec in SPECS.values():
            simple_nodes = nodes_of_type(prompt, spec.node_id("Invert")) + nodes_of_type(prompt, spec.node_id("Sample"))
            for node_id in simple_nodes:
                inputs = prompt[node_id]["inputs"]
                if name == "bdia_text_to_image":
                    assert (inputs["steps"], inputs["denoise"], inputs["gamma"]) == (10, 1.0, 0.5)
                    continue
                assert (inputs["steps"], inputs["cfg"], inputs["scheduler"]) == (spec.steps, 3.0, spec.scheduler)
                assert 0.6 <= inputs["denoise"] <= 0.9
                assert inputs.get("mix_weight", 0.93) == 0.93
                assert 0.92 <= inputs.get("gamma", 0.94) <= 1.0
    # The examples for other models each have their own recommended settings.
    assert sorted(OTHER_MODEL_CHECKS) == sorted(OTHER_MODEL_NAMES)
    for name, check in OTHER_MODEL_CHECKS.items():
        check(api_prompt(name), note_text(name))


def note_text(name):
    notes = [n for n in json.loads(ui_text(name))["nodes"] if n["type"] == "Note"]
    assert len(notes) == 1, f"{name}: one Note with the recommended settings"
    return notes[0]["widgets_values"][0]


def source(prompt, node_id, input_name):
    """The node an input of `node_id` is connected to, and that node."""
    origin = prompt[node_id]["inputs"][input_name][0]
    return origin, prompt[origin]


def check_flux_guidance_edit(prompt, note):
    """flux_guidance_edit (a guidance-distilled model): BasicGuider, so cfg 1 and one model call
    per step, over FluxGuidance of equal guidance on the inversion and on the edit (a round
    trip needs the same); the loaders load the files the Note says where to put."""
    assert not nodes_of_type(prompt, "CFGGuider") and not nodes_of_type(prompt, "CheckpointLoaderSimple")
    (invert,), (sample,) = nodes_of_type(prompt, "ExactInvertAdvanced"), nodes_of_type(prompt, "ExactSampleAdvanced")
    assert source(prompt, sample, "latent_image")[0] == invert

    guidance, prompts, models = [], [], set()
    for node_id in (invert, sample):
        guider_id, guider = source(prompt, node_id, "guider")
        assert guider["class_type"] == "BasicGuider"
        models.add(tuple(guider["inputs"]["model"]))
        flux_guidance_id, flux_guidance = source(prompt, guider_id, "conditioning")
        assert flux_guidance["class_type"] == "FluxGuidance"
        guidance.append(flux_guidance["inputs"]["guidance"])
        _, text = source(prompt, flux_guidance_id, "conditioning")
        assert text["class_type"] == "CLIPTextEncode"
        prompts.append(text["inputs"]["text"])
    assert guidance[0] == guidance[1] == 3.5  # ComfyUI's own Flux examples use 3.5
    assert prompts[0] != prompts[1]  # the photo's prompt, then the edit's
    assert len(models) == 1 and prompt[next(iter(models))[0]]["class_type"] == "UNETLoader"

    _, sigmas = source(prompt, invert, "sigmas")
    assert sigmas["class_type"] == "BasicScheduler" and tuple(sigmas["inputs"]["model"]) in models
    assert (sigmas["inputs"]["scheduler"], sigmas["inputs"]["steps"]) == ("simple", 20)
    assert 0.6 <= sigmas["inputs"]["denoise"] <= 0.9
    _, method = source(prompt, invert, "method")
    assert source(prompt, sample, "method") == source(prompt, invert, "method")
    # BDIA: along simple's steps on Flux, which grow toward the clean end, O-BELM's edits drift.
    assert method["class_type"] == SPECS["bdia"].node_id("Method") and 0.92 <= method["inputs"]["gamma"] <= 1.0

    for (class_type, widget), filename in FLUX_MODELS.items():
        assert [prompt[i]["inputs"][widget] for i in nodes_of_type(prompt, class_type)] == [filename]
        assert filename in note
    assert [prompt[i]["inputs"]["type"] for i in nodes_of_type(prompt, "DualCLIPLoader")] == ["flux"]
    for folder in ("models/diffusion_models", "models/text_encoders", "models/vae"):
        assert folder in note
    assert "cfg is 1" in note and "FluxGuidance" in note and "same guidance" in note


OTHER_MODEL_CHECKS = {"flux_guidance_edit": check_flux_guidance_edit}
