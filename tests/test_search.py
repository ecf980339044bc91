"""Searching the frontier: Optuna (two objectives) against the exact frontier of a grid over the
same space, and ASHA stopping a hopeless training config early."""

from __future__ import annotations

import json

import polars as pl
import pytest

from analysis import frontier
from conftest import SPECS, Sweep
from study import planning
from study.spec import load_spec

POINT = (pl.col("attack") == "pgd") & (pl.col("norm") == "linf") & (pl.col("eps") == 0.1)


@pytest.fixture(scope="module")
def grid_and_optuna(ray_session, tmp_path_factory):
    """The grid first, then the search; both use one model store (sibling results folders), so
    the search trains nothing the grid trained and its metrics are the grid's for each config."""
    from jobs.sweep import main

    base = tmp_path_factory.mktemp("frontier")
    grid, search = Sweep(SPECS / "frontier-grid.yaml", base / "grid"), Sweep(SPECS / "frontier-optuna.yaml", base / "optuna")
    assert main([str(grid.spec), "--results", str(grid.results)]) == 0
    assert main([str(search.spec), "--results", str(search.results)]) == 0
    return grid, search


def test_optuna_runs_its_budget_and_marks_its_pareto_trials(grid_and_optuna):
    _, search = grid_and_optuna
    spec = load_spec(search.spec)
    manifest = json.loads((search.results / "manifest.json").read_text())
    assert len(manifest["trials"]) == spec.search.num_samples == 8
    assert {t["status"] for t in manifest["trials"]} == {"TERMINATED"}
    df = search.frame()
    assert df["search_pareto"].null_count() == 0 and df["search_pareto"].any()
    written = json.loads((search.results / "optuna-pareto.json").read_text())
    assert written["metric"] == ["clean_acc", "robust_acc@pgd-linf-0.1"] and written["trials"] == 8
    assert {p["trial_id"] for p in written["pareto"]} == set(df.filter("search_pareto")["trial_id"])


def test_optuna_pareto_set_is_the_exact_front_of_its_final_results(grid_and_optuna):
    _, search = grid_and_optuna
    at = frontier.pareto(search.frame().filter(POINT))
    # Optuna's best_trials and our exact frontier agree on the same final numbers.
    assert at.filter(pl.col("search_pareto") != pl.col("on_frontier")).is_empty()


def test_search_reproduces_the_grid_numbers_of_the_configs_it_picked(grid_and_optuna):
    grid, search = grid_and_optuna
    cols = ["label", "clean_acc", "robust_acc"]
    picked = search.frame().filter(POINT).select(cols).unique()
    same = picked.join(grid.frame().filter(POINT).select(cols), on="label", suffix="_grid")
    assert same.height == picked.height
    assert (same["clean_acc"] == same["clean_acc_grid"]).all() and (same["robust_acc"] == same["robust_acc_grid"]).all()


def test_optuna_pareto_trials_are_on_or_near_the_grid_frontier(grid_and_optuna):
    grid, search = grid_and_optuna
    gaps = frontier.frontier_gap(search.frame().filter(POINT, pl.col("search_pareto")), grid.frame().filter(POINT))
    assert gaps.height == search.frame().filter(POINT, pl.col("search_pareto"))["trial_id"].n_unique()
    print(gaps.select("label", "clean_acc", "robust_acc", "gap", "nearest"))
    assert gaps["gap"].max() <= 0.05
    assert (gaps["gap"] == 0).any()  # the search found at least one model of the exact frontier


def test_asha_stops_a_hopeless_config_and_only_finished_trials_have_rows(ray_session, tmp_path, capsys):
    sweep = Sweep(SPECS / "asha.yaml", tmp_path / "results")
    code, out = sweep.run(capsys)
    assert code == 0
    trials = {t["label"]: t for t in json.loads((sweep.results / "manifest.json").read_text())["trials"]}
    good, hopeless = trials["mlp lr=0.003"], trials["mlp lr=1e-06"]
    assert good["status"] == "TERMINATED" and good["epochs_trained"] == 4 and good["rows"] == 4
    assert hopeless["status"] == "STOPPED" and hopeless["epochs_trained"] == 1 and hopeless["rows"] is None
    df = sweep.frame()
    assert set(df["label"]) == {"mlp lr=0.003"} and df.height == 4  # the frontier sees final results only
    assert "stopped early by the scheduler: 1 trials" in out


def test_single_objective_optuna_marks_its_best_trial(grid_and_optuna, tmp_path, capsys):
    import yaml

    _, search = grid_and_optuna
    raw = yaml.safe_load(search.spec.read_text())
    raw["name"] = "frontier-optuna-robust"
    raw["search"].update(metric="robust_acc@pgd-linf-0.1", mode="max", num_samples=4)
    spec = tmp_path / "single.yaml"
    spec.write_text(yaml.safe_dump(raw))
    # A sibling of the module's results folders: the same store, so nothing is trained again.
    single = Sweep(spec, search.results.parent / "single")
    code, _ = single.run(capsys)
    assert code == 0
    at = single.frame().filter(POINT)
    assert at["trial_id"].n_unique() >= 1
    best = at.filter(pl.col("robust_acc") == at["robust_acc"].max())
    assert set(at.filter("search_pareto")["trial_id"]) == set(best["trial_id"])


def test_repeats_of_a_grid_are_distinct_trials_with_their_own_seeds():
    """num_samples: 3 on a grid used to run each config three times with the same seed and the
    same trial id (one file, overwritten): now each repeat is a seed of its own."""
    from study.spec import parse_spec
    from study.trial import trial_id
    from study.spec import TrainConfig

    spec = parse_spec({
        "name": "repeats", "seed": 5, "train": {"model": {"grid": ["logreg", "mlp"]}},
        "evaluate": [{"evaluator": "rubbish"}], "search": {"kind": "grid", "num_samples": 3},
    })
    configs = planning.grid_configs(spec)
    assert len(configs) == planning.n_trials(spec) == 6
    assert sorted((c["model"], c["seed"]) for c in configs) == [(m, s) for m in ("logreg", "mlp") for s in (5, 6, 7)]
    assert len({trial_id(spec.name, TrainConfig.model_validate(c)) for c in configs}) == 6
    assert "seed" in spec.label_axes()
