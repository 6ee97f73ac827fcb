"""Every example workflow in the real ComfyUI frontend (headless Chromium), the way a user
runs it: drop the file, pick a checkpoint, press Run, wait, look at the result. Screenshots
of the finished graphs go to tests/artifacts/."""

import os
import time

import pytest
from playwright.sync_api import sync_playwright

from harness.browser import GRAPH_PROBLEMS, SET_WIDGETS, drop_workflow, launch_chromium, open_frontend, run_button
from harness.comfy import CKPT_NAME, REPO
from harness.workflows import DEFAULT_CKPT, NAMES, ui_text

ARTIFACTS = os.path.join(REPO, "tests", "artifacts")
# Small enough for two CPU cores; the examples' own 50 steps are for real use.
SMALL_RUN = {"steps": 3, "width": 64, "height": 64}


@pytest.fixture(scope="module")
def page(server):
    os.makedirs(ARTIFACTS, exist_ok=True)
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield open_frontend(browser, server.url)
        browser.close()


def drop_with_tiny_checkpoint(page, name):
    """Drop the example with the tiny checkpoint chosen, as a user picks their own model."""
    drop_workflow(page, name, ui_text(name).replace(f'"{DEFAULT_CKPT}"', f'"{CKPT_NAME}"'))


def press_run(page):
    """Click Run; returns the server's answer to the prompt the frontend posted."""
    with page.expect_response(lambda r: r.url.endswith("/api/prompt") and r.request.method == "POST") as answer:
        run_button(page).click()
    return answer.value


def wait_for_history(server, prompt_id, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        entry = server.get(f"/history/{prompt_id}").get(prompt_id)
        if entry and entry["status"].get("completed") is not None:
            return entry
        time.sleep(0.5)
    raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s:\n{server.log()}")


def screenshot(page, name):
    page.mouse.click(960, 1060)  # focus the canvas (an empty spot) for the Fit View key
    page.keyboard.press(".")
    time.sleep(1)  # let the canvas draw the fitted graph and the result images
    page.screenshot(path=os.path.join(ARTIFACTS, f"{name}.png"))


@pytest.mark.parametrize("name", NAMES)
def test_example_runs_from_the_ui(server, page, name):
    drop_with_tiny_checkpoint(page, name)
    assert page.evaluate(GRAPH_PROBLEMS) == []
    page.evaluate(SET_WIDGETS, SMALL_RUN)

    answer = press_run(page)
    assert answer.ok, f"the server rejected the prompt: {answer.text()}"
    entry = wait_for_history(server, answer.json()["prompt_id"])
    assert entry["status"]["status_str"] == "success", entry["status"]["messages"]

    saved = [image for output in entry["outputs"].values() for image in output.get("images", [])
             if image["type"] == "output"]
    expected = 3 if name == "round_trip_check" else 1  # EDICT, BDIA and DDIM reconstructions
    assert len(saved) == expected
    for image in saved:
        assert os.path.getsize(os.path.join(server.base, "output", image["subfolder"], image["filename"])) > 0
    screenshot(page, name)


def test_a_node_error_reaches_the_ui_as_a_readable_message(server, page):
    drop_with_tiny_checkpoint(page, "edict_edit")
    page.evaluate(SET_WIDGETS, SMALL_RUN)
    # Rewire like a user who skips the pair: VAE Encode's plain latent into Latent Pair Mix.
    page.evaluate("""() => {
      const encode = app.graph.nodes.find(n => n.type === 'VAEEncode');
      const mix = app.graph.nodes.find(n => n.type === 'LatentPairMix');
      encode.connect(0, mix, 0);
    }""")
    answer = press_run(page)
    assert answer.ok
    assert wait_for_history(server, answer.json()["prompt_id"])["status"]["status_str"] == "error"
    message = page.get_by_text("Latent Pair Mix: input 'latent': it is a plain latent with no EDICT pair.")
    message.first.wait_for(timeout=20_000)
    assert "Connect the output of EDICT Sample or EDICT Invert." in page.content()
    page.screenshot(path=os.path.join(ARTIFACTS, "node_error.png"))


NOTICE_ON = """([type, text]) => app.graph.nodes.some(n => n.type === type && (n.widgets ?? []).some(
  w => w.name === '$$node-text-preview' && String(w.value).includes(text)))"""


def test_a_warning_shows_on_the_node_that_raised_it(server, page):
    """O-BELM's drift warning (normal at denoise 0.45) appears on O-BELM Invert in the UI, as
    the text preview the frontend draws for a node's progress text; the run still succeeds."""
    # An earlier test may have left its error dialog open: close it, as a user would.
    while page.locator(".p-dialog-mask").count():
        page.keyboard.press("Escape")
        page.locator(".p-dialog-mask").first.wait_for(state="detached", timeout=10_000)
    drop_with_tiny_checkpoint(page, "obelm_edit")
    # denoise 0.45: not a prompt an earlier test ran, whose nodes ComfyUI's cache would not rerun
    page.evaluate(SET_WIDGETS, {"steps": 4, "width": 64, "height": 64, "scheduler": "normal", "denoise": 0.45})
    answer = press_run(page)
    assert answer.ok
    assert wait_for_history(server, answer.json()["prompt_id"])["status"]["status_str"] == "success"
    page.wait_for_function(NOTICE_ON, arg=["OBELMInvert", "barely shrink toward the clean end"], timeout=20_000)
    assert not page.evaluate(NOTICE_ON, ["OBELMSample", "barely shrink"])
    screenshot(page, "node_notice")
