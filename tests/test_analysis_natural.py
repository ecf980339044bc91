"""Tables, charts, image strip and report sections of natural adversaries and the reconstruction
defense (analysis.natural, analysis.images.natural_strip), on small frames built here from
literal rows: two trials (cnn, logreg), two searches, budgets of 1 to 10 rounds."""

from __future__ import annotations

import io
import math

import numpy as np
import polars as pl
import pytest
from PIL import Image

from analysis import images, natural
from analysis.report import build_charts, read_generative, summary_tables
from study.results import schema

TRIALS = {"t1": "cnn", "t2": "logreg"}
# (trial, search, N, rounds, success_rate): t1 also runs an iterative search with N = 8, t2 only up to 3 rounds.
SUCCESS = [
    ("t1", "iterative", 16, 1, 0.50), ("t1", "iterative", 16, 3, 0.60), ("t1", "iterative", 16, 10, 0.80),
    ("t1", "hybrid", 16, 1, 0.70), ("t1", "hybrid", 16, 3, 0.90), ("t1", "hybrid", 16, 10, 0.95),
    ("t1", "iterative", 8, 1, 0.30), ("t1", "iterative", 8, 3, 0.40),
    ("t2", "hybrid", 16, 1, 0.80), ("t2", "hybrid", 16, 3, 1.00),
    ("t2", "iterative", 16, 1, 0.60), ("t2", "iterative", 16, 3, 0.90),
]


def _natural_rows(success=SUCCESS) -> pl.DataFrame:
    rows = []
    for trial, search, n, rounds, rate in success:
        rows.append(dict(
            evaluator="natural", trial_id=trial, label=TRIALS[trial], model=TRIALS[trial], attack="natural",
            latent_search=search, latent_samples=n, latent_dr=0.25, latent_rounds=rounds, success_rate=rate,
            queries_mean=n * (1 + rounds) / 2, latent_dist_mean=1 + rounds / 10, latent_dist_median=rounds / 100,
            l2_mean=5 + rounds / 10, recon_l2_mean=rounds / 20,
        ))
    return pl.DataFrame(rows)


# (attack, norm, eps, latent_search) -> (accuracy as given, reconstructed) per trial; listed out of table order.
SETS = {
    ("natural", None, None, "iterative"): ((0.05, 0.20), (0.02, 0.25)),
    ("fgsm", "linf", 0.3, None): ((0.03, 0.13), (0.00, 0.09)),
    ("cw", "l2", None, None): ((0.00, 0.30), (0.01, 0.28)),
    ("clean", None, None, None): ((0.95, 0.41), (0.89, 0.38)),
    ("fgsm", "linf", 0.1, None): ((0.62, 0.22), (0.34, 0.15)),
}


def _reconstruction_rows(sets=SETS) -> pl.DataFrame:
    rows = []
    for (attack, norm, eps, search), accs in sets.items():
        for (trial, label), (acc, recon) in zip(TRIALS.items(), accs):
            rows.append(dict(
                evaluator="reconstruction", trial_id=trial, label=label, model=label, attack=attack, norm=norm, eps=eps,
                latent_search=search, latent_samples=16 if search else None, latent_rounds=30 if search else None, latent_dr=0.25 if search else None,
                clean_acc=accs[list(TRIALS).index(trial)][0] if attack == "clean" else None, robust_acc=acc, recon_acc=recon,
            ))
    return pl.DataFrame(rows, infer_schema_length=None)


# -- tables ---------------------------------------------------------------------------------


