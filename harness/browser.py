"""The real ComfyUI frontend in Debian's headless Chromium, driven by playwright (which
downloads no browser of its own here)."""

import json
import os

CHROMIUM = "/usr/bin/chromium"
# No internet here: without these, Chromium's background services flood refused connections.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# A returning user's settings: no first-run template dialog, no minimap over the graph, and
# node text drawn at every zoom, so screenshots of a whole workflow stay readable.
USER_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False,
                 "LiteGraph.Canvas.MinFontSizeForLOD": 0}

# The frontend's own drop handler (a listener on `document`) gets a real File, as from a desktop drag.
DROP_FILE = """([name, text]) => {
  const transfer = new DataTransfer();
  transfer.items.add(new File([text], name, {type: 'application/json'}));
  document.dispatchEvent(new DragEvent('drop', {dataTransfer: transfer, bubbles: true, cancelable: true}));
}"""

# Node types the frontend does not know, and widget values outside what the widget offers.
GRAPH_PROBLEMS = """() => {
  const problems = [];
  for (const node of app.graph.nodes) {
    if (!LiteGraph.registered_node_types[node.type]) problems.push(`missing node type ${node.type}`);
    for (const widget of node.widgets ?? []) {
      const options = widget.options ?? {};
      if (widget.type === 'combo') {
        const values = typeof options.values === 'function' ? options.values() : options.values;
        if (!values.includes(widget.value)) problems.push(`${node.type}.${widget.name}: ${widget.value} not in the list`);
      } else if (widget.type === 'number' && (widget.value < options.min || widget.value > options.max)) {
        problems.push(`${node.type}.${widget.name}: ${widget.value} outside [${options.min}, ${options.max}]`);
      }
    }
  }
  return problems;
}"""

# What a user would type into the widgets to run an example on a small machine.
SET_WIDGETS = """(values) => {
  for (const node of app.graph.nodes)
    for (const widget of node.widgets ?? [])
      if (widget.name in values) widget.value = values[widget.name];
}"""


def write_user_settings(base):
    folder = os.path.join(base, "user", "default")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "comfy.settings.json"), "w") as f:
        json.dump(USER_SETTINGS, f)


def launch_chromium(playwright):
    if not os.access(CHROMIUM, os.X_OK):
        raise RuntimeError(f"no {CHROMIUM}: the browser test drives Debian's Chromium. Install it with "
                           "`apt-get install chromium` (scripts/setup.sh does this when run as root).")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def open_frontend(browser, url):
    page = browser.new_page(viewport={"width": 1920, "height": 1080})
    page.add_init_script("localStorage.setItem('vueNodesBannerDismissed', 'true')")
    page.goto(url)
    page.wait_for_function("window.app?.graph && window.LiteGraph?.registered_node_types", timeout=90_000)
    wait_until_idle(page)
    return page


def wait_until_idle(page):
    """Wait for the page-blocking spinner the frontend shows while it starts or loads a file
    (a drop made during the start-up spinner leaves it stuck)."""
    page.locator(".p-blockui-mask").wait_for(state="detached", timeout=30_000)


def drop_workflow(page, name, text):
    """Load a UI-format workflow the way dropping its file on the canvas does."""
    expected_nodes = len(json.loads(text)["nodes"])
    page.evaluate(DROP_FILE, [f"{name}.json", text])
    page.wait_for_function(f"app.graph.nodes.length === {expected_nodes}", timeout=30_000)
    wait_until_idle(page)


def graph_to_prompt(page):
    """The API-format prompt the frontend would queue for the graph on the canvas."""
    return page.evaluate("async () => (await app.graphToPrompt()).output")


def run_button(page):
    """The Run button (queues the graph). Frontend 1.4x (ComfyUI 0.33) puts a queue-mode
    dropdown beside it whose accessible name is also "Run"; that one opens a menu, so the
    button that does not is the Run button, on the old frontend (1.32, ComfyUI 0.3.75) too."""
    buttons = page.get_by_role("button", name="Run", exact=True)
    return buttons if buttons.count() == 1 else buttons.and_(page.locator(":not([aria-haspopup])"))
