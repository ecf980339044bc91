"""The BNN study on the real data (tests/specs/bnn.yaml: an MC-dropout CNN, dropout 0.25):
the numbers issue 6 asks for, and expectation over transformation."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from analysis.load import read_artifact
from study import attacks, data, mc, planning
from study.norms import Linf
from study.rng import PointRNG
from study.spec import load_spec


@pytest.fixture(scope="module")
def rows(bnn_sweep) -> pl.DataFrame:
    return bnn_sweep.frame()


def _unc(rows, attack, t):
    out = rows.filter(pl.col("evaluator") == "uncertainty", pl.col("attack") == attack, pl.col("mc_samples") == t)
    assert out.height == 1, out
    return out.row(0, named=True)


def test_one_row_per_input_set_and_t(bnn_sweep, rows):
    spec = load_spec(bnn_sweep.spec)
    assert rows.height == planning.expected_rows(spec)
    unc = rows.filter(pl.col("evaluator") == "uncertainty")
    assert sorted(unc.get_column("attack").unique().to_list()) == ["clean", "cw", "fgsm", "natural"]
    assert sorted(unc.get_column("mc_samples").unique().to_list()) == [1, 2, 5, 10, 20, 50, 100]
    assert (unc.get_column("n_eval") == 400).all() and (unc.get_column("n_baseline") == 200).all()
    assert unc.get_column("row_key").n_unique() == unc.height


def test_bnn_accuracy_and_attacks_on_the_real_data(rows):
    assert _unc(rows, "clean", 100)["robust_acc"] >= 0.95
    assert _unc(rows, "fgsm", 100)["robust_acc"] <= 0.25  # FGSM Linf .3 with EOT gradients
    assert _unc(rows, "cw", 100)["robust_acc"] <= 0.10


def test_adversarial_inputs_carry_more_uncertainty(rows):
    fgsm, clean = _unc(rows, "fgsm", 100), _unc(rows, "clean", 100)
    assert fgsm["mi_rel"] > 1.5 and fgsm["mi_mean"] > 1.5 * clean["mi_mean"]
    assert fgsm["smv_rel"] > 1.5
    assert 0.7 < clean["mi_rel"] < 1.4  # two clean sets: about the same uncertainty
    for attack in ("fgsm", "cw"):
        r = _unc(rows, attack, 100)
        assert r["auroc_mi"] > 0.7 and 0 < r["auroc_mi_se"] < 0.05


def test_natural_adversaries_are_an_input_set(rows):
    """The hybrid latent search, through the 10-sample predictive, breaks most points; their
    rows carry the search and the generative model."""
    r = _unc(rows, "natural", 100)
    assert r["robust_acc"] <= 0.3
    assert (r["latent_search"], r["latent_samples"], r["latent_rounds"], r["latent_dr"]) == ("hybrid", 8, 12, 0.25)
    assert r["eot_samples"] == 10 and r["generative_key"].startswith("gen-") and r["gan_steps"] == 400
    assert r["mi_mean"] > 0 and r["auroc_mi"] is not None


def test_auroc_settles_as_samples_are_added(rows):
    for attack in ("fgsm", "cw"):
        for measure in ("auroc_mi", "auroc_smv"):
            assert abs(_unc(rows, attack, 100)[measure] - _unc(rows, attack, 50)[measure]) < 0.02
            assert _unc(rows, attack, 1)[measure] == pytest.approx(0.5)  # one sample: no uncertainty at all


def test_mi_is_zero_for_one_sample_and_grows_with_t(rows):
    unc = rows.filter(pl.col("evaluator") == "uncertainty").sort("mc_samples")
    for attack in ("clean", "fgsm", "cw"):
        mi = unc.filter(pl.col("attack") == attack).get_column("mi_mean").to_list()
        assert mi[0] == 0 and all(b > a * 0.95 for a, b in zip(mi[1:], mi[2:]))


def test_robustness_rows_of_a_stochastic_model_record_eot(rows):
    rob = rows.filter(pl.col("evaluator") == "robustness")
    assert (rob.get_column("eot_samples") == 10).all()
    fgsm = dict(rob.filter(pl.col("attack") == "fgsm").select("eps", "robust_acc").iter_rows())
    pgd = dict(rob.filter(pl.col("attack") == "pgd").select("eps", "robust_acc").iter_rows())
    assert fgsm[0.0] >= 0.95 and fgsm[0.3] <= 0.25 and fgsm[0.3] <= fgsm[0.1] <= fgsm[0.0]
    # Without early stop on lucky draws, PGD breaks the model as it breaks a deterministic CNN.
    assert pgd[0.3] <= 0.02 and pgd[0.1] <= fgsm[0.1] + 0.02


def test_per_point_artifact(bnn_sweep, rows):
    points = read_artifact(str(bnn_sweep.results), "uncertainty")
    assert points is not None
    counts = dict(points.group_by("input_set").len().iter_rows())
    assert counts == {"baseline": 200, "clean": 400, "fgsm": 400, "cw": 400, "natural": 400}
    fgsm = points.filter(pl.col("input_set") == "fgsm")
    assert fgsm.get_column("mi").mean() == pytest.approx(_unc(rows, "fgsm", 100)["mi_mean"], rel=1e-5)
    assert 1 - fgsm.get_column("wrong").mean() == pytest.approx(_unc(rows, "fgsm", 100)["robust_acc"])


@pytest.mark.parametrize("name", ["fgsm", "pgd"])
def test_eot_attacks_a_stochastic_model_at_least_as_successfully(bnn_model, name):
    """Gradients through the 10-sample predictive (EOT) against one stochastic pass: judged by
    the 100-sample predictive, EOT adversarials leave no higher accuracy."""
    model, x, y = bnn_model
    x, y = x[:300], y[:300]
    attack, eps = attacks.make(name, **({"steps": 10} if name != "fgsm" else {})), 0.1
    acc = {}
    for k in (1, 10):
        torch.manual_seed(0)
        x_adv = attack(mc.attackable(model, k), x, y, eps, Linf, rng=PointRNG.for_points(0, len(y)))
        acc[k] = (mc.sample_probs(model, x_adv, 100).mean(1).argmax(1) == y).float().mean().item()
    assert acc[10] <= acc[1], acc


def test_a_rerun_of_a_stochastic_trial_gives_identical_numbers(tmp_path):
    """Dropout masks come from torch's global generator; a Ray worker runs trials one after
    another, so before, a trial's numbers depended on what the worker ran before it. Each piece
    of a trial's evaluation now starts the generator from the trial's seed."""
    from study.spec import parse_spec
    from study.trial import StudyContext, run_trial

    spec = parse_spec({
        "name": "bnn-rerun", "data": {"dataset": "digits"},
        "train": {"model": "mc-mlp", "dropout": 0.3, "epochs": 3},
        "evaluate": [{"evaluator": "robustness", "attacks": ["fgsm", {"name": "pgd", "steps": 5}], "eot_samples": 3, "norms": {"linf": {"eps": [0, 0.1, 0.2]}}}],
        "resources": {"cpu": 1},
    })
    ds = data.load(spec.data)
    runs = []
    for noise in (1, 2):
        torch.manual_seed(noise)  # what earlier work left in the worker's generator
        torch.rand(noise * 1000)
        results = tmp_path / f"run{noise}"
        config = {name: axis.values[0] for name, axis in spec.train.items()}  # what Tune hands the trial
        run_trial(config, ds, StudyContext(spec, str(results), str(tmp_path / "store")), report=lambda *a, **k: None)
        (trial,) = (results / "trials").glob("*.parquet")
        runs.append(pl.read_parquet(trial).sort("row_key").select("row_key", "robust_acc", "clean_acc", "l2_mean"))
    assert runs[0].equals(runs[1]), pl.concat([runs[0], runs[1]], how="horizontal")
