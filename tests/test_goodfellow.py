"""Goodfellow et al. (2015) on the real data: linear and maxout models fall to FGSM, the RBF
network resists and is unsure of its mistakes, adversarial training helps and training on noise
does not, adversarial examples transfer, and noise inputs ("rubbish") get confident answers from
softmax models only."""

from __future__ import annotations

import polars as pl
import pytest


def _fgsm_error(df: pl.DataFrame, model: str, adv_eps: float | None, adv_attack: str = "fgsm") -> pl.DataFrame:
    adv = pl.col("adv_eps").is_null() if adv_eps is None else (pl.col("adv_eps") == adv_eps) & (pl.col("adv_attack") == adv_attack)
    row = df.filter(pl.col("evaluator") == "robustness", pl.col("attack") == "fgsm", pl.col("eps") == 0.25, pl.col("model") == model, adv)
    assert row.height == 1, row
    return row.row(0, named=True)


# The full study (search_spaces/goodfellow.yaml, 20 models, about 200 s on 2 cores) runs on purpose (`pytest -m
# slow`); tests/specs/transfer.yaml covers the same evaluators in the default run.
SLOW = pytest.mark.slow


@pytest.fixture(scope="module")
def full(goodfellow_full_sweep) -> pl.DataFrame:
    return goodfellow_full_sweep.frame()


@SLOW
def test_rbf_resists_fgsm_and_is_unsure_of_its_mistakes(full):
    logreg, rbf = _fgsm_error(full, "logreg", None), _fgsm_error(full, "rbf", None)
    assert 1 - logreg["robust_acc"] >= 0.9
    assert 1 - rbf["robust_acc"] < 1 - logreg["robust_acc"]
    assert rbf["adv_confidence_mean"] < 0.3 < logreg["adv_confidence_mean"]


@SLOW
def test_adversarial_training_halves_the_maxout_error(full):
    before, after = _fgsm_error(full, "maxout", None), _fgsm_error(full, "maxout", 0.25)
    assert after["adv_alpha"] == 0.5
    assert 1 - after["robust_acc"] <= 0.5 * (1 - before["robust_acc"])


@SLOW
def test_noise_training_is_no_substitute_for_adversarial_training(full):
    # The paper: maxout trained on +-eps sign noise or U(-eps, eps) noise keeps 86.2% and 90.4%
    # error on FGSM examples, against 17.9% with adversarial training.
    for model in ("maxout", "cnn", "logreg"):
        adversarial = 1 - _fgsm_error(full, model, 0.25)["robust_acc"]
        for noise in ("noise-sign", "noise-uniform"):
            trained = _fgsm_error(full, model, 0.25, noise)
            assert trained["adv_alpha"] == 0.5
            assert 1 - trained["robust_acc"] >= adversarial + 0.15, (model, noise)
            assert 1 - trained["robust_acc"] >= 0.8 * (1 - _fgsm_error(full, model, None)["robust_acc"]), (model, noise)


@SLOW
def test_rubbish_inputs_fool_softmax_models_not_the_rbf(full):
    rubbish = full.filter(pl.col("evaluator") == "rubbish", pl.col("adv_eps").is_null())
    by_model = dict(zip(rubbish["model"], rubbish["rubbish_confident"]))
    assert set(by_model) == {"logreg", "maxout", "rbf", "cnn"}
    assert by_model["rbf"] < 0.05
    assert min(by_model[m] for m in ("logreg", "maxout", "cnn")) > 0.5


@SLOW
def test_transfer_matrix_covers_every_pair(full):
    tr = full.filter(pl.col("evaluator") == "transfer")
    n = full["trial_id"].n_unique()
    assert tr.height == n * n and tr.select("source_trial_id", "trial_id").n_unique() == n * n
    diag = tr.filter(pl.col("source_trial_id") == pl.col("trial_id"))
    assert (diag["agreement"] == 1).all()
    off = tr.filter(pl.col("source_trial_id") != pl.col("trial_id"))
    # Adversarial examples transfer: a standard model's FGSM examples fool other standard models
    # much more often than those models err on clean inputs.
    std = off.filter(pl.col("adv_eps").is_null(), pl.col("source_label").str.ends_with("adv=none"))
    assert (std["transfer_error"] > (1 - std["clean_acc"]) + 0.1).all()


def test_small_transfer_study_rows(transfer_sweep):
    df = transfer_sweep.frame()
    trials = df["trial_id"].n_unique()
    assert trials == 3
    tr = df.filter(pl.col("evaluator") == "transfer")
    assert tr.height == trials * trials * 2 and set(tr["eps"]) == {0.1, 0.25}
    assert tr["transfer_error"].is_between(0, 1).all() and tr["agreement"].drop_nulls().is_between(0, 1).all()
    # The diagonal is each model's own error under the same attack as the robustness evaluator's.
    diag = tr.filter(pl.col("source_trial_id") == pl.col("trial_id"), pl.col("eps") == 0.25).sort("trial_id")
    rob = df.filter(pl.col("evaluator") == "robustness", pl.col("attack") == "fgsm", pl.col("eps") == 0.25).sort("trial_id")
    assert ((diag["transfer_error"] - (1 - rob["robust_acc"])).abs() <= 0.01).all()
    # Non-linear models get the PGD bisection only; the closed forms need a linear two-class model.
    geo = df.filter(pl.col("evaluator") == "geometry")
    assert set(geo["attack"]) == {"pgd-bisection"} and geo.height == trials
    assert geo["theta_deg"].is_null().all() and (geo["min_eps_median"] > 0).all()
    from study import planning
    from study.spec import load_spec

    assert df.height == planning.expected_rows(load_spec(transfer_sweep.spec))
