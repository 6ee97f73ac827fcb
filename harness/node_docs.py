"""The nodes' help pages and the workflows' registry stamps, made from the pack itself so that
they cannot drift:

- web/docs/<NodeId>.md for every node in NODE_CLASS_MAPPINGS: what the node does
  (DESCRIPTION), each input (type, default, range, tooltip) and output (type, tooltip) from
  INPUT_TYPES / RETURN_TYPES / OUTPUT_TOOLTIPS, a recipe and the pitfalls. ComfyUI's frontend
  shows the page in its node help panel (WEB_DIRECTORY in __init__.py serves web/ at
  /extensions/<pack>/; the frontend asks for docs/<NodeId>/<locale>.md, then docs/<NodeId>.md).
- the registry properties on every pack node of example_workflows/*.json: "cnr_id" (the
  pyproject name) and "ver" (its version), as the frontend writes them for a registry pack, so
  the Manager can offer to install the pack to whoever opens a shared workflow without it.

The hand-written parts (recipes, pitfalls) are the texts below: per role for the method nodes
(an Invert, Sample and Method node per spec in edict_core.spec.SPECS, worded from the spec, so
a new method gets its pages from its spec alone), per node id for the others, and a generic
page for a node neither covers. tests/test_node_docs.py holds the files equal to what this
renders; `python -m harness.node_docs` (in ComfyUI's venv) rewrites them.
"""

import json
import os
import tomllib

from .comfy import REPO

DOCS_DIR = os.path.join(REPO, "web", "docs")
WORKFLOWS_DIR = os.path.join(REPO, "example_workflows")
PYPROJECT = os.path.join(REPO, "pyproject.toml")
README_URL = "https://github.com/exact-inversion/comfyui-exact-inversion#readme"
GENERATED = ("<!-- Made by `python -m harness.node_docs` from the node definition; edit the texts in "
             "harness/node_docs.py, not this file. -->")

# Where an input of a type usually comes from, for the generic recipe of a node no text covers.
SOURCES = {
    "MODEL": "Load Checkpoint's MODEL", "CLIP": "Load Checkpoint's CLIP", "VAE": "Load Checkpoint's VAE",
    "CONDITIONING": "a CLIP Text Encode", "LATENT": "VAE Encode, or an Invert or Sample node of this pack",
    "IMAGE": "Load Image", "MASK": "a mask node", "GUIDER": "CFGGuider (or BasicGuider)",
    "SIGMAS": "BasicScheduler", "NOISE": "RandomNoise", "SAMPLER": "KSamplerSelect or Exact Sampler",
    "EXACT_METHOD": "a Method node (EDICT Method, BDIA Method, ...)",
}


# --- reading the node definitions -----------------------------------------------------------

def _number(value):
    return str(value).lower() if isinstance(value, bool) else f"{value:g}" if isinstance(value, float) else str(value)


def _input_line(name, spec, optional):
    kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
    facts = []
    if isinstance(kind, list):
        # A combo's choices: ComfyUI's lists (schedulers) differ by version and a file list by
        # machine, so only the default is written; the tooltip says what the choices mean.
        facts.append("a choice")
        if "default" in options:
            facts.append(f"default `{options['default']}`")
    else:
        facts.append(kind)
        if "default" in options:
            facts.append(f"default `{_number(options['default'])}`")
        if kind in ("INT", "FLOAT") and "min" in options and "max" in options:
            facts.append(f"{_number(options['min'])} to {_number(options['max'])}")
    if optional:
        facts.append("optional")
    tooltip = options.get("tooltip", "")
    return f"- **{name}** ({', '.join(facts)}){': ' + tooltip if tooltip else ''}"


def inputs(cls):
    """[(name, spec, optional)] of a node class, required first."""
    types = cls.INPUT_TYPES()
    return ([(n, s, False) for n, s in types.get("required", {}).items()]
            + [(n, s, True) for n, s in types.get("optional", {}).items()])


def _outputs(cls):
    tooltips = getattr(cls, "OUTPUT_TOOLTIPS", ()) or ()
    names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
    lines = []
    for i, kind in enumerate(cls.RETURN_TYPES):
        tip = tooltips[i] if i < len(tooltips) else ""
        label = f"**{names[i]}** ({kind})" if names[i] != kind else f"**{kind}**"
        lines.append(f"- {label}{': ' + tip if tip else ''}")
    return lines or ["- none: an output node (it writes a file and shows it in the UI)."]