def test_success_table_budget_and_order():
    table = natural.success_table(_natural_rows())
    assert table.columns == [
        "label", "model", "latent_search", "latent_samples", "latent_dr", "latent_rounds", "budget",
        "success_rate", "queries_mean", "latent_dist_mean", "latent_dist_median",
    ]
    # By label, then iterative before hybrid, N and rounds ascending.
    assert table.select("label", "latent_search", "latent_samples", "latent_rounds").rows() == [
        ("cnn", "iterative", 8, 1), ("cnn", "iterative", 8, 3),
        ("cnn", "iterative", 16, 1), ("cnn", "iterative", 16, 3), ("cnn", "iterative", 16, 10),
        ("cnn", "hybrid", 16, 1), ("cnn", "hybrid", 16, 3), ("cnn", "hybrid", 16, 10),
        ("logreg", "iterative", 16, 1), ("logreg", "iterative", 16, 3),
        ("logreg", "hybrid", 16, 1), ("logreg", "hybrid", 16, 3),
    ]
    # budget = N * rounds: the most queries a point can cost.
    assert table.get_column("budget").to_list() == [8, 24, 16, 48, 160, 16, 48, 160, 16, 48, 16, 48]
    assert table.get_column("success_rate").to_list() == [0.30, 0.40, 0.50, 0.60, 0.80, 0.70, 0.90, 0.95, 0.60, 0.90, 0.80, 1.00]

    wide = natural.success_table(_natural_rows(), wide=True)
    assert wide.columns == ["label", "latent_search", "latent_samples", "latent_dr", "rounds 1", "rounds 3", "rounds 10"]
    assert wide.rows() == [
        ("cnn", "iterative", 8, 0.25, 0.30, 0.40, None),
        ("cnn", "iterative", 16, 0.25, 0.50, 0.60, 0.80),
        ("cnn", "hybrid", 16, 0.25, 0.70, 0.90, 0.95),
        ("logreg", "iterative", 16, 0.25, 0.60, 0.90, None),
        ("logreg", "hybrid", 16, 0.25, 0.80, 1.00, None),
    ]
    with pytest.raises(ValueError, match="no natural rows"):
        natural.success_table(_reconstruction_rows())


def test_distance_table_takes_each_settings_largest_budget():
    table = natural.distance_table(_natural_rows())
    assert table.columns == [
        "label", "latent_search", "latent_samples", "latent_dr", "budget", "success_rate",
        "latent_dist_mean", "latent_dist_median", "l2_mean", "recon_l2_mean", "queries_mean",
    ]
    # One row per trial and setting, at its own largest rounds: 3 for N = 8 and for logreg, 10 otherwise.
    assert table.select("label", "latent_search", "latent_samples", "budget", "success_rate").rows() == [
        ("cnn", "iterative", 8, 24, 0.40),
        ("cnn", "iterative", 16, 160, 0.80),
        ("cnn", "hybrid", 16, 160, 0.95),
        ("logreg", "iterative", 16, 48, 0.90),
        ("logreg", "hybrid", 16, 48, 1.00),
    ]
    assert table.get_column("latent_dist_median").to_list() == pytest.approx([0.03, 0.10, 0.10, 0.03, 0.03])
    assert table.get_column("recon_l2_mean").to_list() == pytest.approx([0.15, 0.50, 0.50, 0.15, 0.15])
    assert table.get_column("queries_mean").to_list() == pytest.approx([16.0, 88.0, 88.0, 32.0, 32.0])


def test_set_names():
    assert natural.set_name("clean", None, None) == "clean"
    assert natural.set_name("fgsm", "linf", 0.1) == "fgsm-linf-0.1"
    assert natural.set_name("pgd", "l2", 1.5) == "pgd-l2-1.5"
    assert natural.set_name("cw", "l2", None) == "cw"
    assert natural.set_name("natural", None, float("nan")) == "natural"
    # Two natural sets: each named by the setting that tells them apart.
    two = {**SETS, ("natural", None, None, "hybrid"): ((0.04, 0.21), (0.01, 0.24))}
    named = natural.reconstruction_rows(_reconstruction_rows(two))
    assert natural.set_order(named) == [
        "clean", "fgsm-linf-0.1", "fgsm-linf-0.3", "cw", "natural search=hybrid", "natural search=iterative",
    ]


