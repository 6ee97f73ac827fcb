"""The one place per method: everything the nodes, the tests, the bench and the batch command
know of an exact method. A new method is a function pair in edict_core plus one MethodSpec
in SPECS; its nodes (Invert, Sample, Method), its record fields, its rows in the tests and
the bench, and its place in the batch command all follow from here.

Every method has one state type, a pair of [B, C, ...] tensors in sampler space:
  - at the clean end: (x, partner); a clean latent enters as (x, x). EDICT's partner is its
    second branch y at the same level, Rex's its second state x_hat at the same level;
    BDIA's and O-BELM's is the state one step before (X_{N-1} at sigmas[-2]), which their
    inversion does not read.
  - at the noisy end: EDICT (x, y) and Rex (x, x_hat) at sigmas[0]; BDIA and O-BELM
    (X_0, X_1) at sigmas[0] and sigmas[1].
The four routines share one call shape, (model, pair_or_x, sigmas, input_scale,
callback=None, **settings), over a schedule from prepare_sigmas:
  invert: clean pair -> noisy pair;  sample: noisy pair -> clean pair (pair[0] the result);
  start_clean: one clean latent x at sigmas[-1] -> the clean pair invert continues from;
  start_noisy: one noisy latent x at sigmas[0] (seeded noise: text-to-image, img2img) -> the
  noisy pair sample continues from.
Both starts cost `start_calls` model calls (EDICT, Rex: 0, their pair is (x, x); BDIA,
O-BELM: 1, a plain DDIM step). A Sample node's output keeps its clean pair, so an Invert node given
it recovers the noisy pair it came from exactly, with no start.
"""

import math
from dataclasses import dataclass

from . import bdia, edict, obelm, rex
from ._common import DEFAULT_GAMMA, DEFAULT_MIX_WEIGHT, ddim_inverse_start, ddim_start, twin
from .validation import check_choice, check_gamma, check_mix_weight, check_zeta

# Inversion multiplies float64 rounding (1e-16) by a method's growth factor per step; the
# float32 result notices once it reaches 1e-6. bench/results/convergence.md measures the
# limit this gives: EDICT p = 0.93 exact at 200 steps, broken at 500 (formula: 158); BDIA
# gamma 0.94 exact at 500 (formula: 372), gamma 0.5 exact at 50, broken at 100 (formula: 33).
ROUNDING_HEADROOM = 1e10

# bench/results/edit_fidelity.md (cfg 3, 50 steps): O-BELM's edits keep the source within 0.04
# of DDIM's position, or better, where the damping is 0.017 or less (normal at denoise 0.9,
# karras, exponential) and lose it at 0.23 and above (normal at denoise 0.7: 0.46 against 0.98).
OBELM_EDIT_DAMPING = 0.05


def _check_bool(value):
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}.")
    return value


def _check_number(check):
    """A float setting's check that refuses what only looks like a number ("0.5", True): a
    prompt or a file that sends a string is a mistake to name, not to cast."""
    def checked(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"expected a number, got {value!r}.")
        return check(value)
    return checked


def _check_choice(options):
    """A COMBO setting's check: one of `options`, as the string itself."""
    return lambda value: check_choice(value, options)


@dataclass(frozen=True)
class Setting:
    """One setting of a method: a widget of its nodes and a field of its record."""
    name: str
    kind: str  # "FLOAT" | "BOOLEAN" | "COMBO" (a string, one of `options`): the widget type
    default: object
    check: object  # value -> the value, or ValueError saying what is wrong and the fix
    tooltip: str
    low: float = None  # FLOAT widgets: range and step
    high: float = None
    step: float = None
    options: tuple = ()  # COMBO widgets: the strings offered, in order


