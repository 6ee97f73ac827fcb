"""The example workflows as a user meets them: listed by the template browser, carrying the
recommended settings, and with API-format copies identical to what the real frontend makes
of the UI files (app.graphToPrompt, as the frontend queues or exports them)."""

import json
import os
import urllib.request

import pytest
from playwright.sync_api import sync_playwright

from harness.browser import drop_workflow, graph_to_prompt, launch_chromium, open_frontend
from harness.comfy import PACK_NAME
from harness.workflows import DEFAULT_CKPT, NAMES, UI_DIR, api_prompt, nodes_of_type, ui_text


@pytest.fixture(scope="module")
def page(server):
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield open_frontend(browser, server.url)
        browser.close()


def test_template_route_lists_every_example_and_serves_it(server):
    listed = server.get("/workflow_templates")[PACK_NAME]
    assert sorted(listed) == sorted(NAMES)  # the api/ copies are not listed as templates
    for name in NAMES:
        with urllib.request.urlopen(f"{server.url}/api/workflow_templates/{PACK_NAME}/{name}.json") as response:
            assert json.loads(response.read()) == json.loads(ui_text(name))


def test_template_browser_shows_the_examples_and_opens_one(page):
    page.get_by_role("button", name="Templates").click()
    page.get_by_text(PACK_NAME, exact=True).click()
    for name in NAMES:
        page.get_by_text(name, exact=True).wait_for(timeout=10_000)
    page.get_by_text("edict_edit", exact=True).click()
    page.wait_for_function("app.graph.nodes.some(n => n.type === 'EDICTSample')", timeout=20_000)
    assert graph_to_prompt(page) == api_prompt("edict_edit")


@pytest.mark.parametrize("name", NAMES)
def test_api_copy_is_what_the_frontend_makes_of_the_ui_file(page, name):
    drop_workflow(page, name, ui_text(name))
    assert graph_to_prompt(page) == api_prompt(name), (
        f"example_workflows/api/{name}.json is stale: export the UI file again with 'Export (API)'")


def test_examples_carry_the_recommended_settings():
    assert sorted(f[:-5] for f in os.listdir(UI_DIR) if f.endswith(".json")) == sorted(NAMES)
    for name in NAMES:
        prompt = api_prompt(name)
        assert [prompt[i]["inputs"]["ckpt_name"] for i in nodes_of_type(prompt, "CheckpointLoaderSimple")] == [DEFAULT_CKPT]
        notes = [n for n in json.loads(ui_text(name))["nodes"] if n["type"] == "Note"]
        assert len(notes) == 1 and DEFAULT_CKPT in notes[0]["widgets_values"][0]
        for class_type in ("EDICTInvert", "EDICTSample", "BDIAInvert", "BDIASample"):
            for node_id in nodes_of_type(prompt, class_type):
                inputs = prompt[node_id]["inputs"]
                if name == "bdia_text_to_image":
                    assert (inputs["steps"], inputs["denoise"], inputs["gamma"]) == (10, 1.0, 0.5)
                    continue
                assert (inputs["steps"], inputs["cfg"]) == (50, 3.0)
                assert 0.6 <= inputs["denoise"] <= 0.9
                assert inputs.get("mix_weight", 0.93) == 0.93
                assert 0.92 <= inputs.get("gamma", 0.94) <= 1.0