def test_reconstruction_table_long_and_wide():
    df = pl.concat([_reconstruction_rows(), _natural_rows()], how="diagonal_relaxed")
    long = natural.reconstruction_table(df)
    assert long.columns == ["label", "input_set", "accuracy", "recon_acc"]
    order = ["clean", "fgsm-linf-0.1", "fgsm-linf-0.3", "cw", "natural"]
    assert long.get_column("input_set").to_list() == order * 2
    assert long.get_column("label").to_list() == ["cnn"] * 5 + ["logreg"] * 5

    wide = natural.reconstruction_table(df, wide=True)
    assert wide.columns == ["label"] + [c for s in order for c in (s, f"{s} reconstructed")]
    assert wide.rows() == [
        ("cnn", 0.95, 0.41, 0.62, 0.22, 0.03, 0.13, 0.00, 0.30, 0.05, 0.20),
        ("logreg", 0.89, 0.38, 0.34, 0.15, 0.00, 0.09, 0.01, 0.28, 0.02, 0.25),
    ]
    with pytest.raises(ValueError, match="no reconstruction rows"):
        natural.reconstruction_table(_full(_natural_rows()))


# -- charts ---------------------------------------------------------------------------------


def test_success_curve_draws_every_budget(vega_values):
    spec = natural.success_curve(_natural_rows()).to_dict()
    drawn = pl.DataFrame(vega_values(spec))
    assert drawn.height == len(SUCCESS)
    # N varies for iterative: the settings carry N and dr.
    assert sorted(drawn.get_column("setting").unique().to_list()) == ["hybrid N=16 dr=0.25", "iterative N=16 dr=0.25", "iterative N=8 dr=0.25"]
    got = {(r["label"], r["setting"].split(" ")[0], r["latent_samples"], r["budget"]): r["success_rate"] for r in drawn.iter_rows(named=True)}
    assert got == {(TRIALS[t], s, n, n * r): rate for t, s, n, r, rate in SUCCESS}
    # Log x axis around the queries spent (8 to 88), ticks at 1-2-5 inside it.
    x = spec["spec"]["encoding"]["x"]
    assert x["scale"]["type"] == "log"
    lo, hi = x["scale"]["domain"]
    assert lo < 8 < 88 < hi
    assert x["axis"]["values"] == [10, 20, 50, 100]

    # One N per search: the colour is the search kind alone.
    single = natural.success_curve(_natural_rows([s for s in SUCCESS if s[2] == 16])).to_dict()
    assert sorted({r["setting"] for r in vega_values(single)}) == ["hybrid", "iterative"]


def test_distance_chart_quartiles_from_the_points(vega_values):
    # The natural artifact of t1's iterative N = 16 search at 10 rounds: four found, one not.
    dists = [0.1, 0.2, None, 0.3, 0.4]
    points = pl.DataFrame(dict(
        latent_search="iterative", latent_samples=16, latent_dr=0.25, latent_rounds=10, point=list(range(5)),
        found=[d is not None for d in dists], latent_dist=dists, queries=[16, 32, 160, 48, 64], trial_id="t1",
    ))
    data = natural.distance_data(_natural_rows(), points)
    at = data.filter(label="cnn", latent_search="iterative", latent_samples=16).row(0, named=True)
    assert (at["n_found"], at["q1"], at["q3"]) == (4, pytest.approx(0.175), pytest.approx(0.325))
    assert (at["median"], at["mean"]) == (pytest.approx(0.10), pytest.approx(2.0))
    assert data.get_column("q1").null_count() == data.height - 1  # the other settings have no points

    drawn = vega_values(natural.distance_chart(_natural_rows(), points).to_dict())
    bars = [r for r in drawn if "statistic" not in r]
    assert [(r["label"], r["q1"], r["q3"]) for r in bars] == [("cnn", pytest.approx(0.175), pytest.approx(0.325))]
    marks = {(r["label"], r["setting"], r["statistic"]): r["distance"] for r in drawn if "statistic" in r}
    assert len(marks) == 2 * 5  # median and mean per trial and setting
    assert marks[("logreg", "hybrid N=16 dr=0.25", "median")] == pytest.approx(0.03)
    # Without the artifact: no bars, the same marks.
    assert len(vega_values(natural.distance_chart(_natural_rows()).to_dict())) == len(marks)


