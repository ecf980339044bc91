"""Reports and charts of studies beyond robustness: boundary tilting (geometry rows and the
tilting-plane / perturbation artifacts) and the Goodfellow checks (rubbish inputs, transfer),
on real sweeps (tests/conftest.py)."""

from __future__ import annotations

import io
import math
import re

import numpy as np
import polars as pl
import pytest
from PIL import Image

from analysis import charts, images, tilting
from analysis.load import load, read_artifact
from analysis.report import build_charts, summary_tables, write_report



def chart_ids(page: str) -> list[str]:
    return re.findall(r'<div class="chart" id="([^"]+)"></div>', page)


@pytest.fixture(scope="module")
def tilting_df(tilting_sweep) -> pl.DataFrame:
    return load(tilting_sweep.results).collect()


@pytest.fixture(scope="module")
def tilting_report(tilting_sweep, tmp_path_factory):
    return write_report(str(tilting_sweep.results), tmp_path_factory.mktemp("tilting-report"))


@pytest.fixture(scope="module")
def transfer_df(transfer_sweep) -> pl.DataFrame:
    return load(transfer_sweep.results).collect()


@pytest.fixture(scope="module")
def transfer_report(transfer_sweep, tmp_path_factory):
    return write_report(str(transfer_sweep.results), tmp_path_factory.mktemp("transfer-report"))



# -- boundary tilting ----------------------------------------------------------------------


def test_tilting_report_has_the_tilting_charts_and_the_perturbation_image(tilting_report, tilting_df):
    page = tilting_report.read_text()
    ids = chart_ids(page)
    assert {"tilting-curve", "tilting-plane", "curves"} <= set(ids)
    assert "transfer" not in ids
    # One training axis with 17 values: a one-row heatmap would be ~4000 px wide; left out.
    assert not any(i.startswith("heatmap-") for i in ids)
    assert '<img class="figure" id="perturbation-grid" src="perturbation-grid.png"' in page
    assert "Minimal perturbations (geometry)" in page and "Confidence on mistakes" in page
    assert "Rubbish inputs" not in page
    for stem in [*ids, "perturbation-grid"]:
        assert (tilting_report.parent / f"{stem}.png").stat().st_size > 1000, stem

    n_trials = tilting_df.get_column("trial_id").n_unique()
    assert n_trials == 17
    grid = Image.open(tilting_report.parent / "perturbation-grid.png")
    assert grid.size == images.grid_size(n_trials, 28, 28)
    assert grid.size[1] > n_trials * 28 * images.SCALE  # one 3x-upscaled row per trial


def test_tilting_curve_numbers(tilting_df, vega_values):
    trials = tilting.per_trial(tilting_df)
    assert trials.height == 17
    assert trials.get_column("l2").is_sorted()
    # Tanay: weakly regularized, the boundary tilts far from the centroid direction; strongly, not.
    theta = trials.get_column("theta_deg").to_list()
    assert theta[0] > 45 and theta[-1] < 10
    # d_adv_pred = 1/2 ||c1 - c0|| cos(theta); d_adv is the closed-form L2 median of the rows.
    for r in trials.iter_rows(named=True):
        assert r["d_adv_pred"] == pytest.approx(0.5 * r["centroid_dist"] * math.cos(math.radians(r["theta_deg"])), rel=1e-6)
    closed = tilting_df.filter(evaluator="geometry", attack="closed-form", norm="l2").select("trial_id", "min_eps_median")
    joined = trials.join(closed, on="trial_id")
    assert joined.height == 17 and (joined["d_adv"] == joined["min_eps_median"]).all()
    assert trials.get_column("d_adv").to_list()[-1] > 2 * trials.get_column("d_adv").to_list()[0]

    spec = tilting.tilting_curve(tilting_df).to_dict()
    assert len(spec["vconcat"]) == 2
    rows = pl.DataFrame(vega_values(spec))
    assert sorted(rows.get_column("series").unique().to_list()) == sorted(tilting.SERIES)
    errors = rows.filter(series=tilting.ERROR).sort("l2").get_column("value").to_list()
    assert errors == pytest.approx((1 - trials.get_column("clean_acc")).to_list())
    for panel in spec["vconcat"]:
        assert panel["resolve"]["scale"]["y"] == "independent"
        orients = sorted(layer["encoding"]["y"]["axis"]["orient"] for layer in panel["layer"])
        assert orients == ["left", "right"]
        assert all(layer["encoding"]["x"]["scale"]["type"] == "log" for layer in panel["layer"])

    with pytest.raises(ValueError, match="tilting curve"):
        tilting.tilting_curve(tilting_df.filter(pl.col("evaluator") == "robustness"))