# --- the hand-written texts -----------------------------------------------------------------

def _round_trip_pitfall():
    return ("**A round trip needs the same everything.** Invert and Sample must use the same model "
            "(same checkpoint, LoRAs and patches), the same cfg and the same conditioning: the photo's "
            "prompt as positive and the same negative. Then Sample regenerates the photo exactly; "
            "changing only the positive prompt on the Sample side is an edit. A different cfg, negative "
            "or model is not an error, but the result is no longer the photo (the Sample node says so "
            "for another model). Guidance-distilled models (Flux dev, Flux Fill): cfg 1 and FluxGuidance "
            "on the positive conditioning, with the same guidance on both sides.")


def _which_method(specs):
    lines = ["**Which method.** Each is exact; they differ in cost, order and what they need:"]
    for spec in specs.values():
        limit, why = spec.exact_steps({})
        exact = f" Exact up to about {limit} steps at its defaults ({why} per step)." if limit else ""
        lines.append(f"  - {spec.about}{exact} {spec.advice}".rstrip())
    lines.append(f"  - More in README's \"Choosing a method\" ({README_URL}).")
    return "\n".join(lines)


def _method_pitfalls(spec):
    pitfalls = []
    if spec.min_steps > 1:
        pitfalls.append(f"**At least {spec.min_steps} steps.** With fewer, sampling would hand the inverted "
                        "latent back without calling the model, and an edit would ignore its prompt.")
    limit, why = spec.exact_steps({})
    if limit:
        pitfalls.append(f"**Exact range.** Inversion grows rounding by {why} per step, so at the default "
                        f"settings the round trip stays exact up to about {limit} steps; past it the Invert "
                        "node warns (nothing is refused).")
    if spec.advice:
        pitfalls.append(f"**{spec.title}.** {spec.advice}")
    return pitfalls


def _simple_recipe(spec, role):
    mix = " → Latent Pair Mix" if spec.name == "edict" else ""
    example = f" (example workflow `{spec.name}_edit`)" if os.path.isfile(
        os.path.join(WORKFLOWS_DIR, f"{spec.name}_edit.json")) else ""
    steps = [
        f"Load Image → VAE Encode → **{spec.title} Invert** (`latent_image`), with Load Checkpoint's MODEL "
        "as `model`, a CLIP Text Encode of a prompt that describes the photo as `positive` and a negative "
        "prompt as `negative`.",
        f"Its LATENT → **{spec.title} Sample** (`latent_image`), with the same model, negative and cfg; as "
        "`positive` the photo's prompt to regenerate it exactly, or the edit's prompt (\"a dog on the beach\" "
        "→ \"a cat on the beach\") to edit it.",
        f"{spec.title} Sample{mix} → VAE Decode → Save Image{example}.",
    ]
    if role == "Invert":
        steps.append("To edit one photo many times, put Save Inverted Latent after the Invert node and "
                     "start later edits from Load Inverted Latent.")
    else:
        steps.append("From Empty Latent Image (denoise 1.0) it samples like KSampler: text-to-image, "
                     "seeded by `seed`.")
    return steps


def _method_node_recipe(spec):
    return [f"**{spec.title} Method** → `method` of both Exact Invert (Advanced) and Exact Sample "
            "(Advanced): one Method node for both, so the round trip uses the same settings.",
            "Or → `method` of Exact Sampler, for SamplerCustom / SamplerCustomAdvanced (text-to-image, img2img).",
            "Example workflow `advanced_edit` (with BDIA Method)."]


