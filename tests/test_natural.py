"""Natural adversaries and the reconstruction defense on a real sweep at test size
(tests/specs/natural.yaml: a small generative model, a CNN and logistic regression).

The search's known answers are in test_latent.py; here: the generative model is trained once
for the sweep and reused, the rows hold what the searches and the defense did, and they agree
with the stored models when recomputed outside the sweep."""

from __future__ import annotations

import json

import polars as pl
import pytest
import torch
from PIL import Image

from analysis.load import read_artifact
from study import data, generative
from study.spec import load_spec
from study.store import ModelStore
from study.train import predict
from study.trial import StudyContext, prepare_generative


def _manifest(sweep) -> dict:
    return json.loads((sweep.results / "manifest.json").read_text())


def _generative(sweep):
    spec = load_spec(sweep.spec)
    ds = data.load(spec.data)
    model, meta = generative.trained(spec.generative, torch.from_numpy(ds.x_train), ds.fingerprint, ModelStore(str(sweep.results.parent / "store")), progress=False)
    return model, meta


def test_the_generative_model_is_trained_once_for_the_sweep(natural_sweep):
    gen = _manifest(natural_sweep)["generative"]
    assert gen["from_store"] is False and gen["train_s"] > 0
    stored = sorted(p.stem for p in (natural_sweep.results.parent / "store" / "models").glob("gen-*.pt"))
    assert stored == [gen["key"]]
    used = natural_sweep.frame().filter(pl.col("evaluator").is_in(["natural", "reconstruction"]))
    assert used.get_column("trial_id").n_unique() == 2
    assert used.get_column("generative_key").unique().to_list() == [gen["key"]]
    assert used.get_column("gan_steps").unique().to_list() == [400]
    for name, rows in (("samples.png", 8), ("reconstructions.png", 8)):
        img = Image.open(natural_sweep.results / "generative" / name)
        assert img.size == (8 * 30 + 2, rows * 30 + 2)


def test_a_second_sweep_finds_the_generative_model_in_the_store(natural_sweep, tmp_path):
    spec = load_spec(natural_sweep.spec)
    ds = data.load(spec.data)
    study = StudyContext(spec=spec, results_uri=str(tmp_path / "results"), store_uri=str(natural_sweep.results.parent / "store"))
    meta = prepare_generative(study, ds)
    assert meta["from_store"] is True and meta["key"] == _manifest(natural_sweep)["generative"]["key"]
    assert (tmp_path / "results" / "generative" / "samples.png").exists()


@pytest.fixture(scope="module")
def natural_rows(natural_sweep):
    return natural_sweep.frame().filter(pl.col("evaluator") == "natural")


def test_success_grows_with_the_budget_and_queries_stay_within_it(natural_rows):
    assert natural_rows.height == 2 * 2 * 4  # models x search kinds x budgets
    for (label, kind), group in natural_rows.group_by("label", "latent_search"):
        g = group.sort("latent_rounds")
        success = g.get_column("success_rate").to_list()
        assert success == sorted(success), (label, kind, success)
        assert success[-1] >= 0.8, (label, kind, success)
        budget = (g.get_column("latent_samples") * g.get_column("latent_rounds")).to_list()
        assert all(q <= b for q, b in zip(g.get_column("queries_mean").to_list(), budget))
        assert g.get_column("queries_mean").first() == 16  # one round: every point spends N queries
        # robust accuracy: the correct points the search left unbroken, over all points
        clean = g.get_column("clean_acc").first()
        assert g.get_column("robust_acc").to_list() == pytest.approx([clean * (1 - s) for s in success])


def test_the_hybrid_search_finds_closer_adversaries_per_query_at_small_budgets(natural_rows):
    """At a budget of 3 rounds the iterative search has only looked within 3 dr of I(x)."""
    at3 = natural_rows.filter(pl.col("latent_rounds") == 3)
    for label, g in at3.group_by("label"):
        by = {r["latent_search"]: r for r in g.iter_rows(named=True)}
        assert by["hybrid"]["success_rate"] > by["iterative"]["success_rate"], label
        assert by["iterative"]["latent_dist_mean"] <= 3 * 0.25


