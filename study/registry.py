"""Evaluators of a researcher's own, named by import path in a spec.

``{evaluator: mylab.metrics:margin, n_points: 50}`` names a plain function
``margin(ctx, n_points: int = 100) -> list[dict]``: it receives the trial's ``EvalContext``
(study.evaluators: the model, the evaluation and training splits, the seed) and returns rows.
Its keyword arguments, with their annotations and defaults, are the entry's options, validated
with the rest of the spec before Ray starts. A row's columns beyond the results schema are the
evaluator's own: floats are its measurements, any other value (int, str, bool) an axis that
tells its rows apart (part of the row key).

``Entry`` is what the planner asks of every evaluator entry, built-in or not.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, create_model


class Entry(BaseModel):
    """An evaluator entry's options, with the planner's questions answered for an evaluator that
    does not say (its rows are counted when it has run)."""

    model_config = ConfigDict(extra="forbid")

    def n_rows(self, linear_binary: bool = False) -> int | None:
        return None

    def metric_names(self) -> set[str]:
        return set()

    def uses_training_split(self) -> bool:
        return False

    def every_model_needs(self) -> frozenset[str]:
        """Capabilities every model of the study must have (study.models.Registered.capabilities)."""
        return frozenset()

    def some_model_needs(self) -> frozenset[str]:
        """Capabilities at least one model must have (the others are skipped by the evaluator)."""
        return frozenset()


@dataclass(frozen=True)
class Evaluator:
    name: str
    spec: type[Entry]
    evaluate: Callable[..., list[dict]]  # (ctx, entry) -> rows


def find(name: str) -> Evaluator:
    """The evaluator a spec's ``evaluator:`` names by import path (ValueError, one line, when
    the name is neither a built-in nor an importable function of the right shape)."""
    from study import imports
    from study.spec import EVALUATORS as BUILTIN

    if not imports.is_import_path(name):
        raise ValueError(f"unknown evaluator {name!r} (known: {', '.join(BUILTIN)}; or one of yours by import path, e.g. mylab.metrics:margin)")
    return _plain(name, imports.resolve(name))


def _plain(path: str, fn: Callable) -> Evaluator:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        params = []
    if not params or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD) or inspect.isclass(fn):
        raise ValueError(f"{path}: an evaluator is a function of the trial's context: def {getattr(fn, '__name__', 'fn')}(ctx, **options) -> list of row dicts")
    fields: dict[str, Any] = {"evaluator": (Literal[path], ...)}
    for p in params[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        annotation = Any if p.annotation is p.empty else p.annotation
        fields[p.name] = (annotation, ... if p.default is p.empty else p.default)
    spec = create_model(f"{fn.__name__}_options", __base__=Entry, **fields)
    options = [name for name in fields if name != "evaluator"]

    def evaluate(ctx, entry):
        return fn(ctx, **{k: getattr(entry, k) for k in options})

    return Evaluator(path, spec, evaluate)
