"""Evaluators by name: function(ctx, axes) -> list of result rows (dicts of schema columns);
a researcher's own by import path through study.registry, whose rows may add columns.

Per-trial evaluators run inside a trial against its one model. ``transfer``,
``embedding-transfer`` and ``features`` are study evaluators: they need every trial's model,
so jobs.sweep runs them once after the trials; so does the model-free ``gaussian``. The
natural and reconstruction evaluators (and natural input sets) use the study's generative model,
trained once before the trials (study.trial.prepare_generative) and handed in ``ctx.generative``.
``embedding`` runs only for models with an embedding (triplet); it returns no rows for others.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch

from study import artifacts, registry
from study.evaluators import crafted, distances, embedding, geometry, natural, reconstruction, robustness, rubbish, uncertainty
from study.train import predict


@dataclass
class EvalContext:
    """What one trial hands every evaluator: its trained model, the evaluation split, the
    training split (for its class geometry), where artifacts go, and the generative model."""

    model: torch.nn.Module
    x: torch.Tensor
    y: torch.Tensor
    seed: int
    x_train: torch.Tensor
    y_train: torch.Tensor
    trial_id: str
    results_uri: str
    generative: Any = None  # study.generative.Generative when an evaluator needs it
    n_classes: int | None = None  # the dataset's; by default the largest label seen + 1

    def __post_init__(self):
        if self.n_classes is None:
            labels = [t for t in (self.y_train, self.y) if t is not None and len(t)]
            self.n_classes = max(int(t.max()) for t in labels) + 1

    @cached_property
    def correct(self) -> torch.Tensor:
        return predict(self.model, self.x) == self.y

    @cached_property
    def clean_acc(self) -> float:
        return self.correct.float().mean().item()

    def write_artifact(self, name: str, columns: dict) -> str:
        return artifacts.write(self.results_uri, name, self.trial_id, columns)


EVALUATORS = {
    "robustness": robustness.evaluate,
    "geometry": geometry.evaluate,
    "rubbish": rubbish.evaluate,
    "uncertainty": uncertainty.evaluate,
    "natural": natural.evaluate,
    "reconstruction": reconstruction.evaluate,
    "distances": distances.evaluate,
    "crafted": crafted.evaluate,
    "embedding": embedding.evaluate,
}
STUDY_EVALUATORS = ("transfer", "embedding-transfer", "features", "gaussian")


def run(ctx: EvalContext, axes) -> list[dict]:
    if axes.evaluator in STUDY_EVALUATORS:
        return []
    if axes.evaluator in EVALUATORS:
        return EVALUATORS[axes.evaluator](ctx, axes)
    return _checked(axes.evaluator, registry.find(axes.evaluator).evaluate(ctx, axes))


_PLAIN = (bool, int, float, str, type(None))


def _checked(name: str, rows) -> list[dict]:
    """A user's evaluator returns a list of row dicts of plain values (numbers, strings, bools)."""
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise TypeError(f"evaluator {name} returned {type(rows).__name__}; it must return a list of row dicts")
    out = []
    for row in rows:
        for column, value in row.items():
            if not isinstance(value, _PLAIN):
                raise TypeError(f"evaluator {name}: column {column!r} holds a {type(value).__name__}; rows hold numbers, strings or bools (e.g. tensor.item())")
        out.append({**row, "evaluator": name})
    return out
