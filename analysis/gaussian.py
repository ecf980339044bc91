"""Table and charts of the Gaussian model of robust features (Ilyas et al. 2019, Section 4).

The ``gaussian`` artifact (``study.gaussian``: its docstring lists the columns) has one row per
adversary radius eps, every fit on the same sample; eps 0 is the standard MLE. What it shows:
the robust MLE's mean stays where the standard one is (``mu_error``, ``mu_shift``) while its
covariance blends with the identity as eps grows (``identity_weight`` rises toward 1,
``anisotropy`` falls toward 1), close to Theorem 2's closed form at a fitted multiplier lam
(``theorem2_residual``).

``table``: a polars frame; ``covariance_chart`` (1-sigma ellipses in the first two
coordinates) and ``blend_chart`` (identity weight, anisotropy and eigenvalues against eps):
altair charts with their data inline, as ``analysis.charts``.
"""

from __future__ import annotations

import math

import altair as alt
import numpy as np
import polars as pl

ELLIPSE_POINTS = 97  # points on each drawn ellipse (the first and last coincide: a closed loop)
TRUE = "#222"  # the true covariance's colour
EPS_SCHEME = "viridis"
TABLE = ("eps", "lam", "theorem2_residual", "penalised_residual", "identity_weight", "anisotropy", "mu_error", "mu_shift", "stationarity")


def rows(artifact: pl.DataFrame | None) -> pl.DataFrame:
    """The artifact's rows by eps; raises ValueError without any."""
    if artifact is None or artifact.is_empty():
        raise ValueError("no gaussian artifact rows")
    return artifact.sort("eps")


def table(artifact: pl.DataFrame | None) -> pl.DataFrame:
    """Per eps: lam (Theorem 2's fitted multiplier; null at eps 0), theorem2_residual (relative
    Frobenius distance of Theorem 2 at that lam from the numerical robust covariance),
    penalised_residual (of the numerical penalised MLE from Theorem 2: the closed form's check),
    identity_weight, anisotropy, mu_error (from the true mean), mu_shift (from the standard
    MLE's) and stationarity (the fit's first-order condition; near 0 when converged)."""
    return rows(artifact).select(TABLE)


def _ellipse(mu: tuple[float, float], sigma: np.ndarray) -> np.ndarray:
    """Points of the 1-sigma contour {mu + sigma^(1/2) u : |u| = 1}, (ELLIPSE_POINTS, 2)."""
    e, q = np.linalg.eigh(sigma)
    t = np.linspace(0.0, 2 * math.pi, ELLIPSE_POINTS)
    circle = np.stack([np.cos(t), np.sin(t)], 1)
    return np.asarray(mu) + (circle * np.sqrt(e.clip(0.0))) @ q.T


def _matrix(row: dict, prefix: str) -> np.ndarray:
    return np.array([[row[f"{prefix}sigma_00"], row[f"{prefix}sigma_01"]], [row[f"{prefix}sigma_01"], row[f"{prefix}sigma_11"]]])


def ellipse_data(artifact: pl.DataFrame | None, normalise: bool = True) -> pl.DataFrame:
    """The drawn contours: per eps (``fit`` = "eps <eps>") and for the true model (``fit`` =
    "true", eps null) one closed ellipse around each class mean (``cls`` +1 at mu, -1 at -mu)
    in the first two coordinates (the marginal of a d > 2 model): fit, eps, cls, i (the point's order along the contour), x0, x1,
    with the row's anisotropy and identity_weight. ``normalise`` scales every covariance to the
    true one's trace, so the ellipses differ in shape only (the robust ones grow with eps)."""
    df = rows(artifact)
    first = df.row(0, named=True)
    true = _matrix(first, "true_")
    parts = []
    fits = [(f"eps {r['eps']:g}", r["eps"], (r["mu_0"], r["mu_1"]), _matrix(r, ""), r["anisotropy"], r["identity_weight"]) for r in df.iter_rows(named=True)]
    fits.append(("true", None, (first["true_mu_0"], first["true_mu_1"]), true, first["true_anisotropy"], None))
    for fit, eps, mu, sigma, aniso, weight in fits:
        if normalise:
            sigma = sigma * np.trace(true) / np.trace(sigma)
        for cls in (1, -1):
            pts = _ellipse((cls * mu[0], cls * mu[1]), sigma)
            parts.append(pl.DataFrame({
                "fit": fit, "eps": eps, "cls": cls, "i": np.arange(len(pts)), "x0": pts[:, 0], "x1": pts[:, 1],
                "anisotropy": aniso, "identity_weight": weight,
            }, schema_overrides={"eps": pl.Float64, "identity_weight": pl.Float64}))
    return pl.concat(parts)


