"""Constraints every part of the spec shares, written once: strict mappings (an unknown field
is an error), the norms a threat model names and each norm's largest meaningful eps."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from study import norms
from study.norms import NORMS
from study.types import Distinct, NonNegFloat, _not_bool

NormName = Literal[tuple(NORMS)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NormAxes(Strict):
    eps: Annotated[list[NonNegFloat], Field(min_length=1), Distinct]


def eps_bound(norm: str, eps, where: str):
    """A radius beyond the norm's largest meaningful one (study.norms: Linf's is 1, as inputs lie
    in [0, 1]) is a typo, not a threat model. ``eps``: one radius, or a list (indexed in ``where``)."""
    bound = norms.get(norm).max_eps
    for i, e in enumerate(eps if isinstance(eps, list) else [eps]):
        if bound is not None and e > bound:
            at = f"{where}[{i}]" if isinstance(eps, list) else where
            raise ValueError(f"{at}: {norm} eps must be <= {bound:g} (inputs lie in [0, 1])")


Quantile = Annotated[float, BeforeValidator(_not_bool), Field(ge=0, le=1)]
