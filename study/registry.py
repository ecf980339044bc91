"""The one door every evaluator walks through, the built-ins as a researcher's own.

An evaluator is an ``Evaluator`` record: its options (a pydantic ``Entry``, validated with the
rest of the spec before Ray starts), the function that computes its rows,
``evaluate(ctx, options) -> list[dict]``, the result columns it adds to the schema, and its
report section. A spec names it by a name in ``BUILTIN`` (one line per built-in, each
``module:EVALUATOR``) or by the import path of a researcher's own, which is either such a record
or a plain function ``margin(ctx, n_points: int = 100) -> rows`` whose keyword arguments are its
options. Per-trial evaluators get the trial's ``study.evaluators.EvalContext`` (one model);
study evaluators (``Entry.scope = "study"``) run once after the trials and get a
``study.evaluators.StudyEvalContext`` (every trial's model).

Columns a researcher's evaluator returns beyond the schema are its own: floats are its
measurements, any other value (int, str, bool) an axis that tells its rows apart (row key).

This module imports no torch: the report and the schema read records through it.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, create_model

BUILTIN = {
    "robustness": "study.evaluators.robustness:EVALUATOR",
    "geometry": "study.evaluators.geometry:EVALUATOR",
    "rubbish": "study.evaluators.rubbish:EVALUATOR",
    "transfer": "study.evaluators.transfer:EVALUATOR",
    "uncertainty": "study.evaluators.uncertainty:EVALUATOR",
    "natural": "study.evaluators.natural:EVALUATOR",
    "reconstruction": "study.evaluators.reconstruction:EVALUATOR",
    "distances": "study.evaluators.distances:EVALUATOR",
    "crafted": "study.evaluators.crafted:EVALUATOR",
    "embedding": "study.evaluators.embedding:EVALUATOR",
    "embedding-transfer": "study.evaluators.embedding:TRANSFER",
    "features": "study.evaluators.features:EVALUATOR",
    "gaussian": "study.evaluators.gaussian:EVALUATOR",
    "calibration": "study.evaluators.calibration:EVALUATOR",
    "trivial": "study.evaluators.trivial:EVALUATOR",
    "members": "study.evaluators.members:EVALUATOR",
    "unrestricted": "study.evaluators.unrestricted:EVALUATOR",
}

Column = tuple  # (name, pyarrow type, group, meaning), as study.results.COLUMNS


class Entry(BaseModel):
    """An evaluator entry's options, and what the planner asks of every entry (the defaults
    answer for an evaluator that does not say: its rows are counted when it has run)."""

    model_config = ConfigDict(extra="forbid")
    scope: ClassVar[Literal["trial", "study"]] = "trial"  # study: once after the trials, over every model
    execution: ClassVar[tuple] = ()  # options that change how it runs, not its rows (left out of its evaluation-store key)

    evaluator: str

    def n_rows(self, linear_binary: bool = False) -> Optional[int]:
        """Rows per trial (``linear_binary``: the trial's model is a linear two-class one)."""
        return None

    def study_rows(self, capabilities: list[frozenset[str]]) -> int:
        """Rows a study evaluator writes after trials whose models have these capabilities."""
        return 0

    def row_points(self) -> Optional[list[tuple]]:
        """The key of every row it writes, when two entries of this evaluator may share a spec
        (None: it appears once, one entry sweeping all its axes)."""
        return None

    def metric_names(self) -> set[str]:
        """Per-trial metrics a search may optimise."""
        return set()

    def attack_names(self) -> list[str]:
        """The attacks it runs (checked against the data's classes; a user's are imported)."""
        return []

    def uses_training_split(self) -> bool:
        return False

    def uses_generative(self) -> bool:
        """It needs the study's generative model (trained once, before the trials)."""
        return False

    def uses_acgan(self) -> bool:
        """It needs the study's AC-GAN (class-conditional, trained once, before the trials)."""
        return False

    def judges(self) -> list:
        """Models it scores with that the study trains once before the trials (TrainConfigs)."""
        return []

    def uses_feature_sources(self) -> bool:
        """It needs the study's feature-source models (study.features, trained before the trials)."""
        return False

    def data_problem(self, n_eval: int, n_classes: int) -> Optional[str]:
        """What the loaded data makes impossible for it, as ``field: message`` (None: fine)."""
        return None

    def every_model_needs(self) -> frozenset[str]:
        """Capabilities every model of the study must have (study.models.Registered.capabilities)."""
        return frozenset()

    def some_model_needs(self) -> frozenset[str]:
        """Capabilities at least one model must have (the others are skipped by the evaluator)."""
        return frozenset()


@dataclass(frozen=True)
class Evaluator:
    options: type[Entry]
    evaluate: Callable[..., list[dict]]  # (ctx, options) -> rows
    columns: tuple[Column, ...] = ()  # columns it adds to the results schema
    # Its report section, (rows, inputs) -> tables and charts (analysis.sections), or the import
    # path of one built from analysis's library (study never imports analysis).
    report: Union[str, Callable[..., list[tuple]], None] = None


def find(name: str) -> Evaluator:
    """The evaluator a spec's ``evaluator:`` names (ValueError, one line, when the name is
    neither a built-in nor an importable record or function of the right shape)."""
    from study import imports

    if name not in BUILTIN and not imports.is_import_path(name):
        raise ValueError(f"unknown evaluator {name!r} (known: {', '.join(BUILTIN)}; or one of yours by import path, e.g. mylab.metrics:margin)")
    return _load(BUILTIN.get(name, name))


@functools.lru_cache(maxsize=None)
def _load(path: str) -> Evaluator:
    from study import imports

    obj = imports.resolve(path, callable_only=False)
    if isinstance(obj, Evaluator):
        return obj
    if callable(obj):
        return _plain(path, obj)
    raise ValueError(f"{path}: an evaluator is a study.registry.Evaluator or a function def fn(ctx, **options) -> list of row dicts")


def builtin_columns() -> list[Column]:
    """Every built-in's own columns, in registry order (each once)."""
    out = {}
    for name in BUILTIN:
        for column in find(name).columns:
            out.setdefault(column[0], column)
    return list(out.values())


def _plain(path: str, fn: Callable) -> Evaluator:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        params = []
    if not params or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD) or inspect.isclass(fn):
        raise ValueError(f"{path}: an evaluator is a function of the trial's context: def {getattr(fn, '__name__', 'fn')}(ctx, **options) -> list of row dicts")
    fields: dict[str, Any] = {}
    for p in params[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        annotation = Any if p.annotation is p.empty else p.annotation
        fields[p.name] = (annotation, ... if p.default is p.empty else p.default)
    options = create_model(f"{fn.__name__}_options", __base__=Entry, **fields)

    def evaluate(ctx, entry):
        return fn(ctx, **{k: getattr(entry, k) for k in fields})

    return Evaluator(options, evaluate)