def test_natural_adversaries_fool_the_model_and_the_images_are_kept(natural_sweep):
    images = read_artifact(str(natural_sweep.results), "natural_images")
    assert images is not None
    assert images.get_column("trial_id").n_unique() == 2
    x = images.filter(pl.col("kind") == "x")
    assert (x.get_column("pred") == x.get_column("label")).all()  # searched from correct points
    nat = images.filter(pl.col("kind") == "natural", pl.col("pred").is_not_null())
    assert nat.height > 0 and (nat.get_column("pred") != nat.get_column("label")).all()
    points = read_artifact(str(natural_sweep.results), "natural")
    cnn, x_test, y_test = natural_sweep.stored_model(lambda cfg: cfg["model"] == "cnn")
    cnn_id = natural_sweep.frame().filter(pl.col("model") == "cnn").get_column("trial_id").first()
    searched = points.filter(pl.col("trial_id") == cnn_id, pl.col("latent_search") == "iterative").get_column("point").to_list()
    # `point` is the evaluation index: the correctly classified ones among the first 100
    assert searched == (predict(cnn, x_test[:100]) == y_test[:100]).nonzero().squeeze(1).tolist()
    final = natural_sweep.frame().filter(pl.col("evaluator") == "natural", pl.col("latent_rounds") == 30)
    for r in final.iter_rows(named=True):
        mine = points.filter(pl.col("trial_id") == r["trial_id"], pl.col("latent_search") == r["latent_search"])
        assert mine.get_column("found").mean() == pytest.approx(r["success_rate"])
        assert mine.get_column("latent_dist").mean() == pytest.approx(r["latent_dist_mean"])


def test_reconstruction_rows_match_the_stored_models(natural_sweep):
    rows = natural_sweep.frame().filter(pl.col("evaluator") == "reconstruction")
    assert rows.height == 2 * 4  # clean, FGSM at two eps, natural
    g, _ = _generative(natural_sweep)
    cnn, x, y = natural_sweep.stored_model(lambda cfg: cfg["model"] == "cnn")
    x, y = x[:300], y[:300]
    clean = rows.filter(pl.col("model") == "cnn", pl.col("attack") == "clean").row(0, named=True)
    assert clean["robust_acc"] == clean["clean_acc"] == pytest.approx((predict(cnn, x) == y).float().mean().item())
    assert clean["recon_acc"] == pytest.approx((predict(cnn, g.reconstruct(x)) == y).float().mean().item())
    for r in rows.filter(pl.col("attack") != "clean").iter_rows(named=True):
        assert r["robust_acc"] < r["clean_acc"] - 0.2, r
    # FGSM at Linf .3 leaves almost nothing; projecting through G(I(.)) gives some of it back.
    for r in rows.filter(pl.col("attack") == "fgsm", pl.col("eps") == 0.3).iter_rows(named=True):
        assert r["recon_acc"] > r["robust_acc"], r


def test_the_sweep_summary_prints_both_evaluators(natural_sweep, capsys):
    import pyarrow.parquet as pq

    from jobs.sweep import print_summary

    table = pq.read_table(natural_sweep.results / "results.parquet")
    print_summary(table, _manifest(natural_sweep)["trials"], "r", "m", "u")
    out = capsys.readouterr().out
    assert "Natural adversaries at the largest budget" in out and "Reconstruction defense" in out
    assert out.count("fgsm-linf-0.3") == 2  # one line per model


def test_the_report_shows_the_study(natural_sweep, tmp_path, charts_render):
    from analysis.report import write_report

    index = write_report(str(natural_sweep.results), tmp_path / "report")
    page = index.read_text()
    for title in ("Natural adversaries: success by budget", "Natural adversaries: paired latent distances", "The reconstruction defense"):
        assert f"<h2>{title}</h2>" in page, title
    for stem in ("generative-samples", "generative-reconstructions", "natural-strip"):
        assert Image.open(index.parent / f"{stem}.png").size[0] > 200, stem
    charts_render(index, ("natural-success", "natural-distance", "reconstruction"))
