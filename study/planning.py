"""The trials a spec implies: each trial's resolved training config (grid or sampled), how Tune
sees the options of an axis, how many trials and rows a sweep makes. The spec's schema
(study.spec) says what a study is; this module says what running it means.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from study import models
from study.spec import StudySpec, TrainConfig
from study.spec.search import option_label


def grid_configs(spec: StudySpec) -> list[dict] | None:
    """Every trial's training config when all axes are values or grids and the search
    takes them as written (else None: configs are sampled at run time)."""
    if spec.search.kind == "optuna" or any(a.kind not in ("value", "grid") for a in spec.train.values()):
        return None
    names = list(spec.train)
    combos = itertools.product(*(spec.train[n].values for n in names))
    return [resolve(spec, dict(zip(names, c))) for c in combos for _ in range(spec.search.num_samples)]


def resolve(spec: StudySpec, sampled: dict) -> dict:
    """A full TrainConfig dict from one sample of the axes (defaults and the study seed filled)."""
    cfg = TrainConfig.model_validate(sampled)
    if cfg.seed is None:
        cfg.seed = spec.seed
    return cfg.model_dump(mode="json")


def tune_choices(spec: StudySpec) -> dict[str, dict[str, Any]]:
    """Short labels for grid/choice options that are mappings or null (e.g. `adversarial`):
    Tune sees the labels, so its progress table stays readable; ``decode`` maps them back."""
    out = {}
    for name, axis in spec.train.items():
        if axis.kind in ("grid", "choice") and any(v is None or isinstance(v, dict) for v in axis.values):
            labels = [option_label(v) for v in axis.values]
            if len(set(labels)) < len(labels):
                labels = [f"{i}:{lab}" for i, lab in enumerate(labels)]
            out[name] = dict(zip(labels, axis.values))
    return out


def decode(spec: StudySpec, sampled: dict) -> dict:
    """A Tune sample with option labels replaced by the options they stand for."""
    choices = tune_choices(spec)
    return {k: choices[k][v] if k in choices else v for k, v in sampled.items()}


def n_trials(spec: StudySpec) -> int:
    """Trials Tune starts (a scheduler may stop some before they write rows)."""
    if spec.search.kind == "optuna":
        return spec.search.num_samples
    if grid_configs(spec) is not None:
        return math.prod(len(a.values) for a in spec.train.values()) * spec.search.num_samples
    grid = math.prod(len(a.values) for a in spec.train.values() if a.kind == "grid")
    return grid * spec.search.num_samples


def rows_per_trial(spec: StudySpec, cfg: dict) -> int:
    """Rows a trial of the resolved config ``cfg`` writes (the geometry evaluator's closed
    forms need a linear two-class model, un-normalised; the embedding evaluator, a model
    with an embedding)."""
    entry = models.entry(cfg["model"])
    linear_binary = entry.linear and cfg.get("normalize") is None and (entry.binary or len(spec.data.classes or ()) == 2)
    counts = [e.n_rows(linear_binary) for e in spec.evaluate if e.some_model_needs() <= entry.capabilities]  # the others skip this model
    return None if None in counts else sum(counts)  # None: an evaluator of the user's does not say


def study_rows(spec: StudySpec, configs: list[dict]) -> int:
    """Rows the study evaluators write after the trials of ``configs``."""
    capabilities = [models.entry(c["model"]).capabilities for c in configs]
    return sum(e.study_rows(capabilities) for e in spec.evaluate if e.scope == "study")


def expected_rows(spec: StudySpec) -> int | None:
    """Rows the sweep writes when every trial finishes (None: configs sampled at run time)."""
    configs = grid_configs(spec)
    if configs is None:
        return None
    per_trial = [rows_per_trial(spec, c) for c in configs]
    return None if None in per_trial else sum(per_trial) + study_rows(spec, configs)


def max_epochs(spec: StudySpec) -> int:
    """The most epochs any trial can train (the bound a scheduler needs)."""
    axis = spec.train.get("epochs")
    if axis is None:
        return TrainConfig.model_fields["epochs"].default
    return axis.values[1] - 1 if axis.kind == "randint" else max(axis.values)
