"""The built-in evaluators, one module each (its options, columns, rows and report section,
registered by one line in study.registry.BUILTIN), and the contexts every evaluator gets:
``evaluate(ctx, options) -> list of row dicts``.

Per-trial evaluators run inside a trial against its one model (``EvalContext``). Study
evaluators (``transfer``, ``embedding-transfer``, ``features``, the model-free ``gaussian``)
need every trial's model, so they run once after the trials (``StudyEvalContext``). The natural
and reconstruction evaluators (and natural input sets) use the study's generative model,
trained once before the trials (study.trial.prepare_generative) and handed in ``ctx.generative``.
``embedding`` runs only for models with an embedding and ``members`` only for ensembles: a trial
skips an entry whose ``some_model_needs`` its model lacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable

import pyarrow as pa
import torch

from study import artifacts, registry
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
    acgan: Any = None  # study.acgan.ACGAN when an evaluator needs it
    stored_model: Callable[[Any], torch.nn.Module] | None = None  # a TrainConfig's model from the study's store (a judge)
    cache: Any = None  # study.evalstore.Bound: attack work earlier sweeps did on this model and data
    model_source: Any = None  # study.evaluators.shards.ModelSource: how a shard task on another worker builds this model
    captured: list | None = None  # while the trial stores an entry: the artifacts it writes, (name, table)

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
        table = pa.table(columns)
        if self.captured is not None:
            self.captured.append((name, table))
        return artifacts.write(self.results_uri, name, self.trial_id, table)


@dataclass
class Member:
    """One trained model of the study."""

    trial_id: str
    label: str
    model: torch.nn.Module


@dataclass
class StudyEvalContext:
    """What a study evaluator gets after the trials: every finished trial's model, the
    evaluation split, the study seed, and the standard feature-source model on demand."""

    members: list[Member]
    x: torch.Tensor
    y: torch.Tensor
    seed: int
    results_uri: str
    standard_source: Callable[[], Member]  # study.features' standard source, from the store

    def write_artifact(self, name: str, columns: dict) -> str:
        return artifacts.write(self.results_uri, name, "study", columns)


def run(ctx: EvalContext | StudyEvalContext, options) -> list[dict]:
    """The rows of one evaluator entry: a built-in's as it writes them, a researcher's checked
    and tagged with the name the spec gave it."""
    rows = registry.find(options.evaluator).evaluate(ctx, options)
    if options.evaluator in registry.BUILTIN:
        return rows
    return _checked(options.evaluator, rows)


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
