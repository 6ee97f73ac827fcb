"""The template browser's thumbnails, example_workflows/<name>.jpg, from a real run: a real
ComfyUI server (harness.server) and its real frontend in Chromium (harness.browser). Each
workflow is dropped on the canvas; those for SD1.5 run on the tests' tiny checkpoint (3 steps,
64 px, as tests/test_browser.py runs them), so their previews show; the others (models the
tests lack) are only loaded. The canvas, fitted to the graph, is the thumbnail.

Run it again when a workflow changes, in ComfyUI's venv:
    python scripts/thumbnails.py [name ...]      (default: every example_workflows/*.json)
"""

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness.browser import SET_WIDGETS, drop_workflow, launch_chromium, open_frontend, run_button  # noqa: E402
from harness.comfy import CKPT_NAME  # noqa: E402
from harness.workflows import DEFAULT_CKPT, NAMES, UI_DIR, ui_text  # noqa: E402

SMALL_RUN = {"steps": 3, "width": 64, "height": 64}
WIDTH = 640  # px; the template cards show about 300


def thumbnail(server, page, name, path):
    from PIL import Image

    drop_workflow(page, name, ui_text(name).replace(f'"{DEFAULT_CKPT}"', f'"{CKPT_NAME}"'))
    if name in NAMES:
        page.evaluate(SET_WIDGETS, SMALL_RUN)
        with page.expect_response(lambda r: r.url.endswith("/api/prompt") and r.request.method == "POST") as answer:
            run_button(page).click()
        prompt_id = answer.value.json()["prompt_id"]
        deadline = time.time() + 300
        while not server.get(f"/history/{prompt_id}").get(prompt_id, {}).get("status", {}).get("completed"):
            if time.time() > deadline:
                raise TimeoutError(f"{name} did not finish:\n{server.log()}")
            time.sleep(0.5)
    for close in page.locator(".p-toast-close-button").all():  # "model missing" and other toasts
        close.click()
    page.mouse.click(960, 1060)  # focus the canvas (an empty spot) for the Fit View key
    page.keyboard.press(".")
    time.sleep(1)  # let the canvas draw the fitted graph and the result images
    shot = path + ".png"
    page.locator("#graph-canvas").screenshot(path=shot)
    with Image.open(shot) as image:
        image = image.convert("RGB")
        image.resize((WIDTH, round(image.height * WIDTH / image.width)), Image.Resampling.LANCZOS).save(
            path, quality=85, optimize=True)
    os.remove(shot)


def main(names):
    from playwright.sync_api import sync_playwright

    from harness.server import ComfyServer, prepare_base

    names = names or sorted(f[:-5] for f in os.listdir(UI_DIR) if f.endswith(".json"))
    server = ComfyServer(prepare_base(tempfile.mkdtemp(prefix="thumbnails_"))).start()
    try:
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            page = open_frontend(browser, server.url)
            for name in names:
                path = os.path.join(UI_DIR, f"{name}.jpg")
                thumbnail(server, page, name, path)
                print(f"wrote {path} ({os.path.getsize(path)} bytes)")
            browser.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
