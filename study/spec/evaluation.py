"""The ``evaluate:`` list, each entry validated by its evaluator's own options
(study.registry), and the attack settings evaluators share."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from pydantic import Field, ValidationError, field_validator, model_validator

from study import attacks, registry
from study.attacks import ATTACKS
from study.names import LATENT_KINDS
from study.norms import NORMS
from study.spec.constraints import Strict, eps_bound
from study.spec.errors import AxisError, message, relevant_errors, split_nested
from study.types import Distinct, PosFloat, PosInt


class AttackSpec(Strict):
    """One attack: its name (its published defaults), or ``{name: pgd, steps: 20}`` with its own
    options (study.attacks: each factory's keywords)."""

    name: str  # a built-in (study.attacks.ATTACKS) or one of yours by import path (study.attacks.imported)
    options: dict[str, Any] = {}

    @field_validator("name")
    @classmethod
    def _known(cls, v):
        from study import imports

        if v not in ATTACKS and not imports.is_import_path(v):
            raise ValueError(f"unknown attack {v!r} (known: {', '.join(ATTACKS)}; or one of yours by import path, e.g. mylab.attacks:noise)")
        return v

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data):
        if isinstance(data, str):
            return {"name": data}
        if isinstance(data, dict) and "options" not in data:
            options = {"options": {k: v for k, v in data.items() if k != "name"}}
            return {"name": data["name"], **options} if "name" in data else options
        return data

    @model_validator(mode="after")
    def _options(self):
        try:
            resolved = attacks.make(self.name, **self.options).options()
        except attacks.OptionError as e:
            raise ValueError(str(e)) from None
        # Stored resolved: the spec file, rows and keys then say every setting, defaults included.
        self.options = resolved
        return self

    def build(self):
        return attacks.make(self.name, **self.options)

    def describe(self) -> str:
        """``pgd(steps=20,step_size=0.125,restarts=1)``: the attack and every setting."""
        return f"{self.name}(" + ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.options.items() if v is not None) + ")"


_SHARED_OPTIONS = ("steps", "step_size", "restarts", "cw")


def own_options(data, attack_field: str, example: str):
    """Attack options once lived beside the attack; now each attack carries its own."""
    if isinstance(data, dict):
        for name in _SHARED_OPTIONS:
            if name in data:
                example = "{name: cw, confidence: 2, search_steps: 3}" if name == "cw" else example
                raise ValueError(f"{name}: each attack takes its own options, e.g. {attack_field}: {example}")
    return data


class LatentSearchSpec(Strict):
    """A natural-adversary search in the generator's latent space (study.attacks.latent)."""

    kind: Literal[LATENT_KINDS] = "iterative"
    samples: PosInt = 64  # N: latent samples (classifier queries) per round
    rounds: PosInt = 100  # the budget: at most this many rounds per image
    dr: PosFloat = 0.1  # iterative: shell width; hybrid: resolution of the shrinking and the fine pass
    h0: PosFloat = 10.0  # hybrid: the first coarse range [0, h0)
    stop: PosInt = 5  # hybrid: rounds without improvement that end a phase

    @model_validator(mode="after")
    def _checks(self):
        if self.h0 <= self.dr:
            raise ValueError("h0: must be > dr (the coarse range holds at least one shell)")
        return self


class InputSet(Strict):
    """Adversarial inputs for the uncertainty and reconstruction evaluators: every evaluation
    point attacked at each eps (the attack's final iterate, as a detector would see it). C&W is
    unbounded (no eps, L2); `natural` searches the generator's latent space (no eps, no norm):
    ``{attack: natural, search: {...}}``."""

    attack: Optional[AttackSpec]  # None: natural adversaries (written `attack: natural`)
    norm: Optional[Literal[tuple(NORMS)]] = "linf"
    eps: Optional[Annotated[list[PosFloat], Field(min_length=1), Distinct]] = None
    search: LatentSearchSpec = LatentSearchSpec()  # natural

    @model_validator(mode="before")
    @classmethod
    def _natural(cls, data):
        data = own_options(data, "attack", "{name: pgd, steps: 40}")
        if isinstance(data, dict) and data.get("attack") == "natural":
            return {**data, "attack": None}
        return data

    @model_validator(mode="after")
    def _checks(self):
        name = self.name
        if "search" in self.model_fields_set and name != "natural":
            raise ValueError(f"search: options for natural adversaries, not {name}")
        if name in attacks.NO_FINAL_ITERATE:
            raise ValueError(f"attack: {name} keeps no final iterate per point (an input set needs one); use pgd, apgd-ce, fab-t, square or cw")
        if name not in (*attacks.ATTACKS, "natural"):
            raise ValueError(f"attack: {name}: an attack of yours runs in the robustness evaluator's attacks list")
        if name in ("cw", "natural"):
            if self.eps is not None:
                raise ValueError(f"eps: {name} is unbounded (it searches for the closest adversarial); leave eps out")
            forced = "l2" if name == "cw" else None
            if "norm" in self.model_fields_set and self.norm != forced:
                raise ValueError("norm: cw is an L2 attack" if forced else "norm: natural adversaries have no norm (their distance is measured in the latent space)")
            self.norm = forced
            return self
        if self.norm is None:
            raise ValueError(f"norm: required for {name}")
        if self.eps is None:
            raise ValueError(f"eps: required for {name} (a list of radii)")
        eps_bound(self.norm, self.eps, "eps")
        return self

    @property
    def name(self) -> str:
        return "natural" if self.attack is None else self.attack.name

    def n_sets(self) -> int:
        return 1 if self.eps is None else len(self.eps)


def parse_entries(raw) -> list:
    """The ``evaluate:`` list: each entry validated by its evaluator's options (study.registry:
    a built-in's name or the import path of one of yours)."""
    if not isinstance(raw, list):
        raise AxisError((), "must be a list of evaluator entries, e.g. - evaluator: robustness")
    entries = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise AxisError((i,), "must be a mapping with an `evaluator` (which evaluator to run)")
        name = item.get("evaluator")
        if name is None:
            raise AxisError((i,), "missing 'evaluator' (which evaluator to run)")
        try:
            found = registry.find(name)
        except ValueError as e:
            raise AxisError((i, "evaluator"), str(e)) from None
        try:
            entries.append(found.options.model_validate(item))
        except ValidationError as e:
            errors = relevant_errors(e.errors())
            err = errors[0]
            sub, msg = split_nested(message(err))
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise AxisError((i, *err["loc"], *([sub] if sub else [])), msg + more) from None
    return entries
