"""What the in-process node tests share: the nodes' inputs on the tiny checkpoint, and
invert / sample through the real nodes. (pytest puts tests/ on sys.path.)"""

from harness.comfy import run_node

DEFAULT_STEPS = 4
METHOD_WIDGETS = {"EDICT": {"mix_weight": 0.93, "leapfrog": True}, "BDIA": {"gamma": 0.94}, "OBELM": {}}


def common(comfy, scene, positive="positive", steps=DEFAULT_STEPS, **overrides):
    """The inputs every Invert and Sample node takes, on the tiny checkpoint at cfg 7;
    `positive` names the scene's prompt."""
    inputs = dict(model=comfy.tiny["model"], positive=scene[positive], negative=scene["negative"],
                  steps=steps, cfg=7.0, scheduler="normal", denoise=0.8)
    inputs.update(overrides)
    return inputs


def invert(comfy, scene, method, latent=None, widgets=None, **overrides):
    """`method` ("EDICT" | "BDIA" | "OBELM") Invert of `latent` (default: the scene's 2-image latent)."""
    return run_node(comfy, f"{method}Invert", latent_image=latent or scene["latent"],
                    **common(comfy, scene, **overrides), **(METHOD_WIDGETS[method] if widgets is None else widgets))


def sample(comfy, scene, method, latent, positive="positive", seed=0, widgets=None, **overrides):
    """`method` Sample of `latent` with the scene's prompt `positive` (an edit: "edit")."""
    return run_node(comfy, f"{method}Sample", latent_image=latent, seed=seed,
                    **common(comfy, scene, positive=positive, **overrides),
                    **(METHOD_WIDGETS[method] if widgets is None else widgets))