# Nodes that are not one method's: their recipe and pitfalls, by node id.
TEXTS = {
    "LatentPairMix": {
        "recipe": ["EDICT Sample → **Latent Pair Mix** → VAE Decode (example workflow `edict_edit`).",
                   "weight 0.5 averages EDICT's two branches x and y, as the paper's final mixing does; "
                   "a Rex pair's x and x_hat sit at one level too and mix the same way."],
        "pitfalls": ["**Pairs of one level only.** A plain latent, or a BDIA / O-BELM result (two "
                     "consecutive levels), is refused with a message; those need no mix.",
                     "**The output is a plain latent.** It no longer carries the pair, so an Invert node "
                     "cannot take it back exactly: invert EDICT Sample's own output instead."],
    },
    "SaveInvertedLatent": {
        "recipe": ["An Invert node → **Save Inverted Latent**; press Run once.",
                   "Later: Load Inverted Latent (press R to refresh its list) → the Sample node of the same "
                   "method, with the same model, to edit the photo without inverting it again."],
        "pitfalls": ["**Not Save Latent.** ComfyUI's Save Latent keeps only the noisy samples, which "
                     "cannot regenerate the photo; this node keeps the float64 pair, sigmas, settings and "
                     "model identity.",
                     "**Same model to load it with.** A file inverted with one checkpoint (or LoRA) is "
                     "exact only with that one; the Sample node says when the model differs."],
    },
    "LoadInvertedLatent": {
        "recipe": ["**Load Inverted Latent** → the Sample node of the method that inverted it (EDICT file → "
                   "EDICT Sample), with the same model, cfg and negative; the photo's prompt regenerates "
                   "it, another prompt edits it."],
        "pitfalls": ["**Only listed files.** It opens .inversion files in ComfyUI's input folder, or those "
                     "Save Inverted Latent wrote to the output folder (marked [output]); copy a file from "
                     "elsewhere into the input folder first.",
                     "**A damaged or edited file is refused**, with a message that says what is wrong."],
    },
    "ExactInvertAdvanced": {
        "recipe": ["Load Checkpoint → CFGGuider (model, the photo's prompt, negative, cfg) → `guider`.",
                   "BasicScheduler (or KarrasScheduler, a SplitSigmas tail) → `sigmas`; a Method node → "
                   "`method`; VAE Encode → `latent_image`.",
                   "Its LATENT → Exact Sample (Advanced) with another CFGGuider for the edit's prompt "
                   "(example workflow `advanced_edit`; `flux_guidance_edit` for Flux with BasicGuider)."],
        "pitfalls": ["**The same Method node and guider settings on both sides** for a round trip; an "
                     "edit is simply another guider (other prompts)."],
    },
    "ExactSampleAdvanced": {
        "recipe": ["Exact Invert (Advanced)'s LATENT → `latent_image`, a guider (the edit's prompt) → "
                   "`guider`, the same Method node → `method`; sigmas and noise stay unconnected: it "
                   "follows the inverted latent's own sigmas.",
                   "From a plain latent (Empty Latent Image): connect `sigmas` and `noise` (RandomNoise), "
                   "as SamplerCustomAdvanced takes them."],
        "pitfalls": ["**Plain latents need sigmas and noise**; an inverted latent ignores them."],
    },
    "ExactSamplerSelect": {
        "recipe": ["A Method node → **Exact Sampler** → `sampler` of SamplerCustom or SamplerCustomAdvanced, "
                   "for text-to-image or img2img. BDIA Method with gamma 0.5 suits 10-step text-to-image "
                   "(example workflow `bdia_text_to_image` does it with BDIA Sample)."],
        "pitfalls": ["**It generates; it does not invert.** For an exact edit of a photo use Exact Invert "
                     "(Advanced) and Exact Sample (Advanced)."],
    },
}


def _consumers(kind, mappings, display_names):
    """'Display Name' (`input`) of the pack's nodes with an input of type `kind`."""
    return [f"{display_names.get(other, other)} (`{name}`)" for other, other_cls in mappings.items()
            for name, spec, _ in inputs(other_cls) if spec[0] == kind]


def _texts(node_id, cls, specs, mappings, display_names):
    """(recipe steps, pitfalls) of a node."""
    for spec in specs.values():
        for role in ("Invert", "Sample"):
            if node_id == spec.node_id(role):
                return _simple_recipe(spec, role), ([_round_trip_pitfall()] + _method_pitfalls(spec)
                                                     + [_which_method(specs)])
        if node_id == spec.node_id("Method"):
            return _method_node_recipe(spec), _method_pitfalls(spec) + [_which_method(specs)]
    if node_id in TEXTS:
        text = TEXTS[node_id]
        general = [_round_trip_pitfall(), _which_method(specs)] if node_id.startswith("Exact") else []
        return text["recipe"], text["pitfalls"] + general
    # A node no text covers: where each input usually comes from, and the general pitfalls.
    recipe = [f"Connect `{name}` from {SOURCES[spec[0]]}." for name, spec, _ in inputs(cls)
              if isinstance(spec[0], str) and spec[0] in SOURCES]
    for kind in cls.RETURN_TYPES:
        consumers = _consumers(kind, mappings, display_names)
        if consumers:
            recipe.append(f"Its {kind} → {', '.join(consumers)}.")
    recipe.append(f"Find it in the node search, or under {cls.CATEGORY} in the node library.")
    return recipe, [_round_trip_pitfall(), _which_method(specs)]


