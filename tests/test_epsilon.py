"""The epsilon study end to end (tests/specs/epsilon.yaml): a CNN and a triplet network, class
distances, crafted images, per-class eps and the embedding evaluator, through a real sweep."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from analysis import epsilon
from analysis.load import read_artifact
from study import planning
from study.spec import load_spec


@pytest.fixture(scope="module")
def frame(epsilon_sweep):
    return epsilon_sweep.frame()


def test_every_row_is_written_and_labels_name_the_variant(epsilon_sweep, frame):
    assert frame.height == planning.expected_rows(load_spec(epsilon_sweep.spec))
    assert sorted(frame["label"].unique()) == ["cnn", "triplet margin=0.5"]
    assert frame.filter(pl.col("model") == "triplet")["margin"].unique().to_list() == [0.5]
    # Only the triplet network has an embedding.
    assert frame.filter(pl.col("evaluator") == "embedding")["model"].unique().to_list() == ["triplet"]


def test_class_distances(epsilon_sweep, frame):
    cells = read_artifact(str(epsilon_sweep.results), "class_distances")
    for (trial, norm, per_class), m in cells.group_by("trial_id", "norm", "per_class"):
        matrix = np.zeros((10, 10))
        matrix[m["class_a"].to_numpy(), m["class_b"].to_numpy()] = m["mean"].to_numpy()
        assert np.allclose(matrix, matrix.T)
    # The source text: every Linf cell is about 1 (some pixel is ink in one image, background in the other).
    linf = cells.filter(pl.col("norm") == "linf")["mean"]
    assert linf.min() > 0.95 and linf.max() <= 1
    rows = frame.filter(pl.col("evaluator") == "distances")
    # Under L0 most classes are closer to another class (the 1s) than to themselves.
    l0 = rows.filter(pl.col("norm") == "l0", pl.col("per_class") == 50)
    assert (l0["within_smaller_rate"] < 0.5).all()
    # The input-space distances do not depend on the model: both trials report the same numbers.
    assert rows.group_by("norm", "per_class", "eps_quantile").agg(pl.col("eps").n_unique())["eps"].max() == 1


def test_crafted_images_stay_inside_the_linf_ball(epsilon_sweep, frame):
    images = read_artifact(str(epsilon_sweep.results), "crafted_images")
    for trial, art in images.group_by("trial_id"):
        x0 = {r["class_a"]: np.asarray(r["pixels"], dtype=np.float64) for r in art.filter(pl.col("kind") == "x0").iter_rows(named=True)}
        crafted = art.filter(pl.col("kind") == "crafted")
        assert crafted.height == 90 * 3
        for r in crafted.iter_rows(named=True):
            x = np.asarray(r["pixels"], dtype=np.float64)
            assert np.abs(x - x0[r["class_a"]]).max() <= r["eps"]
            assert x.min() >= 0 and x.max() <= 1
    rows = frame.filter(pl.col("evaluator") == "crafted").sort("eps")
    for label, r in rows.group_by("label"):
        assert (r["robust_acc"] + r["target_rate"] <= 1).all()
        assert r["linf_mean"].max() <= 0.3 + 1e-6  # a float32 mean; the exact bound is checked on the pixels above


def test_per_class_eps(epsilon_sweep, frame):
    suggested = read_artifact(str(epsilon_sweep.results), "class_eps").filter(pl.col("norm") == "l2", pl.col("per_class") == 50)
    art = read_artifact(str(epsilon_sweep.results), "class_eps_robustness")
    joined = art.join(suggested.select("trial_id", "quantile", "class", pl.col("eps").alias("suggested")), on=["trial_id", "quantile", "class"])
    assert joined.height == art.height
    assert np.allclose(joined["eps"], joined["suggested"])  # the robustness evaluator attacks at the distances' suggestions
    rows = frame.filter(pl.col("eps_rule").is_not_null())
    for (trial, q), a in art.filter(pl.col("attack") == "worst").group_by("trial_id", "quantile"):
        # The uniform eps is the mean over the evaluation points of their class's eps.
        assert a["eps_uniform"][0] == pytest.approx((a["eps"] * a["n"]).sum() / a["n"].sum())
        for rule, column in (("per-class", "acc_per_class"), ("uniform", "acc_uniform")):
            row = rows.filter(pl.col("trial_id") == trial, pl.col("eps_quantile") == q, pl.col("eps_rule") == rule, pl.col("attack") == "worst")
            assert row["eps"][0] == pytest.approx(a["eps_uniform"][0])
            # Per-class accuracies weighted by class size give the row's accuracy.
            assert row["robust_acc"][0] == pytest.approx((a[column] * a["n"]).sum() / a["n"].sum())


def test_the_triplet_embedding(epsilon_sweep, frame):
    emb = frame.filter(pl.col("evaluator") == "embedding")
    summary = emb.filter(pl.col("attack").is_null()).row(0, named=True)
    assert summary["knn_acc"] >= 0.9  # the embedding separates the classes
    assert summary["within_mean"] < summary["between_mean"]
    adv = read_artifact(str(epsilon_sweep.results), "embedding_adversaries")
    constrained = adv.filter(pl.col("attack") == "embedding-pgd")
    assert (constrained["embed_dist"] <= constrained["embed_eps"]).all()
    pgd = emb.filter(pl.col("attack") == "pgd").sort("norm", "embed_eps")
    for norm, rows in pgd.group_by("norm"):
        inside = rows["inside_rate"].to_list()
        assert inside == sorted(inside)
        fooled = adv.filter(pl.col("attack") == "pgd", pl.col("norm") == norm[0], pl.col("fooled"))
        assert inside[-1] == pytest.approx((fooled["embed_dist"] <= rows["embed_eps"][-1]).mean())


def test_every_model_measured_in_the_triplet_embedding(epsilon_sweep, frame):
    rows = frame.filter(pl.col("evaluator") == "embedding-transfer")
    triplet = frame.filter(pl.col("model") == "triplet")["trial_id"][0]
    assert rows["source_trial_id"].unique().to_list() == [triplet]
    assert sorted(rows["label"].unique()) == ["cnn", "triplet margin=0.5"]
    assert rows.height == 2 * 2 * (1 + 2)  # (cnn, triplet) x embed_eps x (embedding PGD, PGD linf, PGD l2)
    for (label, norm), r in rows.filter(pl.col("attack") == "pgd").sort("embed_eps").group_by("label", "norm"):
        inside = r["inside_rate"].drop_nulls().to_list()
        assert inside == sorted(inside)
    # The CNN's embedding-space adversaries stay inside the triplet's ball (by construction) and
    # its clean accuracy is its own.
    cnn = rows.filter(pl.col("label") == "cnn", pl.col("attack") == "embedding-pgd")
    assert (cnn["embed_dist_mean"].drop_nulls() <= cnn.filter(pl.col("embed_dist_mean").is_not_null())["embed_eps"]).all()
    assert cnn["clean_acc"][0] > 0.8
    # The report's table: one row per (embedding, model), its cells the rows' numbers.
    table = epsilon.embedding_transfer_table(frame)
    assert table["model"].to_list() == ["cnn", "triplet margin=0.5"]
    cell = rows.filter(pl.col("label") == "cnn", pl.col("attack") == "pgd", pl.col("norm") == "linf", pl.col("embed_eps") == 1.0)["inside_rate"][0]
    assert table.filter(pl.col("model") == "cnn")["e=1 inside linf 0.3"][0] == cell


def test_trivial_adversaries_bound_the_attacks(epsilon_sweep, frame):
    """Condition (2) on real digits: the share of correct points within eps of a misclassified
    digit of their own class grows with eps; at Linf 1 (any image reachable) it takes every
    correct point of a class with a mistake among the evaluation points; and the study's attacks
    at L2 1.5 leave no more robust accuracy than that bound."""
    from study.evaluators.trivial import table

    trivial = frame.filter(pl.col("evaluator") == "trivial")
    assert trivial.height == 2 * 5
    nearest = read_artifact(str(epsilon_sweep.results), "trivial_nearest")
    for (tid,), rows in trivial.group_by("trial_id"):
        for norm in ("linf", "l2"):
            rates = rows.filter(pl.col("norm") == norm).sort("eps").get_column("trivial_rate").to_list()
            assert rates == sorted(rates)
        points = nearest.filter(pl.col("trial_id") == tid, pl.col("norm") == "linf")
        with_mistake = points.filter(~pl.col("correct")).get_column("class").unique()
        floor = points.filter(pl.col("correct"), pl.col("class").is_in(with_mistake.implode())).height / points.height
        at_1 = rows.filter(pl.col("norm") == "linf", pl.col("eps") == 1.0).row(0, named=True)
        reachable = points.filter(pl.col("correct"), pl.col("mistaken_same").is_finite()).height / points.height
        assert 0 < floor <= reachable and at_1["trivial_rate"] == pytest.approx(reachable)
        assert at_1["robust_bound"] == pytest.approx(at_1["clean_acc"] - at_1["trivial_rate"], abs=1e-6)
    side = table(trivial, frame).filter(pl.col("norm") == "l2", pl.col("eps") == 1.5)
    assert side.height == 2 and side.get_column("attacked_acc").is_not_null().all()
    assert (side.get_column("attacked_acc") <= side.get_column("robust_bound") + 1e-9).all()
