"""README's node tables, made from the node definitions themselves (INPUT_TYPES, RETURN_TYPES,
display names), so that they cannot drift: tests/test_node_table.py holds README equal to
what this renders, and `python -m harness.node_table` (in ComfyUI's venv) rewrites README's
tables between their markers."""

import os
import re

from .comfy import REPO

README = os.path.join(REPO, "README.md")
BEGIN, END = "<!-- node table: {} -->", "<!-- end of node table: {} -->"
CATEGORY = "sampling/exact inversion"


def _input(name, spec):
    kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
    if isinstance(kind, list):  # a combo: its default; one without (a file list) varies by machine
        return f"{name}={options['default']}" if "default" in options else f"{name} (one of a list)"
    if kind in ("INT", "FLOAT", "BOOLEAN", "STRING") and "default" in options:
        default = options["default"]
        text = str(default).lower() if isinstance(default, bool) else str(default)
        at_least = f" (at least {options['min']})" if name == "steps" and options.get("min", 1) > 1 else ""
        return f"{name}={text}{at_least}"
    return name


def _row(node_id, cls, display):
    types = cls.INPUT_TYPES()
    inputs = [_input(n, s) for n, s in types.get("required", {}).items()]
    inputs += [f"{_input(n, s)} (optional)" for n, s in types.get("optional", {}).items()]
    outputs = " + ".join(cls.RETURN_TYPES) if cls.RETURN_TYPES else "(an output node)"
    return f"| **{display}** (`{node_id}`) | {', '.join(inputs) or '(none)'} | {outputs} |"


def render(mappings, display_names):
    """{"simple": table, "advanced": table} of the pack's nodes, in mapping order."""
    tables = {}
    for section, category in (("simple", CATEGORY), ("advanced", CATEGORY + "/advanced")):
        rows = [_row(node_id, cls, display_names[node_id]) for node_id, cls in mappings.items()
                if cls.CATEGORY == category]
        tables[section] = "\n".join(["| node | inputs (defaults) | output |", "|---|---|---|", *rows])
    return tables


def sections(text):
    """{section: table} as README holds them between the markers."""
    found = {}
    for section in ("simple", "advanced"):
        match = re.search(re.escape(BEGIN.format(section)) + r"\n(.*?)\n" + re.escape(END.format(section)), text, re.S)
        found[section] = match.group(1) if match else None
    return found


def rewritten(text, tables):
    for section, table in tables.items():
        pattern = re.escape(BEGIN.format(section)) + r"\n.*?\n" + re.escape(END.format(section))
        text = re.sub(pattern, lambda _: f"{BEGIN.format(section)}\n{table}\n{END.format(section)}", text, flags=re.S)
    return text


def main():
    import tempfile

    from .comfy import pack_module, start_with_tiny_checkpoint

    start_with_tiny_checkpoint(tempfile.mkdtemp(prefix="node_table_"))
    nodes = pack_module("nodes")
    with open(README) as f:
        text = f.read()
    with open(README, "w") as f:
        f.write(rewritten(text, render(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS)))
    print(f"rewrote the node tables in {README}")


if __name__ == "__main__":
    main()
