"""The Gaussian model of robust features (study.gaussian, analysis.gaussian): the closed forms,
the two adversaries against brute force, the penalised robust MLE against Theorem 2, and the
eps-ball robust MLE's blend toward the identity on the default anisotropic 2-D case."""

from __future__ import annotations

import types

import numpy as np
import polars as pl
import pytest

from analysis import gaussian as ag
from study import gaussian as g

MEAN = [1.0, 0.25]
COV = [[1.0, 0.6], [0.6, 0.5]]  # eigenvalues 1.40 and 0.10: anisotropy 14
EPS = [0.0, 0.25, 1.0, 2.0]


def _quad(v: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    return np.einsum("ni,ij,nj->n", v, np.linalg.inv(sigma), v)


def _sphere(k: int, d: int, rng) -> np.ndarray:
    u = rng.standard_normal((k, d))
    return u / np.linalg.norm(u, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def artifact() -> pl.DataFrame:
    axes = types.SimpleNamespace(eps=EPS, mean=MEAN, cov=COV, n=2000, steps=300, lr=0.1)
    return pl.DataFrame(g.evaluate(axes, 0))


def test_sample_and_standard_mle_are_the_closed_forms():
    x, y = g.sample(400, MEAN, COV, 3)
    assert x.shape == (400, 2) and x.dtype == np.float64 and set(np.unique(y)) == {-1.0, 1.0}
    mu, sigma = g.standard_mle(x, y)
    folded = x * y[:, None]  # y x ~ N(mu*, Sigma*) for both classes
    np.testing.assert_allclose(mu, folded.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(folded.T, bias=True), rtol=1e-10)
    assert np.linalg.norm(mu - MEAN) < 0.2 and np.abs(sigma - COV).max() < 0.2


def test_ball_adversary_is_on_the_sphere_and_beats_random_points():
    rng = np.random.default_rng(0)
    for d in (2, 4):
        b = rng.standard_normal((d, d))
        sigma = b @ b.T + 0.1 * np.eye(d)
        v = rng.standard_normal((40, d))
        for eps in (0.05, 1.0, 5.0):
            delta = g.ball_adversary(v, sigma, eps)
            np.testing.assert_allclose(np.linalg.norm(delta, axis=1), eps, rtol=1e-12)
            best = _quad(v + delta, sigma)
            for i in range(len(v)):
                others = _quad(v[i] + eps * _sphere(4000, d, rng), sigma)
                assert best[i] >= others.max() - 1e-9 * best[i]
                inside = _quad(v[i] + eps * _sphere(500, d, rng) * rng.uniform(size=(500, 1)), sigma)
                assert best[i] >= inside.max()


def test_ball_adversary_hard_case_goes_along_the_top_eigenvector():
    sigma = np.diag([1.0, 4.0])  # A = diag(1, 1/4): the top eigenvector of A is e0
    v = np.array([[0.0, 0.1], [0.0, -0.1], [0.0, 0.0]])  # no e0 component
    delta = g.ball_adversary(v, sigma, 1.0)
    np.testing.assert_allclose(np.linalg.norm(delta, axis=1), 1.0, rtol=1e-12)
    # stationarity on the rest: delta_1 = a_1 v_1 / (a_0 - a_1) = v_1 / 3
    np.testing.assert_allclose(delta[:, 1], v[:, 1] / 3, atol=1e-12)
    t = np.linspace(0, 2 * np.pi, 100001)
    circle = np.stack([np.cos(t), np.sin(t)], 1)
    for i in range(len(v)):
        assert _quad(v[i : i + 1] + delta[i : i + 1], sigma)[0] >= _quad(v[i] + circle, sigma).max() - 1e-12


def test_penalty_adversary_value_is_the_closed_form():
    """max_delta l(x + delta) - lam/2 |delta|^2 = 1/2 v^T (Sigma - I/lam)^-1 v + 1/2 log det Sigma."""
    rng = np.random.default_rng(1)
    sigma, lam = np.array([[1.0, 0.6], [0.6, 0.5]]), 12.0  # lam > 1 / lambda_min(Sigma) = 10
    v = rng.standard_normal((50, 2))
    delta = g.penalty_adversary(v, sigma, lam)
    value = 0.5 * _quad(v + delta, sigma) - lam / 2 * (delta**2).sum(1)
    np.testing.assert_allclose(value, 0.5 * _quad(v, sigma - np.eye(2) / lam), rtol=1e-10)
    for i in range(len(v)):
        moved = delta[i] + 0.3 * rng.standard_normal((2000, 2))
        assert value[i] >= (0.5 * _quad(v[i] + moved, sigma) - lam / 2 * (moved**2).sum(1)).max()


def test_theorem2_is_the_stationary_point_of_the_penalised_problem():
    S = np.array([[2.0, 0.3], [0.3, 0.2]])
    lam = 3.0
    t2 = g.theorem2(S, lam)
    sigma, q = np.linalg.eigh(S)
    s = np.diag(q.T @ t2 @ q)  # theorem2 keeps S's eigenvectors
    np.testing.assert_allclose(q.T @ t2 @ q, np.diag(s), atol=1e-12)
    np.testing.assert_allclose((s - 1 / lam) ** 2, sigma * s, rtol=1e-12)
    np.testing.assert_allclose(g.theorem2(S, 1e12), S, atol=1e-6)  # lam -> inf: no adversary


@pytest.mark.parametrize("lam", [0.5, 4.0, 30.0])
def test_penalised_mle_matches_theorem2(lam):
    x, y = g.sample(500, MEAN, COV, 5)
    mu_s, S = g.standard_mle(x, y)
    mu, sigma = g.penalised_mle(x, y, lam)
    np.testing.assert_allclose(mu, mu_s, atol=1e-6)
    assert np.linalg.norm(sigma - g.theorem2(S, lam)) / np.linalg.norm(sigma) < 1e-6


def test_fit_lambda_recovers_lambda_of_a_theorem2_matrix():
    S = np.array([[1.0, 0.6], [0.6, 0.5]])
    for lam in (0.2, 3.0, 50.0):
        fitted, residual = g.fit_lambda(g.theorem2(S, lam), S)
        assert fitted == pytest.approx(lam, rel=1e-5) and residual < 1e-8
    assert g.fit_lambda(np.eye(2), S)[1] > 0.1  # a circle is no Theorem 2 matrix of this S


def test_robust_mle_keeps_the_mean_and_blends_with_the_identity(artifact):
    art = artifact.sort("eps")
    assert art.get_column("eps").to_list() == EPS
    first = art.row(0, named=True)
    assert first["lam"] is None and first["identity_weight"] == 0 and first["mu_shift"] == 0
    assert first["sigma_00"] == first["std_sigma_00"] and first["true_sigma_01"] == COV[0][1]
    # the mean: the robust fit barely moves from the standard MLE's, whose own error is sampling
    assert art.get_column("mu_shift").max() < 0.02
    assert art.get_column("mu_error").max() < 0.15
    aniso, weight = art.get_column("anisotropy").to_list(), art.get_column("identity_weight").to_list()
    assert all(a > b for a, b in zip(aniso, aniso[1:])) and aniso[-1] < 2.0 < 10.0 < aniso[0]
    assert all(a < b for a, b in zip(weight, weight[1:])) and weight[-1] > 0.6
    robust = art.filter(pl.col("eps") > 0)
    # Theorem 2 at one fitted lam is within 2% (Frobenius) of the eps-ball solution; observed
    # 0.2% - 1.9% on this sample; the penalised MLE meets the closed form to ~1e-7
    assert robust.get_column("theorem2_residual").max() < 0.03
    assert robust.get_column("penalised_residual").max() < 1e-5
    assert robust.get_column("stationarity").max() < 1e-3
    lams = robust.get_column("lam").to_list()
    assert all(a > b for a, b in zip(lams, lams[1:]))  # a larger ball: a weaker penalty
    eig = np.array(robust.get_column("eig_robust").to_list())
    assert np.all(np.diff(eig, axis=0) > 0)  # both eigenvalues grow with eps


def test_robust_mle_beats_the_alternatives_on_its_objective():
    x, y = g.sample(1000, MEAN, COV, 7)
    mu_s, S = g.standard_mle(x, y)
    eps = 0.5
    mu, sigma = g.robust_mle(x, y, eps)
    best = g.robust_loss(x, y, mu, sigma, eps)
    lam, _ = g.fit_lambda(sigma, S)
    for other in (S, g.theorem2(S, lam), sigma * 1.05, sigma + 0.02 * np.eye(2), np.trace(sigma) / 2 * np.eye(2)):
        assert best < g.robust_loss(x, y, mu_s, other, eps)
    assert g.robust_loss(x, y, mu, sigma, 0.0) < best  # the adversary raises the loss


def test_evaluate_rejects_a_one_dimensional_model():
    axes = types.SimpleNamespace(eps=[0.0], mean=[1.0], cov=[[1.0]], n=10, steps=1, lr=0.1)
    with pytest.raises(ValueError, match="d >= 2"):
        g.evaluate(axes, 0)


def test_table_and_charts_build(artifact):
    table = ag.table(artifact)
    assert table.columns == list(ag.TABLE) and table.height == len(EPS)
    cov = ag.covariance_chart(artifact).to_dict()
    assert len(cov["layer"]) == 2 and all(layer["mark"]["type"] == "line" for layer in cov["layer"])
    values = cov["data"]["values"]
    assert len(values) == (len(EPS) + 1) * 2 * ag.ELLIPSE_POINTS
    assert {v["fit"] for v in values} == {"true", "eps 0", "eps 0.25", "eps 1", "eps 2"}
    # normalised: every drawn covariance has the true one's trace (the ellipse's second moment)
    for fit in ("true", "eps 2"):
        pts = np.array([[v["x0"], v["x1"]] for v in values if v["fit"] == fit and v["cls"] == 1][:-1])
        centred = pts - pts.mean(0)
        assert np.trace(centred.T @ centred / len(pts)) * 2 == pytest.approx(np.trace(COV), rel=1e-9)
    blend = ag.blend_chart(artifact).to_dict()
    assert len(blend["hconcat"]) == 3
    eig = ag.eigen_data(artifact)
    assert eig.height == 2 * 2 * len(EPS) and set(eig.get_column("source")) == {"robust MLE", "Theorem 2"}
    with pytest.raises(ValueError, match="no gaussian"):
        ag.table(None)