def test_pick_lambdas():
    grid = [1e-6, 3.16e-6, 1e-5, 3.16e-5, 1e-4, 3.16e-4, 1e-3, 3.16e-3, 1e-2, 3.16e-2, 0.1, 0.316, 1.0, 3.16, 10.0, 31.6, 100.0]
    assert tilting.pick_lambdas(grid) == [1e-6, 3.16e-4, 0.316, 100.0]
    assert tilting.pick_lambdas(grid, k=2) == [1e-6, 100.0]
    assert tilting.pick_lambdas([0.1, 1.0, 0.1]) == [0.1, 1.0]
    picked = tilting.pick_lambdas([0.0, 1e-3, 1e-2, 1e-1, 1.0, 10.0], k=3)  # 0: by rank, not log
    assert picked[0] == 0.0 and picked[-1] == 10.0 and len(picked) == 3


def test_decision_line_ends_lie_on_the_line_and_the_box():
    box = (-2.0, 2.0, -1.0, 3.0)
    ends = tilting.decision_line(1.0, 2.0, -1.0, box)
    assert len(ends) == 2
    for u, v in ends:
        assert 1.0 * u + 2.0 * v - 1.0 == pytest.approx(0, abs=1e-12)
        assert -2 <= u <= 2 and -1 <= v <= 3
    # No tilt (wn = 0): the vertical u = -offset / wz, from the bottom of the box to its top.
    assert sorted(tilting.decision_line(2.0, 0.0, 1.0, box)) == [(-0.5, -1.0), (-0.5, 3.0)]
    near = sorted(tilting.decision_line(2.0, 1e-15, 1.0, box), key=lambda end: end[1])  # wn ~ 0: as good as vertical
    assert [p for end in near for p in end] == pytest.approx([-0.5, -1.0, -0.5, 3.0])
    assert tilting.decision_line(1.0, 0.0, -10.0, box) == []  # u = 10: outside the box
    assert tilting.decision_line(0.0, 0.0, 1.0, box) == []


def test_plane_scatter_panels_and_decision_lines(tilting_sweep, tilting_df):
    plane = read_artifact(str(tilting_sweep.results), "tilting-plane")
    points, lines, panels = tilting.plane_panels(plane, tilting_df)
    lambdas = sorted(tilting_df.get_column("l2").unique().to_list())
    assert panels.get_column("l2").to_list() == tilting.pick_lambdas(lambdas) == [lambdas[0], lambdas[5], lambdas[11], lambdas[-1]]
    assert sorted(points.get_column("class").unique().to_list()) == ["digit 2", "digit 3"]  # classes "2,3"
    assert points.group_by("panel").len().get_column("len").min() > 100
    for p in panels.iter_rows(named=True):
        assert p["u1"] - p["u0"] == pytest.approx(p["v1"] - p["v0"])  # square: u and v on one scale
        ends = lines.filter(panel=p["panel"])
        assert ends.height == 2, f"no decision line drawn at lambda {p['l2']}"
        for u, v in ends.select("u", "v").iter_rows():
            assert p["wz"] * u + p["wn"] * v + p["offset"] == pytest.approx(0, abs=1e-9 * (abs(p["wz"]) + abs(p["wn"])) * (p["u1"] - p["u0"]))
            assert p["u0"] - 1e-9 <= u <= p["u1"] + 1e-9 and p["v0"] - 1e-9 <= v <= p["v1"] + 1e-9
    # Each panel's points' f is the line's equation: f(x) = wz u + wn v + offset (w lies in the plane).
    pts = points.join(panels.select("panel", "wz", "wn", "offset"), on="panel", suffix="_p")
    fit = pts.select((pl.col("wz_p") * pl.col("u") + pl.col("wn_p") * pl.col("v") + pl.col("offset_p") - pl.col("f")).abs().max()).item()
    assert fit < 1e-3 * pts.get_column("f").abs().max()

    spec = tilting.plane_scatter(plane, tilting_df).to_dict()
    assert len(spec["concat"]) == 4
    for p, panel in zip(panels.iter_rows(named=True), spec["concat"]):
        line_layer = next(layer for layer in panel["layer"] if layer["mark"]["type"] == "line")
        drawn = sorted((r["u"], r["v"]) for r in line_layer["data"]["values"])
        assert drawn == sorted(lines.filter(panel=p["panel"]).select("u", "v").iter_rows())
        assert panel["title"]["text"].startswith(f"lambda = {p['l2']:g}")

    chosen = tilting.plane_panels(plane, tilting_df, lambdas=[lambdas[2], lambdas[8]])[2]
    assert chosen.get_column("l2").to_list() == [lambdas[2], lambdas[8]]
    with pytest.raises(ValueError, match="no tilting-plane trial"):
        tilting.plane_panels(plane, tilting_df, lambdas=[123.0])


