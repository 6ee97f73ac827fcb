"""README's node tables are the node definitions: what harness.node_table renders from the
loaded pack's INPUT_TYPES, RETURN_TYPES and display names (defaults included)."""

from harness import node_table
from harness.comfy import pack_module


def test_readme_node_tables_equal_the_node_definitions(comfy):
    nodes = pack_module("nodes")
    rendered = node_table.render(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS)
    with open(node_table.README) as f:
        in_readme = node_table.sections(f.read())
    for section, table in rendered.items():
        assert in_readme[section] == table, (
            f"README's {section} node table is stale: run `python -m harness.node_table` in the venv")
    # every node of the pack is in one table
    listed = "\n".join(rendered.values())
    assert all(f"(`{node_id}`)" in listed for node_id in nodes.NODE_CLASS_MAPPINGS)