def test_reconstruction_chart_bars(vega_values):
    drawn = pl.DataFrame(vega_values(natural.reconstruction_chart(_reconstruction_rows()).to_dict()))
    assert drawn.height == 2 * len(SETS) * len(TRIALS)
    got = {(r["label"], r["input_set"], r["defense"]): r["accuracy"] for r in drawn.iter_rows(named=True)}
    assert got[("cnn", "fgsm-linf-0.1", "as given")] == 0.62
    assert got[("cnn", "fgsm-linf-0.1", "reconstructed, G(I(x))")] == 0.22
    assert got[("logreg", "natural", "reconstructed, G(I(x))")] == 0.25


# -- the image strip ------------------------------------------------------------------------

C, H, W = 1, 6, 5


def _images(trials=("t1", "t2", "t9"), points=3) -> pl.DataFrame:
    """The natural_images artifact: x = 0.5 gray, reconstructions 0.25, adversaries 1.0; t1's
    hybrid search found nothing for point 1 (NaN pixels), t2 ran only the iterative search,
    t9 has no result rows."""
    rows = []
    for trial in trials:
        for search in ("iterative", "hybrid") if trial != "t2" else ("iterative",):
            for kind, value in (("x", 0.5), ("reconstruction", 0.25), ("natural", 1.0)):
                for p in range(points):
                    missing = kind == "natural" and trial == "t1" and search == "hybrid" and p == 1
                    rows.append(dict(
                        latent_search=search, point=p, kind=kind, pixels=[math.nan if missing else value] * (C * H * W), label=p,
                        pred=None if missing else p + (kind == "natural"), latent_dist=None if missing or kind != "natural" else 0.5 + p,
                        channels=C, height=H, width=W, trial_id=trial,
                    ))
    return pl.DataFrame(rows)


