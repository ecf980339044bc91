"""The evaluator door (study.registry): every built-in is a record reached by its one line, and
every entry of every shipped spec answers the planner's questions."""

from __future__ import annotations

from pathlib import Path

import pytest

from study import planning, registry, results
from study.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
SPECS = sorted([*REPO.glob("search_spaces/*.yaml"), *REPO.glob("tests/specs/*.yaml")])


@pytest.mark.parametrize("name", list(registry.BUILTIN))
def test_every_builtin_is_a_record_whose_columns_are_in_the_schema(name):
    record = registry.find(name)
    assert isinstance(record, registry.Evaluator) and issubclass(record.options, registry.Entry)
    names = set(results.schema().names)
    assert all(column in names for column, *_ in record.columns)


def test_an_unknown_evaluator_names_the_builtins():
    with pytest.raises(ValueError, match=r"unknown evaluator 'robustnes' \(known: robustness, geometry, rubbish"):
        registry.find("robustnes")


@pytest.mark.parametrize("path", SPECS, ids=[f"{p.parent.name}/{p.name}" for p in SPECS])
def test_every_entry_of_every_shipped_spec_answers_the_planner(path):
    spec = load_spec(path)
    for e in spec.evaluate:
        n = e.n_rows()
        assert n is None or n >= 0
        assert e.study_rows([frozenset()] * 2) >= 0
        assert e.scope in ("trial", "study") and (e.scope == "study" or e.study_rows([frozenset()]) == 0)
        e.row_points(), e.metric_names(), e.attack_names(), e.uses_training_split(), e.uses_generative(), e.uses_feature_sources()
        assert e.data_problem(10_000, 10) is None
    configs = planning.grid_configs(spec)
    if configs is not None:
        assert planning.expected_rows(spec) == sum(planning.rows_per_trial(spec, c) for c in configs) + planning.study_rows(spec, configs)
