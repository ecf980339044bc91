"""A features study end to end (tests/specs/features.yaml, scikit-learn's digits): the source
models and every constructed set built once before the trials, a model trained on each set and
measured on the original test split, the source's transfer rows, the Gaussian artifact and the
report's sections."""

from __future__ import annotations

import json

import polars as pl
import pytest
import torch

from analysis.load import read_artifact
from study import data, features
from study.spec import load_spec
from study.store import ModelStore


@pytest.fixture(scope="module")
def df(features_sweep) -> pl.DataFrame:
    return features_sweep.frame()


def test_every_set_is_built_once_and_recorded(features_sweep, df):
    sets = json.loads((features_sweep.results / "features" / "sets.json").read_text())
    assert [s["name"] for s in sets] == ["D_R steps=100", "D_NR start=noise steps=100", "D_rand eps=1.5 steps=30", "D_det eps=1.5 steps=30", "D_shuf steps=100"]
    for s in sets:
        assert (features_sweep.results / "features" / f"{s['key']}.png").read_bytes()[:4] == b"\x89PNG"
        rows = df.filter(pl.col("set_key") == s["key"])
        assert rows.get_column("model").unique().sort().to_list() == ["cnn", "logreg"]
        assert (rows.get_column("set_n") == 1437).all()
    by_kind = {s["kind"]: s for s in sets}
    assert by_kind["robust"]["rep_reduction"] > 0.8 and by_kind["non-robust"]["rep_reduction"] > 0.8
    assert by_kind["det"]["label_agreement"] == 0 and by_kind["det"]["target_rate"] > 0.5
    assert by_kind["robust"]["source"] == "robust" and by_kind["det"]["source"] == "standard"
    # The control changes the images about as much as its D_R (clamping to [0, 1] trims a little).
    assert by_kind["shuffled"]["source"] == "robust" and by_kind["shuffled"]["label_agreement"] == 1
    assert 0.5 * by_kind["robust"]["l2_mean"] < by_kind["shuffled"]["l2_mean"] <= by_kind["robust"]["l2_mean"] * 1.05


def test_trials_train_on_the_stored_set_with_its_labels(features_sweep, df):
    spec = load_spec(features_sweep.spec)
    ds = data.load(spec.data)
    det = next(s for s in spec.train_sets() if s.kind == "det")
    key = features.set_key(spec, det, ds.fingerprint)
    x, y, meta = features.stored(key, ds.x_train.shape, ModelStore(str(features_sweep.results.parent / "store")), "cpu")
    assert torch.equal(y, (torch.from_numpy(ds.y_train) + 1) % 10)
    assert (x - torch.from_numpy(ds.x_train)).flatten(1).norm(dim=1).max() <= 1.5 + 1e-4
    row = df.filter(pl.col("set_key") == key).row(0, named=True)
    assert row["set_target_rate"] == pytest.approx(meta["target_rate"]) and row["train_set"] == "det" and row["set_eps"] == 1.5
    assert "D_det eps=1.5" in row["label"]


def test_the_control_permutes_its_d_r_changes(features_sweep):
    spec = load_spec(features_sweep.spec)
    ds = data.load(spec.data)
    store = ModelStore(str(features_sweep.results.parent / "store"))
    shuffled = next(s for s in spec.train_sets() if s.kind == "shuffled")
    x = torch.from_numpy(ds.x_train)
    xr = features.stored(features.set_key(spec, features.matched_set(shuffled), ds.fingerprint), ds.x_train.shape, store, "cpu")[0]
    xs, ys, _ = features.stored(features.set_key(spec, shuffled, ds.fingerprint), ds.x_train.shape, store, "cpu")
    assert torch.equal(ys, torch.from_numpy(ds.y_train))
    assert torch.equal(xs, features.shuffle_changes(x, xr, torch.Generator().manual_seed(spec.seed)))


def test_accuracy_on_the_original_test_split(df):
    rob = df.filter(pl.col("evaluator") == "robustness", pl.col("attack") == "pgd")
    assert rob.get_column("trial_id").n_unique() == 12 and (rob.get_column("n_eval") == 360).all()
    clean = rob.filter(pl.col("eps") == 0)
    acc = {(r["model"], r["train_set"]): r["clean_acc"] for r in clean.iter_rows(named=True)}
    # D and D_NR teach the digits; D_det's labels are all shifted, yet its images carry the
    # source's non-robust features of the shifted class: whatever it learns, it is measured
    # against the true labels of the untouched test split.
    assert acc[("cnn", None)] > 0.9 and acc[("cnn", "non-robust")] > 0.5
    assert all(0 <= a <= 1 for a in acc.values())


def test_transfer_rows_from_the_standard_source(df):
    tr = df.filter(pl.col("evaluator") == "features")
    assert tr.height == 12 and tr.get_column("source_label").unique().to_list() == ["source cnn"]
    assert tr.get_column("source_trial_id").n_unique() == 1 and tr.get_column("transfer_error").is_between(0, 1).all()
    d = {r["model"]: r["transfer_error"] for r in tr.filter(pl.col("train_set").is_null()).iter_rows(named=True)}
    # The cnn trained on D has the source's exact config: the same model from the store, so its
    # error is the source's own under the attack.
    assert d["cnn"] > 0.5


def test_gaussian_artifact(features_sweep):
    g = read_artifact(str(features_sweep.results), "gaussian")
    assert g.get_column("eps").to_list() == [0.0, 1.0, 2.0]
    aniso = g.get_column("anisotropy").to_list()
    assert aniso[0] > aniso[1] > aniso[2] > 1


def test_report_sections(features_sweep, tmp_path):
    from analysis.report import write_report

    index = write_report(str(features_sweep.results), tmp_path / "report")
    page = index.read_text()
    for title in ("Constructed training sets", "Accuracy on the original test set", "Robust accuracy: D_R against D", "The Gaussian model", "Transfer from the standard source"):
        assert title in page, title
    for stem in ("features-accuracy", "features-transfer", "gaussian-covariance", "gaussian-blend"):
        assert (tmp_path / "report" / f"{stem}.png").stat().st_size > 1000, stem
    assert len(list((tmp_path / "report").glob("features-set-*.png"))) == 5
    assert "over_shuf" in page