def _png(data: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG"
    return np.asarray(img.convert("RGB"))


def _cell(trial: int, row: int, point: int, n_searches: int = 2, scale: int = images.SCALE) -> tuple[int, int]:
    """(x, y) of the top-left pixel of the image of ``point`` in ``row`` (0: x, 1: G(I(x)), 2 +
    i: search i) of the ``trial``-th group."""
    one, two = images.STRIP_TEXT_H
    heights = [H * scale + h + images.PAD for h in [one, one] + [two] * n_searches]
    return (images.STRIP_LABEL_W + images.PAD + point * (W * scale + images.PAD),
            trial * (images.STRIP_TITLE_H + sum(heights)) + images.STRIP_TITLE_H + sum(heights[:row]) + images.PAD)


def test_natural_strip_size_and_cells():
    frame = _natural_rows()
    searches, points, trials = images.strip_data(_images(), frame)
    assert (searches, points) == (["iterative", "hybrid"], [0, 1, 2])
    assert [t["label"] for t in trials] == ["cnn", "logreg"]  # t9 has no result rows: left out
    assert trials[0]["y"] == {0: 0, 1: 1, 2: 2}
    assert trials[0]["cells"]["hybrid"][1]["missing"] == "not found"
    assert trials[1]["cells"]["hybrid"][0]["missing"] == "not run"
    assert (trials[0]["cells"]["iterative"][2]["dist"], trials[0]["cells"]["iterative"][2]["pred"]) == (2.5, 3)

    png = _png(images.natural_strip(_images(), frame))
    # Two groups of rows x, G(I(x)), one per search; a column per point.
    width, height = images.strip_size(2, 3, 2, H, W)
    assert png.shape == (height, width, 3)
    assert width == images.STRIP_LABEL_W + 3 * (W * images.SCALE + images.PAD) + images.PAD
    one, two = images.STRIP_TEXT_H
    assert height == 2 * (images.STRIP_TITLE_H + 4 * (H * images.SCALE + images.PAD) + 2 * one + 2 * two) + images.PAD

    def pixel(trial, row, point):
        x, y = _cell(trial, row, point)
        return tuple(int(v) for v in png[y + 1, x + 1])

    assert pixel(0, 0, 0) == (128, 128, 128)  # x
    assert pixel(0, 1, 0) == (64, 64, 64)  # G(I(x))
    assert pixel(0, 3, 0) == (255, 255, 255)  # the hybrid adversary
    assert pixel(0, 3, 1) == images.MISSING  # not found: a gray cell, no crash on the NaN pixels
    assert pixel(1, 2, 2) == (255, 255, 255)  # logreg's iterative adversary
    assert pixel(1, 3, 0) == images.MISSING  # logreg ran no hybrid search

    two_points = _png(images.natural_strip(_images(), frame, points=[0, 2]))
    assert two_points.shape == (height, images.strip_size(2, 2, 2, H, W)[0], 3)
    with pytest.raises(ValueError, match="natural_images"):
        images.natural_strip(_images(trials=("t9",)), frame)


# -- report sections ------------------------------------------------------------------------


def _full(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows with every result column, as ``analysis.load`` gives them."""
    return pl.concat([pl.from_arrow(schema().empty_table()), frame], how="diagonal_relaxed")


def _tiny_png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (10, 20, 30)).save(buf, format="PNG")
    return buf.getvalue()


def test_report_sections(tmp_path):
    df = _full(pl.concat([_natural_rows(), _reconstruction_rows()], how="diagonal_relaxed"))
    tables = {title: table for title, _, table in summary_tables(df)}
    assert list(tables) == ["Natural adversaries: success by budget", "Natural adversaries: latent distance by target model", "The reconstruction defense"]
    assert tables["Natural adversaries: success by budget"].columns[:4] == ["label", "search", "N", "dr"]
    assert tables["The reconstruction defense"].columns[:3] == ["label", "clean", "clean reconstructed"]

    assert [s for s, *_ in build_charts(df)] == ["natural-success", "natural-distance", "reconstruction"]
    grids = {"generative-samples": _tiny_png(12, 8)}
    charts = build_charts(df, {"natural_images": _images()}, grids)
    assert [s for s, *_ in charts] == ["natural-success", "natural-distance", "natural-strip", "reconstruction", "generative-samples"]  # the study's generator after the sections
    assert _png(charts[-1][3]).shape == (16, 24, 3)  # the generator's grid, enlarged twice
    # Only reconstruction rows: no natural sections.
    only = _full(_reconstruction_rows())
    assert [s for s, *_ in build_charts(only)] == ["reconstruction"]
    assert [t for t, _, _ in summary_tables(only)] == ["The reconstruction defense"]

    (tmp_path / "generative").mkdir()
    (tmp_path / "generative" / "reconstructions.png").write_bytes(grids["generative-samples"])
    assert read_generative(str(tmp_path)) == {"generative-reconstructions": grids["generative-samples"]}


def test_paired_distances_compare_models_on_common_points():
    """cnn (clean 0.95) against logreg (0.89) on the points both searches broke: points 0-3 are
    common (4 is the cnn's alone, 5 not found by logreg); the differences are 0.5, 0.3, 0.1, 0.3."""
    frame = _natural_rows().with_columns(clean_acc=pl.when(pl.col("trial_id") == "t1").then(0.95).otherwise(0.89))
    points = pl.DataFrame({
        "trial_id": ["t1"] * 5 + ["t2"] * 5,
        "latent_search": ["hybrid"] * 10, "latent_samples": [16] * 10, "latent_dr": [0.25] * 10, "latent_rounds": [10] * 10,
        "point": [0, 1, 2, 3, 4, 0, 1, 2, 3, 5],
        "found": [True] * 9 + [False],
        "latent_dist": [1.5, 1.3, 1.1, 1.8, 9.0, 1.0, 1.0, 1.0, 1.5, None],
    })
    table = natural.paired_distances(points, frame)
    assert table.height == 1
    r = table.row(0, named=True)
    assert (r["stronger"], r["weaker"], r["n"]) == ("cnn", "logreg", 4)
    assert r["stronger_dist"] == pytest.approx(1.425) and r["weaker_dist"] == pytest.approx(1.125)
    diffs = np.array([0.5, 0.3, 0.1, 0.3])
    half = 3.182446 * diffs.std(ddof=1) / 2  # t(0.975, 3 df) * sd / sqrt(4)
    assert r["diff_mean"] == pytest.approx(0.3)
    assert (r["diff_lo"], r["diff_hi"]) == pytest.approx((0.3 - half, 0.3 + half), rel=1e-5)
    assert r["stronger_farther"] == 1.0
    one = natural.paired_distances(points.filter(pl.col("trial_id") == "t1"), frame)
    assert one.is_empty()
