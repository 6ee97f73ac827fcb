"""The nodes as ComfyUI's UI shows them: a help page per node (web/docs/<NodeId>.md, what
harness.node_docs renders from the loaded pack's definitions), served from the pack's
WEB_DIRECTORY, and the search aliases on every node."""

import os

from harness import node_docs
from harness.comfy import PACK_NAME, REPO, pack_module

ALIASES = ["inversion", "unsampler", "invert noise", "edict", "bdia", "belm", "reconstruct", "exact"]


def test_help_pages_are_the_node_definitions(comfy):
    nodes = pack_module("nodes")
    rendered = node_docs.render(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS,
                                pack_module("edict_core.spec").SPECS)
    on_disk = node_docs.pages_on_disk()
    assert sorted(on_disk) == sorted(nodes.NODE_CLASS_MAPPINGS), "run `python -m harness.node_docs` in the venv"
    for node_id, page in rendered.items():
        assert on_disk[node_id] == page, f"web/docs/{node_id}.md is stale: run `python -m harness.node_docs`"


def test_every_page_says_what_the_node_takes_and_gives_and_how_to_use_it(comfy):
    nodes = pack_module("nodes")
    specs = pack_module("edict_core.spec").SPECS
    pages = node_docs.pages_on_disk()
    for node_id, cls in nodes.NODE_CLASS_MAPPINGS.items():
        page = pages[node_id]
        assert page.startswith(f"# {nodes.NODE_DISPLAY_NAME_MAPPINGS[node_id]}\n")
        for section in ("## Inputs", "## Outputs", "## Recipe\n\n1. ", "## Pitfalls\n\n- "):
            assert section in page, (node_id, section)
        for name, _, _ in node_docs.inputs(cls):
            assert f"- **{name}** (" in page, (node_id, name)
        for kind in cls.RETURN_TYPES:
            assert f"**{kind}**" in page or f"({kind})" in page, (node_id, kind)
    for spec in specs.values():
        for role in ("Invert", "Sample"):
            page = pages[spec.node_id(role)]
            assert "the same cfg and the same conditioning" in page
            # which method when: every method named, with what it costs
            assert all(other.about in page for other in specs.values())


def test_comfyui_serves_the_help_pages_from_the_web_directory(comfy):
    # ComfyUI's loader registered WEB_DIRECTORY under the pack's folder name, which the
    # frontend takes from the node's python_module (custom_nodes.<pack>).
    assert os.path.realpath(comfy.EXTENSION_WEB_DIRS[PACK_NAME]) == os.path.join(REPO, "web")


def test_every_node_has_the_search_aliases(comfy):
    for node_id, cls in pack_module("nodes").NODE_CLASS_MAPPINGS.items():
        # a node may add its own (the attention node: "masactrl", ...), after the pack's
        aliases = list(getattr(cls, "SEARCH_ALIASES", []))
        assert aliases[:len(ALIASES)] == ALIASES, (
            f"{node_id}: set SEARCH_ALIASES = SEARCH_ALIASES (nodes/exact_inversion.py)")
