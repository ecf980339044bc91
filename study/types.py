"""Constrained value types of the spec and of the attacks' options, written once."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field


def _not_bool(v):
    # pydantic would read `true` as 1; a boolean where a number belongs is a mistake in a spec.
    if isinstance(v, bool):
        raise ValueError("must be a number, not true/false")
    return v


def _distinct(v):
    if len(set(v)) != len(v):
        raise ValueError("values must be distinct")
    return v


NotBool = BeforeValidator(_not_bool)
Distinct = AfterValidator(_distinct)
NonNegFloat = Annotated[float, NotBool, Field(ge=0)]
PosFloat = Annotated[float, NotBool, Field(gt=0)]
PosInt = Annotated[int, NotBool, Field(gt=0)]
NonNegInt = Annotated[int, NotBool, Field(ge=0)]
Fraction = Annotated[float, NotBool, Field(gt=0, le=1)]
