"""The distances evaluator (study.evaluators.distances) against plain numpy loops: pairwise
distances under L0 / L1 / L2 / Linf, the class x class matrix, nearest-other-class distances,
per-class eps suggestions, the seeded sample, and the rows and artifacts the evaluator writes
(the robustness evaluator's ``class_eps`` must be the same numbers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.load import read_artifact
from study import models
from study.evaluators import EvalContext, distances
from study.seeds import stream_seed
from study.results import to_table
from study.evaluators.distances import Options as DistancesEval

NORMS = ("l0", "l1", "l2", "linf")


def _images(n_per_class=(5, 5, 5), seed=0, levels=None):
    """Images (N, 1, 8, 8) in [0, 1] grouped by class; ``levels``: pixels take that many values
    (repeated values, so pixels are often equal and L0 is not simply the dimension)."""
    rng = np.random.default_rng(seed)
    n = sum(n_per_class)
    x = rng.random((n, 1, 8, 8)) if levels is None else rng.integers(0, levels, (n, 1, 8, 8)) / (levels - 1)
    y = np.repeat(np.arange(len(n_per_class)), n_per_class)
    return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)


def _brute_pairwise(a, b, norm):
    a = a.reshape(len(a), -1).numpy().astype(np.float64)
    b = b.reshape(len(b), -1).numpy().astype(np.float64)
    out = np.zeros((len(a), len(b)))
    for i in range(len(a)):
        for j in range(len(b)):
            diff = a[i] - b[j]
            out[i, j] = {
                "l0": lambda: np.count_nonzero(diff),
                "l1": lambda: np.abs(diff).sum(),
                "l2": lambda: np.sqrt((diff**2).sum()),
                "linf": lambda: np.abs(diff).max(),
            }[norm]()
    return out


def _brute_class_matrix(d, ys, n_classes):
    m = np.zeros((n_classes, n_classes))
    for a in range(n_classes):
        for b in range(n_classes):
            vals = [d[i, j] for i in range(len(ys)) for j in range(len(ys)) if ys[i] == a and ys[j] == b and i != j]
            m[a, b] = np.mean(vals)
    return m


def _brute_nearest_other(d, ys):
    return np.array([min(d[i, j] for j in range(len(ys)) if ys[j] != ys[i]) for i in range(len(ys))])


@pytest.mark.parametrize("levels", [None, 3])
@pytest.mark.parametrize("norm", NORMS)
def test_pairwise_matches_brute_force(norm, levels):
    x, _ = _images(levels=levels)
    other, _ = _images((2, 2, 3), seed=1, levels=levels)
    want = _brute_pairwise(x, other, norm)
    for chunk in (1, 4, 1024):  # chunked over rows: the same numbers
        got = distances.pairwise(x, other, norm, chunk=chunk)
        assert got.dtype == torch.float64 and got.shape == (15, 7)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=0)
    if levels:
        assert len(np.unique(want)) > 1 or norm == "linf"  # repeated pixel values: L0 really varies
        if norm == "l0":
            assert want.max() < 64


@pytest.mark.parametrize("levels", [None, 3])
@pytest.mark.parametrize("norm", NORMS)
def test_class_matrix_and_nearest_other_match_brute_force(norm, levels):
    x, y = _images(levels=levels)
    d = distances.pairwise(x, x, norm)
    assert torch.equal(d, d.T) and (d.diagonal() == 0).all()
    m = distances.class_matrix(d, y, 3)
    want = _brute_class_matrix(d.numpy(), y.numpy(), 3)
    np.testing.assert_allclose(m.numpy(), want, rtol=1e-12, atol=0)
    np.testing.assert_allclose(m.numpy(), m.numpy().T, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(distances.nearest_other(d, y).numpy(), _brute_nearest_other(d.numpy(), y.numpy()))


def test_the_within_class_mean_excludes_an_image_paired_with_itself():
    d = torch.tensor([[5.0, 2.0, 9.0], [2.0, 5.0, 9.0], [9.0, 9.0, 5.0]], dtype=torch.float64)  # a nonzero diagonal is ignored
    ys = torch.tensor([0, 0, 1])
    m = distances.class_matrix(d, ys, 2)
    assert m[0, 0] == 2.0 and m[0, 1] == m[1, 0] == 9.0
    assert m[1, 1].isnan()  # one image: no pair
    assert distances.pair_counts(ys, 2).tolist() == [[2.0, 2.0], [2.0, 0.0]]


def test_eps_suggestions_are_linear_quantiles_times_the_fraction():
    rng = np.random.default_rng(3)
    nearest = rng.random(17) * 10
    ys = np.array([0] * 6 + [1] * 4 + [2] * 7)
    qs = [0.0, 0.1, 0.5, 0.93, 1.0]
    got = distances.eps_suggestions(torch.from_numpy(nearest), torch.from_numpy(ys), 3, qs, 0.4)
    assert got.shape == (len(qs), 3)
    for c in range(3):
        want = np.quantile(nearest[ys == c], qs, method="linear") * 0.4
        np.testing.assert_allclose(got[:, c].numpy(), want, rtol=1e-12, atol=0)


def test_sample_is_seeded_per_class_and_grouped_by_class():
    _, y = _images((20, 30, 25))
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    y = y[perm]  # classes interleaved
    a = distances.sample(y, 6, seed=11, n_classes=3)
    assert torch.equal(a, distances.sample(y, 6, seed=11, n_classes=3))
    assert not torch.equal(a, distances.sample(y, 6, seed=12, n_classes=3))
    assert y[a].tolist() == [0] * 6 + [1] * 6 + [2] * 6
    assert len(set(a.tolist())) == 18  # without replacement
    # A class with fewer images than per_class gives all it has.
    small = torch.tensor([0, 1, 1, 0, 2, 2, 2, 2])
    b = distances.sample(small, 3, seed=0, n_classes=3)
    assert small[b].tolist() == [0, 0, 1, 1, 2, 2, 2]
    assert sorted(b[:4].tolist()) == [0, 1, 2, 3]


@pytest.mark.parametrize("counts", [(3, 1, 3), (3, 0, 3)])
def test_sample_rejects_a_class_with_fewer_than_two_images(counts):
    y = torch.from_numpy(np.repeat(np.arange(3), counts))
    with pytest.raises(ValueError, match="class 1 has"):
        distances.sample(y, 5, seed=0, n_classes=3)


def _ctx(tmp_path, seed=7):
    x_train, y_train = _images((9, 7, 8), seed=1, levels=4)
    x, y = _images((4, 5, 3), seed=2)
    model = models.build("logreg", (1, 8, 8), 3)
    return EvalContext(model=model, x=x, y=y, seed=seed, x_train=x_train, y_train=y_train, trial_id="t0", results_uri=str(tmp_path))


def _check_rows_and_artifacts(ctx, axes, x, y):
    rows = distances.evaluate(ctx, axes)
    to_table(rows)  # every key is a schema column
    assert len(rows) == axes.n_rows(False) == len(axes.norms) * len(axes.per_class) * len(axes.quantiles)
    cells = read_artifact(ctx.results_uri, "class_distances")
    near = read_artifact(ctx.results_uri, "nearest_other")
    eps = read_artifact(ctx.results_uri, "class_eps")
    for per_class in axes.per_class:
        idx = distances.sample(y, per_class, stream_seed(ctx.seed, "distances", per_class), 3)
        ys = y[idx].numpy()
        for norm in axes.norms:
            d = _brute_pairwise(x[idx], x[idx], norm)
            m = _brute_class_matrix(d, ys, 3)
            nearest = _brute_nearest_other(d, ys)
            sel = lambda f: f.filter((f["norm"] == norm) & (f["per_class"] == per_class)).sort("class_a" if "class_a" in f.columns else "class")  # noqa: E731
            c = sel(cells)
            assert c["split"].unique().to_list() == [axes.split]
            np.testing.assert_allclose(c["mean"].to_numpy().reshape(3, 3), m, rtol=1e-12)
            n = np.bincount(ys, minlength=3)
            assert c["n_pairs"].to_numpy().reshape(3, 3).tolist() == (np.outer(n, n) - np.diag(n)).tolist()
            nn = near.filter((near["norm"] == norm) & (near["per_class"] == per_class))
            assert nn["point"].to_list() == idx.tolist() and nn["class"].to_list() == ys.tolist()
            np.testing.assert_allclose(nn["dist"].to_numpy(), nearest, rtol=1e-12)
            off = ~np.eye(3, dtype=bool)
            for q in axes.quantiles:
                qd = np.array([np.quantile(nearest[ys == k], q, method="linear") for k in range(3)])
                e = sel(eps.filter(eps["quantile"] == q))
                np.testing.assert_allclose(e["quantile_dist"].to_numpy(), qd, rtol=1e-12)
                np.testing.assert_allclose(e["eps"].to_numpy(), axes.fraction * qd, rtol=1e-12)
                (row,) = [r for r in rows if r["norm"] == norm and r["per_class"] == per_class and r["eps_quantile"] == q]
                assert row["evaluator"] == "distances" and row["eps_fraction"] == axes.fraction
                assert row["n_eval"] == len(idx) and row["clean_acc"] == ctx.clean_acc and row["eval_s"] >= 0
                assert row["eps"] == pytest.approx(axes.fraction * qd.mean(), rel=1e-12)
                assert row["eps_min"] == pytest.approx(axes.fraction * qd.min(), rel=1e-12)
                assert row["eps_max"] == pytest.approx(axes.fraction * qd.max(), rel=1e-12)
                assert row["within_mean"] == pytest.approx(m.diagonal().mean(), rel=1e-12)
                assert row["between_mean"] == pytest.approx(m[off].mean(), rel=1e-12)
                smaller = [m[k, k] < min(m[k, j] for j in range(3) if j != k) for k in range(3)]
                assert row["within_smaller_rate"] == pytest.approx(np.mean(smaller))
                assert row["nearest_other_mean"] == pytest.approx(nearest.mean(), rel=1e-12)
    return rows


def test_evaluate_on_the_training_split(tmp_path):
    ctx = _ctx(tmp_path)
    axes = DistancesEval(evaluator="distances", per_class=[3, 20], quantiles=[0.1, 0.5], fraction=0.5)
    assert axes.split == "train" and list(axes.norms) == list(NORMS)
    rows = _check_rows_and_artifacts(ctx, axes, ctx.x_train, ctx.y_train)
    assert {r["n_eval"] for r in rows} == {9, 24}  # per_class 20: every training image


def test_evaluate_on_the_test_split(tmp_path):
    ctx = _ctx(tmp_path)
    axes = DistancesEval(evaluator="distances", norms=["l0", "linf"], per_class=[2], quantiles=[0.25], fraction=1.0, split="test")
    _check_rows_and_artifacts(ctx, axes, ctx.x, ctx.y)


def test_class_eps_is_what_evaluate_reports(tmp_path):
    ctx = _ctx(tmp_path, seed=3)
    axes = DistancesEval(evaluator="distances", per_class=[4], quantiles=[0.1, 0.5, 0.9], fraction=0.3)
    rows = distances.evaluate(ctx, axes)
    table = read_artifact(ctx.results_uri, "class_eps")
    for norm in NORMS:
        got = distances.class_eps(ctx.x_train, ctx.y_train, 3, norm, 4, axes.quantiles, axes.fraction, ctx.seed)
        assert got.shape == (3, 3) and got.dtype == torch.float64
        for k, q in enumerate(axes.quantiles):
            want = table.filter((table["norm"] == norm) & (table["quantile"] == q)).sort("class")["eps"].to_list()
            assert got[k].tolist() == want  # bit for bit
            (row,) = [r for r in rows if r["norm"] == norm and r["eps_quantile"] == q]
            assert (row["eps_min"], row["eps_max"]) == (min(want), max(want))
    other = distances.class_eps(ctx.x_train, ctx.y_train, 3, "l2", 4, axes.quantiles, axes.fraction, ctx.seed + 1)
    assert not torch.equal(other, distances.class_eps(ctx.x_train, ctx.y_train, 3, "l2", 4, axes.quantiles, axes.fraction, ctx.seed))