@dataclass(frozen=True)
class MethodSpec:
    name: str  # the record's "method" field: "edict", "bdia", "obelm"
    title: str  # "EDICT": node titles and messages
    node_prefix: str  # node ids f"{node_prefix}Invert", f"{node_prefix}Sample", f"{node_prefix}Method"
    about: str  # one sentence: what the method is and costs, for node descriptions
    pair: str  # what the noisy pair holds, for output tooltips
    invert: object
    sample: object
    start_clean: object
    start_noisy: object
    settings: tuple = ()
    min_steps: int = 1
    # Model calls (one batched cond/uncond evaluation each) per step: a number, or
    # settings -> number where the settings decide it (Rex: its tableau's stages). Read it
    # through step_calls.
    calls_per_step: object = 1
    start_calls: int = 0  # model calls of start_clean and of start_noisy
    growth: object = None  # settings -> (factor by which inversion grows rounding per step, why)
    edit_warning: object = None  # prepared sigmas -> why an edit along them drifts, or None
    advice: str = ""  # what a user must know to edit well with it, for node descriptions
    scheduler: str = "normal"  # the simple nodes' defaults: ones under which the method edits well
    denoise: float = 0.8
    steps: int = 50  # the papers' setting; fewer where a step costs many calls (Rex's RK4: 8)
    # Its pair's two states sit at one noise level (EDICT's x and y, Rex's x and x_hat), so
    # Latent Pair Mix can mix them; BDIA's and O-BELM's are two consecutive levels.
    mixable: bool = False

    @property
    def defaults(self):
        return {s.name: s.default for s in self.settings}

    @property
    def checks(self):
        return {s.name: s.check for s in self.settings}

    def node_id(self, role):
        """role: "Invert" | "Sample" | "Method"."""
        return f"{self.node_prefix}{role}"

    def reports(self, steps, started):
        """Progress reports (one per step run) of invert or sample over `steps` steps: the
        recurrence's own, plus the start's where the run began from a single latent."""
        return steps - self.start_calls + (self.start_calls if started else 0)

    def step_calls(self, settings=None):
        """Model calls per step with these settings (missing ones at their defaults)."""
        if callable(self.calls_per_step):
            return self.calls_per_step(dict(self.defaults, **(settings or {})))
        return self.calls_per_step

    def calls(self, steps, started, settings=None):
        """Model calls (one batched cond/uncond evaluation each) of invert or sample with these
        settings (missing ones at their defaults)."""
        return self.step_calls(settings) * (steps - self.start_calls) + (self.start_calls if started else 0)

    def exact_steps(self, settings):
        """The step count up to which the round trip stays within float32 rounding (None: no
        limit from the method), and how inversion grows rounding per step."""
        if self.growth is None:
            return None, None
        factor, why = self.growth(dict(self.defaults, **settings))
        return (None if factor <= 1 else int(math.log(ROUNDING_HEADROOM) / math.log(factor))), why


def _obelm_edit_warning(sigmas):
    damping = obelm.second_mode_damping(sigmas)
    if damping <= OBELM_EDIT_DAMPING:
        return None
    return (f"this schedule's steps barely shrink toward the clean end, or grow ((last step / first step)^2 = "
            f"{damping:.2g}, above {OBELM_EDIT_DAMPING}), where O-BELM's second mode is not damped: "
            "the round trip stays exact, but an edit (another prompt) drifts from the source "
            "(bench/results/edit_fidelity.md). For edits use the karras or exponential scheduler, "
            "or BDIA.")