# --- rendering ------------------------------------------------------------------------------

def render_page(node_id, cls, display_name, specs, mappings, display_names):
    recipe, pitfalls = _texts(node_id, cls, specs, mappings, display_names)
    lines = [f"# {display_name}", "", GENERATED, "",
             getattr(cls, "DESCRIPTION", "").strip() or f"A node of the exact-inversion pack ({cls.CATEGORY}).",
             "", f"Node id `{node_id}`, category *{cls.CATEGORY}*.", "", "## Inputs", ""]
    lines += [_input_line(n, s, o) for n, s, o in inputs(cls)] or ["- none"]
    lines += ["", "## Outputs", "", *_outputs(cls), "", "## Recipe", ""]
    lines += [f"{i}. {step}" for i, step in enumerate(recipe, 1)]
    lines += ["", "## Pitfalls", "", *[f"- {p}" for p in pitfalls], ""]
    return "\n".join(lines)


def render(mappings, display_names, specs):
    """{node_id: the Markdown of its help page}."""
    return {node_id: render_page(node_id, cls, display_names.get(node_id, node_id), specs, mappings, display_names)
            for node_id, cls in mappings.items()}


def pages_on_disk():
    """{node_id: text} of web/docs/*.md."""
    if not os.path.isdir(DOCS_DIR):
        return {}
    found = {}
    for name in sorted(os.listdir(DOCS_DIR)):
        if name.endswith(".md"):
            with open(os.path.join(DOCS_DIR, name), encoding="utf-8") as f:
                found[name[:-3]] = f.read()
    return found


# --- registry stamps on the workflows -------------------------------------------------------

def registry_id():
    """(name, version) of pyproject's [project]: the registry's node id and this version."""
    with open(PYPROJECT, "rb") as f:
        project = tomllib.load(f)["project"]
    return project["name"], project["version"]


def _graph_nodes(workflow):
    """Every node of a UI-format workflow, those inside subgraph definitions too."""
    yield from workflow.get("nodes", [])
    for subgraph in workflow.get("definitions", {}).get("subgraphs", []):
        yield from subgraph.get("nodes", [])


def pack_nodes(workflow, node_ids):
    return [node for node in _graph_nodes(workflow) if node.get("type") in node_ids]


def stamped(text, node_ids, name, version):
    """A UI-format workflow's text with "cnr_id" and "ver" on every pack node's properties."""
    workflow = json.loads(text)
    for node in pack_nodes(workflow, node_ids):
        node.setdefault("properties", {}).update({"cnr_id": name, "ver": version})
    return json.dumps(workflow, indent=2)


def workflow_files():
    return sorted(os.path.join(WORKFLOWS_DIR, f) for f in os.listdir(WORKFLOWS_DIR) if f.endswith(".json"))


# --- the command ----------------------------------------------------------------------------

def write(mappings, display_names, specs):
    """Rewrite web/docs/ (removing pages of nodes that are gone) and stamp the workflows."""
    os.makedirs(DOCS_DIR, exist_ok=True)
    pages = render(mappings, display_names, specs)
    for stale in set(pages_on_disk()) - set(pages):
        os.remove(os.path.join(DOCS_DIR, f"{stale}.md"))
    for node_id, page in pages.items():
        with open(os.path.join(DOCS_DIR, f"{node_id}.md"), "w", encoding="utf-8") as f:
            f.write(page)
    name, version = registry_id()
    for path in workflow_files():
        with open(path, encoding="utf-8") as f:
            text = f.read()
        new = stamped(text, set(mappings), name, version)
        if new != text:
            with open(path, "w", encoding="utf-8") as f:
                f.write(new)
    return pages


def main():
    import tempfile

    from .comfy import pack_module, start_with_tiny_checkpoint

    start_with_tiny_checkpoint(tempfile.mkdtemp(prefix="node_docs_"))
    nodes = pack_module("nodes")
    pages = write(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS, pack_module("edict_core.spec").SPECS)
    print(f"wrote {len(pages)} help pages to {DOCS_DIR} and stamped cnr_id/ver on the pack's nodes in "
          f"{WORKFLOWS_DIR}/*.json")


if __name__ == "__main__":
    main()