def test_perturbation_grid_rows_and_pixels(tilting_sweep, tilting_df):
    pert = read_artifact(str(tilting_sweep.results), "perturbation")
    rows = images.rows(pert, tilting_df, point=0)
    assert len(rows) == 17
    assert [r["l2"] for r in rows] == sorted(tilting_df.get_column("l2").unique().to_list())
    for r in rows:
        assert np.linalg.norm(r["delta"]) == pytest.approx(r["l2_delta"], rel=1e-4)
        assert np.allclose(r["x"] + r["delta"], r["x_adv"], atol=1e-6)
    # The weakest regularization has the smallest minimal perturbation (boundary tilting).
    assert rows[0]["l2_delta"] < rows[-1]["l2_delta"]

    png = images.perturbation_grid(pert, tilting_df, point=0)
    grid = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=int)
    width, height = images.grid_size(17, 28, 28)
    assert grid.shape == (height, width)
    s, cell = images.SCALE, 28 * images.SCALE
    for i in (0, 16):
        r = rows[i]
        y0 = images.HEADER_H + images.PAD + i * (cell + images.PAD)
        for j, kind in enumerate(images.KINDS):
            x0 = images.LABEL_W + images.PAD + j * (cell + images.PAD)
            shown = grid[y0 : y0 + cell : s, x0 : x0 + cell : s]  # one pixel per source pixel
            value = r[kind][0] if kind != "delta" else 0.5 + 0.5 * r["delta"][0] / r["max_delta"]
            expected = np.clip(value, 0, 1) * 255
            assert np.abs(shown - expected).max() <= 1.5, (i, kind)
        # Nearest-neighbour upscale: every s x s block is one value.
        block = grid[y0 : y0 + s, images.LABEL_W + images.PAD : images.LABEL_W + images.PAD + s]
        assert (block == block[0, 0]).all()
    with pytest.raises(ValueError, match="point 99"):
        images.perturbation_grid(pert, tilting_df, point=99)


def test_tilting_report_renders_offline_in_headless_chromium(tilting_report, charts_render):
    charts_render(tilting_report, ("tilting-curve", "tilting-plane"))


# -- rubbish inputs and transfer -----------------------------------------------------------