SPECS = {spec.name: spec for spec in (
    MethodSpec(
        name="edict", title="EDICT", node_prefix="EDICT",
        about="EDICT (Wallace et al., CVPR 2023): two coupled latents, two model calls per step.",
        pair="one noisy branch x, carrying its partner y",
        invert=edict.invert_edict, sample=edict.sample_edict, start_clean=twin, start_noisy=twin,
        settings=(
            Setting("mix_weight", "FLOAT", DEFAULT_MIX_WEIGHT, _check_number(check_mix_weight),
                    f"EDICT's mixing weight p in (0, 1]. {DEFAULT_MIX_WEIGHT} as in the paper; lower "
                    "couples the two branches more strongly.", 0.01, 1.0, 0.01),
            Setting("leapfrog", "BOOLEAN", True, _check_bool,
                    "Alternate which branch is updated first on each step, as in the paper."),
        ),
        min_steps=1, calls_per_step=2, mixable=True,
        growth=lambda p: (1 / p["mix_weight"] ** 2, f"1/mix_weight^2 = 1/{p['mix_weight']}^2")),
    MethodSpec(
        name="bdia", title="BDIA", node_prefix="BDIA",
        about="BDIA (Zhang et al., ECCV 2024): time-reversible DDIM, one model call per step.",
        pair="the noisiest state, carrying the next one",
        invert=bdia.invert_pair, sample=bdia.sample_to_pair,
        start_clean=ddim_inverse_start, start_noisy=ddim_start,
        settings=(
            Setting("gamma", "FLOAT", DEFAULT_GAMMA, _check_number(check_gamma),
                    f"BDIA's gamma in (0, 1]. 0.92 to 1.0 for edits ({DEFAULT_GAMMA} in the authors' "
                    "notebook); about 0.5 for 10-step text-to-image.", 0.01, 1.0, 0.01),
        ),
        min_steps=bdia.MIN_STEPS, calls_per_step=1, start_calls=1,
        growth=lambda p: (1 / p["gamma"], f"1/gamma = 1/{p['gamma']}")),
    MethodSpec(
        name="obelm", title="O-BELM", node_prefix="OBELM",
        about=("O-BELM (Wang et al., NeurIPS 2024): the second-order bidirectional multistep "
               "sampler, exact like BDIA at one model call per step, with no setting to tune."),
        pair="the noisiest state, carrying the next one",
        advice=("For edits keep a scheduler whose steps shrink toward the clean end (karras, the "
                "default, or exponential): along steps of about equal length (normal at denoise 0.7 "
                "or less) its edits drift from the photo, and the node says so."),
        invert=obelm.invert_pair, sample=obelm.sample_to_pair,
        start_clean=ddim_inverse_start, start_noisy=ddim_start,
        min_steps=obelm.MIN_STEPS, calls_per_step=1, start_calls=1,
        edit_warning=_obelm_edit_warning,
        # Along normal's near-equal tail steps O-BELM's edits drift (OBELM_EDIT_DAMPING); karras
        # shrinks them toward the clean end at the denoise edits use (0.5 and up; at 0.1 it warns too).
        scheduler="karras"),
    MethodSpec(
        name="rex", title="Rex", node_prefix="Rex",
        about=("Rex (Blasingame & Liu, ICML 2026): reversible exponential Runge-Kutta, two coupled "
               "latents, exact at the order of its tableau; 2 model calls per stage per step: "
               + ", ".join(f"{name} {rex.calls_per_step(name)}" for name in rex.TABLEAUS) + "."),
        pair="one noisy state x, carrying its partner x_hat", mixable=True,
        # bench/results/convergence.md: rk4 reaches O-BELM's 50-call error at about 90 calls
        # (11 steps) and passes it beyond; under 100 calls O-BELM is the better buy.
        advice=("RK4 (the default) is fourth order at 8 model calls a step, so its default 20 steps cost "
                "160 calls, as many as 160 BDIA steps: "
                "it overtakes O-BELM's accuracy only past about 90 calls (11 steps), and its error then "
                "falls about 15x per doubling of the steps against O-BELM's 4x."),
        invert=rex.invert_rex, sample=rex.sample_rex, start_clean=twin, start_noisy=twin,
        settings=(
            Setting("tableau", "COMBO", rex.DEFAULT_TABLEAU, _check_choice(tuple(rex.TABLEAUS)),
                    "The Runge-Kutta tableau each step wraps: " + ", ".join(
                        f"{name} (order {t.order}, {rex.calls_per_step(name)} model calls a step)"
                        for name, t in rex.TABLEAUS.items()) + ".",
                    options=tuple(rex.TABLEAUS)),
            Setting("zeta", "FLOAT", rex.DEFAULT_ZETA, _check_number(check_zeta),
                    f"Rex's coupling zeta in (0, 1]. {rex.DEFAULT_ZETA} as in the authors' editing runs; "
                    "inversion divides by it each step, so lower values shorten the exact range.",
                    0.01, 1.0, 0.001),
        ),
        # 20 RK4 steps are 160 calls, as many as 160 BDIA steps, and more accurate than O-BELM's 50
        # (bench/results/convergence.md: 1e-4 against 8.9e-4); 50 would be 400 calls.
        min_steps=1, calls_per_step=lambda p: rex.calls_per_step(p["tableau"]), steps=20,
        growth=lambda p: (1 / p["zeta"], f"1/zeta = 1/{p['zeta']}")),
)}
