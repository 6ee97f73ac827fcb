"""The exact methods as the nodes see them: a name, its settings, and its edict_core routines.

A `Method` is what the EXACT_METHOD socket carries between the advanced nodes (made by
the EDICT / BDIA method nodes, as KSamplerSelect makes a SAMPLER), what the simple nodes
build from their widgets, and what an inverted latent's record remembers. A new method is
one `MethodSpec` below over one edict_core function pair.
"""

import logging
import math
from dataclasses import dataclass, field

from .. import edict_core as core
from .errors import NodeInputError, checked

METHOD_TYPE = "EXACT_METHOD"  # the socket type of the advanced nodes
# Inversion multiplies float64 rounding (1e-16) by a method's growth factor per step; the
# float32 result notices once it reaches 1e-6. bench/results/convergence.md measures the
# limit this gives: EDICT p = 0.93 exact at 200 steps, broken at 500 (formula: 158); BDIA
# gamma 0.94 exact at 500 (formula: 372), gamma 0.5 exact at 50, broken at 100 (formula: 33).
ROUNDING_HEADROOM = 1e10

log = logging.getLogger("exact_inversion")


@dataclass(frozen=True)
class MethodSpec:
    """One edict_core method. The routines take (model, ..., sigmas, input_scale, **params,
    callback=...) over sampler-space tensors [B, C, ...]."""
    title: str
    defaults: dict  # every setting with its default, in widget order
    checks: dict  # setting -> edict_core check (raises ValueError with the fix)
    min_steps: int
    invert: object  # (model, clean_pair, sigmas, input_scale, **params) -> noisy pair
    sample_pair: object  # (model, noisy_pair, sigmas, ...) -> state or pair at sigmas[-1]
    sample_noise: object  # (model, pair_or_x from seeded noise, sigmas, ...) -> as sample_pair
    pair_in: bool  # the routines take and return a pair of equal-level states (EDICT)
    calls_per_step: int
    growth: object = None  # params -> (factor by which inversion grows rounding per step, why)
    edit_warning: object = None  # prepared sigmas -> why an edit along them drifts, or None


# bench/results/edit_fidelity.md (cfg 3, 50 steps): O-BELM's edits keep the source within 0.04
# of DDIM's position, or better, where the damping is 0.017 or less (normal at denoise 0.9,
# karras, exponential) and lose it at 0.23 and above (normal at denoise 0.7: 0.46 against 0.98).
OBELM_EDIT_DAMPING = 0.05


def _obelm_edit_warning(sigmas):
    damping = core.obelm.second_mode_damping(sigmas)
    if damping <= OBELM_EDIT_DAMPING:
        return None
    return (f"this schedule's steps barely shrink toward the clean end ((last step / first step)^2 = "
            f"{damping:.2g}, above {OBELM_EDIT_DAMPING}), where O-BELM's second mode is not damped: "
            "the round trip stays exact, but an edit (another prompt) drifts from the source "
            "(bench/results/edit_fidelity.md). For edits use the karras or exponential scheduler, "
            "or BDIA.")


def _from_clean_latent(invert):
    """A two-state method's inversion starts from one clean state, not from a pair."""
    def invert_pair(model, pair, sigmas, input_scale, **params):
        return invert(model, pair[0], sigmas, input_scale, **params)
    return invert_pair


SPECS = {
    "edict": MethodSpec(
        title="EDICT", defaults={"mix_weight": core.DEFAULT_MIX_WEIGHT, "leapfrog": True},
        checks={"mix_weight": core.check_mix_weight, "leapfrog": bool}, min_steps=1,
        invert=core.invert_edict, sample_pair=core.sample_edict, sample_noise=core.sample_edict,
        pair_in=True, calls_per_step=2,
        growth=lambda p: (1 / p["mix_weight"] ** 2, f"1/mix_weight^2 = 1/{p['mix_weight']}^2")),
    "bdia": MethodSpec(
        title="BDIA", defaults={"gamma": core.DEFAULT_GAMMA}, checks={"gamma": core.check_gamma},
        min_steps=core.bdia.MIN_STEPS, invert=_from_clean_latent(core.invert_bdia),
        sample_pair=core.sample_bdia_pair, sample_noise=core.sample_bdia, pair_in=False, calls_per_step=1,
        growth=lambda p: (1 / p["gamma"], f"1/gamma = 1/{p['gamma']}")),
    "obelm": MethodSpec(
        title="O-BELM", defaults={}, checks={}, min_steps=core.obelm.MIN_STEPS,
        invert=_from_clean_latent(core.invert_obelm), sample_pair=core.sample_obelm_pair,
        sample_noise=core.sample_obelm, pair_in=False, calls_per_step=1, edit_warning=_obelm_edit_warning),
}
METHOD_TITLES = {name: spec.title for name, spec in SPECS.items()}


@dataclass(frozen=True)
class Method:
    """A method and its settings, e.g. Method("bdia", {"gamma": 0.94})."""
    name: str
    params: dict = field(default_factory=dict)

    @property
    def spec(self):
        return SPECS[self.name]

    @property
    def title(self):
        return self.spec.title

    def validated(self, node):
        """The method with every setting present and checked; errors name the node and input."""
        params = dict(self.spec.defaults, **self.params)
        return Method(self.name, {key: checked(node, key, self.spec.checks[key], value)
                                  for key, value in params.items()})

    def check_steps(self, node, steps, input_name="steps"):
        """steps: the steps left in the prepared schedule, which can be one fewer than the
        widget says: a last step into the model's sigma_min is not run (exact methods end there)."""
        if steps < self.spec.min_steps:
            raise NodeInputError(
                node, input_name, f"{self.title} needs at least {self.spec.min_steps} steps, the "
                f"schedule has {steps} (a last step to the model's lowest noise level, sigma_min, "
                "is not run: exact methods end there): with fewer, sampling would not call the "
                "model and an edit would ignore its prompt.",
                "Use more steps, or a higher denoise.")

    def exact_steps(self):
        """The step count up to which the round trip stays within float32 rounding (None:
        no limit from the method), and how inversion grows rounding per step."""
        if self.spec.growth is None:
            return None, None
        factor, why = self.spec.growth(dict(self.spec.defaults, **self.params))
        return (None if factor <= 1 else int(math.log(ROUNDING_HEADROOM) / math.log(factor))), why

    def warn_past_exact_range(self, node, steps):
        """Nothing is refused that works: a run past the exact range is only named in the log."""
        limit, why = self.exact_steps()
        if limit is not None and steps > limit:
            log.warning("%s: %d steps is past %s's exact range with these settings: inversion grows "
                        "float rounding by %s per step, so beyond about %d steps the round trip may "
                        "not return the latent exactly (bench/results/convergence.md). Use fewer steps, "
                        "a setting closer to 1, or O-BELM.", node, steps, self.title, why, limit)

    def warn_about_edits(self, node, sigmas):
        """A schedule along which this method's edits drift is named in the log, not refused:
        its round trip is still exact."""
        why = self.spec.edit_warning(sigmas) if self.spec.edit_warning else None
        if why:
            log.warning("%s: %s", node, why)

    @classmethod
    def from_record(cls, record):
        """The method an inverted latent was made with (its settings are record fields)."""
        spec = SPECS[record["method"]]
        return cls(record["method"], {key: record.get(key, default) for key, default in spec.defaults.items()})

    def differences(self, other):
        """{setting: (ours, other's)} where the two differ."""
        return {key: (value, other.params.get(key)) for key, value in self.params.items()
                if other.params.get(key) != value}