def test_transfer_matrix_cells_and_diagonal(transfer_df, vega_values):
    models = sorted(transfer_df.get_column("label").unique().to_list())
    assert len(models) == 3
    spec = charts.transfer_matrix(transfer_df).to_dict()
    cells = pl.DataFrame(vega_values(spec))
    assert sorted(cells.get_column("eps").unique().to_list()) == [0.1, 0.25]
    assert spec["facet"]["field"] == "eps"
    for eps, per in cells.group_by("eps"):
        assert per.height == len(models) ** 2, eps
        assert sorted(per.get_column("source").unique().to_list()) == models
        assert sorted(per.get_column("target").unique().to_list()) == models
        assert per.select("source", "target").n_unique() == len(models) ** 2
    assert cells.get_column("transfer_error").is_between(0, 1).all()
    assert cells.filter(pl.col("same")).height == 2 * len(models)
    assert (cells.filter(pl.col("same")).get_column("source") == cells.filter(pl.col("same")).get_column("target")).all()

    # The diagonal is the source's own FGSM error at that eps. The robustness rows attack only
    # the points the model gets right and count the others wrong; transfer classifies FGSM's
    # output of every point. So own error - clean error <= diagonal <= own error.
    own = transfer_df.filter(evaluator="robustness", attack="fgsm", norm="linf", eps=0.25).select(
        "label", own_error=1 - pl.col("robust_acc"), clean_error=1 - pl.col("clean_acc")
    )
    diagonal = cells.filter(pl.col("same"), eps=0.25).join(own, left_on="source", right_on="label")
    assert diagonal.height == len(models)
    for r in diagonal.iter_rows(named=True):
        assert r["own_error"] - r["clean_error"] - 1e-6 <= r["transfer_error"] <= r["own_error"] + 1e-6, r  # float32 means
    # Larger eps, larger error: every (source, target) pair errs at least as often at 0.25 as at 0.1
    # up to sampling noise of 300 points.
    wide = cells.pivot(on="eps", index=["source", "target"], values="transfer_error")
    assert (wide["0.25"] >= wide["0.1"] - 0.05).all()

    with pytest.raises(ValueError, match="no transfer rows"):
        charts.transfer_matrix(transfer_df.filter(pl.col("evaluator") == "robustness"))


def test_transfer_report_tables_and_charts(transfer_report, transfer_df):
    page = transfer_report.read_text()
    ids = chart_ids(page)
    assert "transfer" in ids and "curves" in ids and "heatmap-linf" in ids
    assert not {"tilting-curve", "tilting-plane"} & set(ids)
    assert "perturbation-grid.png" not in page  # non-linear models write no perturbation artifact
    assert (transfer_report.parent / "transfer.png").stat().st_size > 1000

    tables = {title: table for title, _, table in summary_tables(transfer_df)}
    assert {"Best robust accuracy", "Area under the robustness curve", "Rubbish inputs", "Minimal perturbations (geometry)", "Confidence on mistakes"} <= set(tables)
    rubbish = tables["Rubbish inputs"]
    models = sorted(transfer_df.get_column("label").unique().to_list())
    assert rubbish.columns == ["label", "rubbish_confident", "confidence_mean", "clean_acc"]
    assert rubbish.get_column("label").to_list() == models
    assert rubbish.get_column("rubbish_confident").is_between(0, 1).all()
    for label, conf in rubbish.select("label", "confidence_mean").iter_rows():
        assert f"<td>{label}</td><td>" in page and f"{conf:.3f}" in page
    geometry = tables["Minimal perturbations (geometry)"]
    assert geometry.get_column("label").to_list() == models and "pgd-bisection linf" in geometry.columns
    # Confidence on mistakes: at the largest eps (0.25) of FGSM, from the robustness rows.
    conf = tables["Confidence on mistakes"]
    expected = transfer_df.filter(evaluator="robustness", attack="fgsm", eps=0.25).select("label", "adv_confidence_mean").sort("label")
    assert conf.get_column("fgsm linf 0.25").to_list() == expected.get_column("adv_confidence_mean").to_list()


def test_charts_and_tables_follow_the_evaluators_present(transfer_df, vega_values):
    # Robustness charts draw robustness rows only: the transfer rows (attack fgsm, eps > 0,
    # robust_acc set) must not become extra points of the curves.
    by_stem = {stem: chart for stem, _, _, chart in build_charts(transfer_df)}
    curves = vega_values(by_stem["curves"].to_dict())
    assert len(curves) == transfer_df.filter(evaluator="robustness").height

    without = transfer_df.filter(pl.col("evaluator") != "robustness")
    assert [stem for stem, *_ in build_charts(without)] == ["transfer"]
    titles = [title for title, _, _ in summary_tables(without)]
    assert titles == ["Minimal perturbations (geometry)", "Rubbish inputs"]

    only_robustness = transfer_df.filter(evaluator="robustness")
    assert "transfer" not in [stem for stem, *_ in build_charts(only_robustness)]
    assert [t for t, _, _ in summary_tables(only_robustness)] == ["Best robust accuracy", "Area under the robustness curve", "Per-attack log", "Signs of a broken evaluation", "Confidence on mistakes"]
