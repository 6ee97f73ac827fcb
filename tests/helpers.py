"""What the in-process node tests share: the methods (from the pack's single spec), the nodes'
inputs on the tiny checkpoint, and invert / sample through the real nodes. (pytest puts
tests/ on sys.path.)"""

import json
import os

from edict_core.spec import SPECS
from harness.comfy import run_node

DEFAULT_STEPS = 4
# Every method of the spec, by node prefix ("EDICT", "BDIA", "OBELM"): a method added to the
# spec joins every test parametrized over METHODS with no test edited.
METHODS = [spec.node_prefix for spec in SPECS.values()]
SPEC_OF = {spec.node_prefix: spec for spec in SPECS.values()}
# The matrices' settings: each method's defaults, but Rex with its midpoint tableau, whose two
# stages take the same path as RK4's four at half the model calls (RK4, the default, runs in
# test_core_rex, the batch command, the bench smoke test and the rex_edit workflow).
METHOD_WIDGETS = {spec.node_prefix: dict(spec.defaults, **({"tableau": "midpoint"} if spec.name == "rex" else {}))
                  for spec in SPECS.values()}


def common(comfy, scene, positive="positive", steps=DEFAULT_STEPS, **overrides):
    """The inputs every Invert and Sample node takes, on the tiny checkpoint at cfg 7;
    `positive` names the scene's prompt."""
    inputs = dict(model=comfy.tiny["model"], positive=scene[positive], negative=scene["negative"],
                  steps=steps, cfg=7.0, scheduler="normal", denoise=0.8)
    inputs.update(overrides)
    return inputs


def invert(comfy, scene, method, latent=None, widgets=None, **overrides):
    """`method` (a node prefix of METHODS) Invert of `latent` (default: the scene's 2-image latent)."""
    return run_node(comfy, f"{method}Invert", latent_image=latent or scene["latent"],
                    **common(comfy, scene, **overrides), **(METHOD_WIDGETS[method] if widgets is None else widgets))


def sample(comfy, scene, method, latent, positive="positive", seed=0, widgets=None, **overrides):
    """`method` Sample of `latent` with the scene's prompt `positive` (an edit: "edit")."""
    return run_node(comfy, f"{method}Sample", latent_image=latent, seed=seed,
                    **common(comfy, scene, positive=positive, **overrides),
                    **(METHOD_WIDGETS[method] if widgets is None else widgets))


def read_json(path):
    """What an earlier, perhaps partial, run left in a figures file: {} where there is none or it is damaged."""
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError:
        return {}