def covariance_chart(artifact: pl.DataFrame | None, normalise: bool = True) -> alt.LayerChart:
    """1-sigma ellipses of the robust covariance Sigma_r in the first two coordinates, one per
    eps (colour), around both class means, over the true Sigma*'s (dashed): the learned
    covariance turning toward a circle as eps grows, its means staying put. Equal axes, so a
    circle looks like one; ``normalise`` as ``ellipse_data``."""
    data = ellipse_data(artifact, normalise)
    reach = float(np.abs(data.select("x0", "x1").to_numpy()).max()) * 1.05
    axis = alt.Scale(domain=[-reach, reach], nice=False)
    fits = [f for f in data.get_column("fit").unique(maintain_order=True).to_list() if f != "true"]
    tooltip = [alt.Tooltip("fit:N"), alt.Tooltip("cls:N", title="class"), alt.Tooltip("anisotropy:Q", format=".3g"), alt.Tooltip("identity_weight:Q", format=".3f")]
    base = alt.Chart().encode(
        x=alt.X("x0:Q", title="x_0", scale=axis), y=alt.Y("x1:Q", title="x_1", scale=axis), order=alt.Order("i:Q"), detail="cls:N", tooltip=tooltip,
    )
    robust = base.transform_filter("datum.fit != 'true'").mark_line(strokeWidth=1.8).encode(
        color=alt.Color("fit:N", title="robust MLE", sort=fits, scale=alt.Scale(scheme=EPS_SCHEME)),
    )
    true = base.transform_filter("datum.fit == 'true'").mark_line(color=TRUE, strokeDash=[5, 4], strokeWidth=1.5)
    scaled = " (scaled to tr Σ*)" if normalise else ""
    return alt.layer(true, robust, data=alt.Data(values=data.to_dicts())).properties(
        width=340, height=340, title=f"1-σ contours of Σ_r{scaled}; dashed: true Σ*"
    )


def eigen_data(artifact: pl.DataFrame | None) -> pl.DataFrame:
    """Long eigenvalues per eps: eps, k (0 = smallest), source ("robust MLE" or "Theorem 2",
    the latter at the fitted lam), eigenvalue."""
    df = rows(artifact).select("eps", "eig_robust", "eig_theorem2")
    long = df.unpivot(index="eps", on=["eig_robust", "eig_theorem2"], variable_name="source", value_name="eigenvalue")
    long = long.with_columns(k=pl.int_ranges(pl.col("eigenvalue").list.len())).explode("eigenvalue", "k")
    names = {"eig_robust": "robust MLE", "eig_theorem2": "Theorem 2"}
    return long.with_columns(pl.col("source").replace_strict(names)).select("eps", "k", "source", "eigenvalue").sort("source", "k", "eps")


def blend_chart(artifact: pl.DataFrame | None) -> alt.HConcatChart:
    """Against eps (evenly spaced; eps 0 is the standard MLE): the identity weight of Sigma_r
    (0 = the sample covariance's shape, 1 = a circle), its anisotropy (largest / smallest
    eigenvalue, log scale, toward 1) and its eigenvalues (points) beside Theorem 2's at the
    fitted lam (lines), log scale."""
    df = rows(artifact)
    eps_values = df.get_column("eps").to_list()
    x = alt.X("eps:O", title="eps (L2)", sort=eps_values, axis=alt.Axis(labelAngle=0))
    scalars = df.select("eps", "identity_weight", "anisotropy", "theorem2_residual")
    tip = [alt.Tooltip("eps:Q"), alt.Tooltip("identity_weight:Q", format=".3f"), alt.Tooltip("anisotropy:Q", format=".3g"), alt.Tooltip("theorem2_residual:Q", format=".2%")]
    line = alt.Chart(alt.Data(values=scalars.to_dicts())).mark_line(point=True).encode(x=x, tooltip=tip)
    weight = line.encode(y=alt.Y("identity_weight:Q", title="identity weight w", scale=alt.Scale(domain=[0, 1]))).properties(
        width=200, height=200, title="Σ_r/tr ≈ (1-w) S/tr + w I/d"
    )
    aniso = line.encode(y=alt.Y("anisotropy:Q", title="largest / smallest eigenvalue", scale=alt.Scale(type="log"))).properties(
        width=200, height=200, title="anisotropy of Σ_r"
    )
    eig = eigen_data(df)
    base = alt.Chart().encode(
        x=x, y=alt.Y("eigenvalue:Q", scale=alt.Scale(type="log")), detail="k:N",
        color=alt.Color("source:N", title=None, sort=["robust MLE", "Theorem 2"]),
        tooltip=[alt.Tooltip("eps:Q"), alt.Tooltip("source:N"), alt.Tooltip("k:Q", title="eigenvalue #"), alt.Tooltip("eigenvalue:Q", format=".4g")],
    )
    eigen = alt.layer(
        base.transform_filter("datum.source == 'Theorem 2'").mark_line(strokeDash=[4, 3]),
        base.transform_filter("datum.source == 'robust MLE'").mark_point(filled=True, size=50),
        data=alt.Data(values=eig.to_dicts()),
    ).properties(width=220, height=200, title="eigenvalues: numerical vs Theorem 2")
    return alt.hconcat(weight, aniso, eigen).resolve_scale(color="independent")
