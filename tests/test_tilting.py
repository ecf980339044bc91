"""Boundary tilting on the real data (search_spaces/tilting.yaml): linear SVMs on MNIST 2 vs 3
over eight decades of lambda, and the geometry evaluator's numbers against Tanay's account."""

from __future__ import annotations

import polars as pl
import pytest
import torch
from scipy.stats import spearmanr

from analysis.load import read_artifact
from study import data, geometry, models, planning
from study.spec import DataSpec, TrainConfig, load_spec
from study.store import ModelStore, model_key
from study.train import init_model, predict, train


@pytest.fixture(scope="module")
def geo(tilting_sweep) -> pl.DataFrame:
    return tilting_sweep.frame().filter(pl.col("evaluator") == "geometry").sort("l2")


def _method(geo, attack, norm):
    return geo.filter(pl.col("attack") == attack, pl.col("norm") == norm).sort("l2")


def test_theta_falls_as_lambda_grows_and_spans_both_regimes(geo):
    per_trial = _method(geo, "closed-form", "l2")
    assert per_trial.height == 17 and per_trial["l2"].n_unique() == 17
    lam, theta = per_trial["l2"].to_list(), per_trial["theta_deg"].to_list()
    assert max(lam) / min(lam) >= 1e6
    assert spearmanr(lam, theta).statistic <= -0.9
    assert max(theta) - min(theta) >= 45
    assert theta[-1] < 5  # strongly regularized: w is the centroid direction
    assert theta[0] > 60  # weakly regularized: the boundary tilts towards the data


def test_weak_regularization_separates_the_training_pair(tilting_sweep):
    spec = load_spec(tilting_sweep.spec)
    ds = data.load(spec.data)
    cfg = TrainConfig.model_validate(min(planning.grid_configs(spec), key=lambda c: c["l2"]))
    model = init_model(cfg, ds.input_shape, 2)
    store = ModelStore(str(tilting_sweep.results.parent / "store"))
    assert store.load(model_key(cfg.model_dump(mode="json"), ds.fingerprint), model) is not None
    x, y = torch.from_numpy(ds.x_train), torch.from_numpy(ds.y_train)
    assert (predict(model, x) == y).all()


def test_adversarial_distance_grows_with_lambda(geo):
    free = _method(geo, "closed-form", "l2")
    d = free["min_eps_median"].to_list()
    assert spearmanr(free["l2"].to_list(), d).statistic >= 0.9
    assert d[-1] > 2 * d[0]
    # Tanay's prediction follows the measured distance's trend.
    assert spearmanr(free["l2"].to_list(), free["d_adv_pred"].to_list()).statistic >= 0.9


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_bisection_agrees_with_the_exact_box_minimum(geo, norm):
    box, found = _method(geo, "closed-form-box", norm), _method(geo, "pgd-bisection", norm)
    rel = ((found["min_eps_median"] - box["min_eps_median"]) / box["min_eps_median"]).abs()
    assert rel.max() < 0.05
    # Box constraints only ever make the minimum larger than the unconstrained formula.
    free = _method(geo, "closed-form", norm)
    assert (box["min_eps_median"] >= free["min_eps_median"] * (1 - 1e-6)).all()


def test_bisection_per_point_on_a_linear_model():
    ds = data.load(DataSpec(dataset="mnist-5k", classes=[3, 7]))
    cfg = TrainConfig(model="logreg", epochs=5, lr=1e-2, seed=0)
    model = init_model(cfg, ds.input_shape, 2)
    x, y = torch.from_numpy(ds.x_train), torch.from_numpy(ds.y_train)
    xt, yt = torch.from_numpy(ds.x_test)[:80], torch.from_numpy(ds.y_test)[:80]
    train(model, cfg, x, y, xt, yt)
    ok = predict(model, xt) == yt
    w, b = models.binary_linear(model)
    for norm, hi in (("l2", 28.0), ("linf", 1.0)):
        exact = geometry.min_perturbation_box(w, b, xt[ok], norm)[0]
        found = geometry.minimal_eps_bisection(model, xt[ok], yt[ok], norm, hi=hi)
        rel = (found - exact) / exact
        assert rel.abs().median() < 0.05
        assert (rel > -1e-3).all()  # never below the exact minimum: every value is a real adversarial


def test_artifacts_for_every_trial(tilting_sweep, geo):
    trials = set(geo["trial_id"])
    plane = read_artifact(str(tilting_sweep.results), "tilting-plane")
    assert set(plane["trial_id"]) == trials
    counts = plane.group_by("trial_id", "split").len()
    # plane_points (400) per split, or the whole split when it is smaller (200 test images of 2 and 3).
    assert sorted(counts.filter(pl.col("split") == "train")["len"].unique()) == [400]
    assert sorted(counts.filter(pl.col("split") == "test")["len"].unique()) == [200]
    assert counts.height == 2 * len(trials)
    # The stored line is the classifier: wz u + wn v + offset reproduces f on every point.
    line = plane["wz"] * plane["u"] + plane["wn"] * plane["v"] + plane["offset"]
    assert ((line - plane["f"]).abs() <= 1e-3 * (1 + plane["f"].abs())).all()
    pert = read_artifact(str(tilting_sweep.results), "perturbation")
    assert set(pert["trial_id"]) == trials and pert.height == 3 * 3 * len(trials)
    assert pert["pixels"].list.len().unique().to_list() == [784]
