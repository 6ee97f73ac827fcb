"""The exact methods as the nodes see them: a name, its settings, and its edict_core spec.

A `Method` is what the EXACT_METHOD input carries between the advanced nodes (made by
the method nodes, as KSamplerSelect makes a SAMPLER), what the simple nodes build from
their widgets, and what an inverted latent's record remembers. Every per-method fact lives
in edict_core.spec.SPECS; this module only turns its checks and warnings into messages
that name the node and the input.
"""

from dataclasses import dataclass, field

from ..edict_core.spec import SPECS
from .errors import NodeInputError, checked

METHOD_TYPE = "EXACT_METHOD"  # the link type of the advanced nodes
METHOD_TITLES = {name: spec.title for name, spec in SPECS.items()}
# The methods whose pairs Latent Pair Mix mixes, for its messages and tooltips: "EDICT or Rex".
MIXABLE = " or ".join(spec.title for spec in SPECS.values() if spec.mixable)


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
        unknown = sorted(set(self.params) - set(self.spec.defaults))
        if unknown:
            raise NodeInputError(node, unknown[0], f"{self.title} has no setting {unknown[0]!r}.",
                                 f"Its settings are: {', '.join(self.spec.defaults) or 'none'}.")
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
        return self.spec.exact_steps(self.params)

    def past_exact_range(self, steps):
        """Why a run of `steps` may not round-trip exactly, or None. Nothing that works is refused."""
        limit, why = self.exact_steps()
        if limit is None or steps <= limit:
            return None
        return (f"{steps} steps is past {self.title}'s exact range with these settings: inversion grows "
                f"float rounding by {why} per step, so beyond about {limit} steps the round trip may not "
                "return the latent exactly (bench/results/convergence.md). Use fewer steps, a setting "
                "closer to 1, or O-BELM.")

    def edit_drift(self, sigmas):
        """Why an edit along these prepared sigmas drifts from the source, or None (its round
        trip is still exact, so it is named, not refused)."""
        return self.spec.edit_warning(sigmas) if self.spec.edit_warning else None

    @classmethod
    def from_record(cls, record):
        """The method an inverted latent was made with (its settings are record fields)."""
        spec = SPECS[record["method"]]
        return cls(record["method"], {key: record.get(key, default) for key, default in spec.defaults.items()})

    def differences(self, other):
        """{setting: (ours, other's)} where the two differ."""
        return {key: (value, other.params.get(key)) for key, value in self.params.items()
                if other.params.get(key) != value}
