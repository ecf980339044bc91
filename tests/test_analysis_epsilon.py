"""Tables, charts, crafted grid and report sections of epsilon (analysis.epsilon), on a results
folder written here with the real writers (study.results, study.artifacts): two trials, cnn
(b2) and triplet (a1; its trial id sorts first, its label second), four classes."""

from __future__ import annotations

import io
import re

import numpy as np
import polars as pl
import pytest
from PIL import Image

from analysis import epsilon, images
from analysis.load import load
from analysis.report import build_charts, read_artifacts, summary_tables, write_report
from study import artifacts, results

TRIALS = {"b2": "cnn", "a1": "triplet"}
FIRST = "b2"  # the first trial by label
C, H, W = 4, 6, 5
NORMS = ("l0", "l1", "l2", "linf")
SCALE = {"l0": 100.0, "l1": 50.0, "l2": 5.0}
QUANTILES = (0.1, 0.5)
CRAFT_EPS = (0.1, 0.3)
EMBED_EPS = (0.25, 0.5)
INPUT_ATTACKS = (("linf", 0.3), ("l2", 4.5))


def _matrix(trial: str, norm: str, per_class: int) -> np.ndarray:
    """Class x class mean distances. Within a class below every other class, except: the first
    trial's 10-per-class l2 sample has class 2 above its distance to class 0 and class 3 tied
    with it; the other trial's l2 has class 1 above; Linf is about 1 everywhere, its smallest
    entry at (0, 3) and (3, 0)."""
    if norm == "linf":
        m = np.full((C, C), 0.996 if per_class == 10 else 0.5)
        np.fill_diagonal(m, 1.0 if per_class == 10 else 0.6)
        m[0, 3] = m[3, 0] = 0.941 if per_class == 10 else 0.4
        return m
    s = SCALE[norm]
    m = np.array([[s * (2 + 0.1 * (a + b)) for b in range(C)] for a in range(C)])
    np.fill_diagonal(m, s * 1.5)
    if norm == "l2" and per_class == 10 and trial == FIRST:
        m[2, 2] = s * 2.35
        m[3, 3] = s * (2 + 0.1 * (3 + 0))  # exactly its distance to class 0: not below it
    if norm == "l2" and trial != FIRST:
        m[1, 1] = s * 9
    return m


def _within_smaller_rate(m: np.ndarray) -> float:
    return float(np.mean([m[c, c] < min(m[c, b] for b in range(C) if b != c) for c in range(C)]))


def _x0(trial: str) -> np.ndarray:
    """The first test image of each class, (C, 1, H, W): different per trial."""
    return np.random.default_rng(7 if trial == FIRST else 8).random((C, 1, H, W))


def _crafted(x0: np.ndarray, a: int, b: int, eps: float) -> np.ndarray:
    return np.clip(x0[a] + eps * np.sign(x0[b]), 0, 1)


def _rule_acc(trial: str, norm: str, q: float, rule: str) -> float:
    return round(0.3 + q + (0.1 if rule == "per-class" else 0.0) + (0.02 if trial == FIRST else 0.0) + (0.01 if norm == "l2" else 0.0), 6)


def _mean_eps(norm: str, q: float) -> float:
    return round((0.1 if norm == "linf" else 1.0) * (1 + q), 6)


# The input-space PGD adversaries' embedding distances (a1), fooled or not, per (norm, eps): L2 fools no point.
ADVERSARIES = {("linf", 0.3): [(0.10, True), (0.12, True), (0.60, True), (2.00, True), (0.05, False)], ("l2", 4.5): [(1.01, False), (1.02, False)]}


def _rows(trial: str) -> list[dict]:
    label = TRIALS[trial]
    ident = dict(study="eps", trial_id=trial, label=label, dataset="mnist-5k", model=label, seed=0, clean_acc=0.95)
    out = []
    for per_class in (5, 10):
        for norm in NORMS:
            m = _matrix(trial, norm, per_class)
            off = m[~np.eye(C, dtype=bool)]
            for q in QUANTILES:
                out.append(dict(
                    evaluator="distances", norm=norm, per_class=per_class, eps_quantile=q, eps_fraction=0.5, within_mean=float(np.diag(m).mean()),
                    between_mean=float(off.mean()), within_smaller_rate=_within_smaller_rate(m), nearest_other_mean=float(off.min()),
                    eps=0.5 * q * float(off.min()), eps_min=0.4 * q * float(off.min()), eps_max=0.6 * q * float(off.min()), n_eval=C * per_class,
                ))
    for norm in ("linf", "l2"):
        for q in QUANTILES:
            for attack in ("pgd", "worst"):
                for rule in ("uniform", "per-class"):  # uniform first: the pairing must not be positional
                    acc = _rule_acc(trial, norm, q, rule) + (0.05 if attack == "pgd" else 0.0)
                    out.append(dict(
                        evaluator="robustness", attack=attack, norm=norm, eps=_mean_eps(norm, q), eps_rule=rule, eps_quantile=q, eps_fraction=0.5,
                        per_class=10, steps=10, step_size=0.25, restarts=1, robust_acc=acc, n_eval=100,
                    ))
    for eps in CRAFT_EPS:
        out.append(dict(
            evaluator="crafted", norm="linf", eps=eps, per_class=2, n_eval=C * (C - 1) * 4, robust_acc=0.9 - eps, target_rate=eps / 3,
            adv_confidence_mean=0.7 + eps / 10, linf_mean=eps * 0.99,
        ))
    if trial != FIRST:  # the triplet model's embedding rows
        out.append(dict(evaluator="embedding", knn_acc=0.97, within_mean=0.4, between_mean=1.2, per_class=10))
        for e in EMBED_EPS:
            out.append(dict(evaluator="embedding", attack="embedding-pgd", embed_eps=e, robust_acc=1 - e, success_rate=e, steps=40, step_size=0.01))
            for norm, eps in INPUT_ATTACKS:
                out.append(dict(
                    evaluator="embedding", attack="pgd", norm=norm, eps=eps, embed_eps=e, robust_acc=0.1, success_rate=0.9,
                    inside_rate=None if norm == "l2" else e, steps=40,
                ))
    return [{**ident, **r, "row_key": results.row_key(trial, r)} for r in out]


def _artifacts(root: str, trial: str) -> None:
    def write(name: str, rows: list[dict]) -> None:
        artifacts.write(root, name, trial, {k: [r[k] for r in rows] for k in rows[0]})

    write("class_distances", [
        dict(split="train", norm=norm, per_class=per_class, class_a=a, class_b=b, mean=float(_matrix(trial, norm, per_class)[a, b]), n_pairs=per_class**2)
        for per_class in (5, 10) for norm in NORMS for a in range(C) for b in range(C)
    ])
    write("class_eps", [
        dict(split="train", norm=norm, per_class=per_class, quantile=q, fraction=0.5, **{"class": c}, quantile_dist=qd, eps=0.5 * qd)
        for per_class in (5, 10) for norm in ("l2", "linf") for q in QUANTILES for c in range(C)
        for qd in [(1 + 0.1 * c) * (1 + q) * (per_class / 10) * (1 if trial == FIRST else 2)]
    ])
    write("class_eps_robustness", [
        dict(norm=norm, quantile=q, fraction=0.5, attack=attack, **{"class": c}, eps=_mean_eps(norm, q) * (0.7 + 0.2 * c), eps_uniform=_mean_eps(norm, q),
             n=25, acc_per_class=0.5 + 0.1 * c, acc_uniform=0.6 - 0.05 * c)
        for norm in ("linf", "l2") for q in QUANTILES for attack in ("pgd", "worst") for c in range(C)
    ])
    x0 = _x0(trial)
    shape = dict(channels=1, height=H, width=W)
    crafted = [dict(kind="x0", eps=None, class_a=c, class_b=c, pixels=x0[c].ravel().tolist(), pred=c, confidence=0.9, **shape) for c in range(C)]
    crafted += [
        dict(kind="crafted", eps=eps, class_a=a, class_b=b, pixels=_crafted(x0, a, b, eps).ravel().tolist(), pred=b if (a, eps) == (0, 0.3) else a,
             confidence=0.8, **shape)
        for eps in CRAFT_EPS for a in range(C) for b in range(C) if a != b
    ]
    write("crafted_images", crafted)
    if trial == FIRST:
        return
    edges = np.linspace(0, 2, 81)
    write("embedding_distances", [
        dict(kind=kind, bin_lo=float(lo), bin_hi=float(hi), count=int(i < 30) * (5 if kind == "within" else 1) + int(i >= 30 and kind == "between") * 9)
        for kind in ("within", "between") for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:]))
    ])
    write("embedding_class_distances", [dict(class_a=a, class_b=b, mean=0.3 if a == b else 1.1 + 0.05 * (a + b)) for a in range(C) for b in range(C)])
    adv = [
        dict(attack="pgd", norm=norm, eps=eps, embed_eps=None, point=i, fooled=fooled, embed_dist=d, l2=1.0, linf=eps)
        for (norm, eps), points in ADVERSARIES.items() for i, (d, fooled) in enumerate(points)
    ]
    adv += [dict(attack="embedding-pgd", norm=None, eps=None, embed_eps=0.25, point=0, fooled=True, embed_dist=0.25, l2=0.7, linf=0.2)]
    write("embedding_adversaries", adv)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("epsilon") / "results")
    for trial in TRIALS:
        _artifacts(root, trial)  # before the rows, as a trial writes them
        results.write_trial(root, trial, _rows(trial))
    results.compact(root)
    return root


@pytest.fixture(scope="module")
def df(folder) -> pl.DataFrame:
    return load(folder).collect()


@pytest.fixture(scope="module")
def found(folder) -> dict[str, pl.DataFrame]:
    return read_artifacts(folder)


# -- distances ------------------------------------------------------------------------------


def test_distance_table_is_the_first_trials_rows(df):
    assert epsilon.first_trial(df) == (FIRST, "cnn")
    table = epsilon.distance_table(df)
    assert table.columns == [
        "per_class", "norm", "quantile", "fraction", "within_mean", "between_mean", "within_smaller_rate", "nearest_other_mean", "eps", "eps_min", "eps_max",
    ]
    assert table.select("per_class", "norm", "quantile").rows() == [(p, n, q) for p in (5, 10) for n in NORMS for q in QUANTILES]
    r = table.filter(per_class=10, norm="l2", quantile=0.5).row(0, named=True)
    m = _matrix(FIRST, "l2", 10)
    assert r["within_mean"] == pytest.approx(np.diag(m).mean())  # the cnn's, not the triplet's
    assert r["within_smaller_rate"] == 0.5
    assert (r["eps"], r["eps_min"], r["eps_max"]) == pytest.approx((0.25 * 10.5, 0.2 * 10.5, 0.3 * 10.5))  # nearest_other_mean: classes 0 and 1, 10.5


def test_closer_classes_finds_the_classes_made_closer(df, found):
    sample = epsilon.sample(found["class_distances"], df)
    assert set(sample.get_column("trial_id")) == {FIRST} and set(sample.get_column("per_class")) == {10}
    closer = epsilon.closer_classes(sample)
    assert closer.columns == ["norm", "class", "within", "nearest_other", "distance"]
    l2 = closer.filter(norm="l2")
    assert l2.select("class", "nearest_other").rows() == [(2, 0), (3, 0)]  # class 3 ties with class 0: not below it
    assert l2.get_column("within").to_list() == pytest.approx([5 * 2.35, 11.5])
    assert l2.get_column("distance").to_list() == pytest.approx([11.0, 11.5])
    # Linf: every diagonal entry is the largest of its row; nearest ties go to the lower class.
    assert closer.filter(norm="linf").select("class", "nearest_other", "distance").rows() == [(0, 3, 0.941), (1, 0, 0.996), (2, 0, 0.996), (3, 0, 0.941)]
    assert closer.filter(pl.col("norm").is_in(["l0", "l1"])).is_empty()
    # The same count as the rows' within_smaller_rate, for every norm.
    rates = epsilon.distance_table(df).filter(per_class=10, quantile=0.1)
    for norm, rate in rates.select("norm", "within_smaller_rate").rows():
        assert closer.filter(norm=norm).height == round((1 - rate) * C), norm

    assert epsilon.matrix_range(sample).rows() == [("linf", 0.941, "0-3", 1.0, "0-0")]
    assert epsilon.matrix_range(sample.filter(pl.col("norm") != "linf")).is_empty()


def test_distance_heatmaps_write_the_values(df, found, vega_values):
    sample = epsilon.sample(found["class_distances"], df)
    spec = epsilon.distance_heatmap(sample, "l2").to_dict()
    cells = vega_values(spec)
    assert len(cells) == C * C
    got = {(r["class_a"], r["class_b"]): r["mean"] for r in cells}
    assert got[(2, 2)] == pytest.approx(5 * 2.35) and got[(2, 0)] == pytest.approx(11.0)
    assert [layer["mark"]["type"] for layer in spec["layer"]] == ["rect", "rect", "text"]
    assert spec["layer"][2]["encoding"]["text"]["field"] == "mean"
    assert "10 train images per class" in spec["title"]
    with pytest.raises(ValueError, match="no class_distances cells"):
        epsilon.distance_heatmap(sample.filter(pl.col("norm") != "l0"), "l0")

    embedded = vega_values(epsilon.embedding_heatmap(found["embedding_class_distances"], df).to_dict())
    assert {r["label"] for r in embedded} == {"triplet"} and len(embedded) == C * C


# -- per-class eps --------------------------------------------------------------------------


def test_class_eps_chart_is_the_first_trials_largest_sample(df, found, vega_values):
    drawn = vega_values(epsilon.class_eps_chart(found["class_eps"], df).to_dict())
    assert len(drawn) == 2 * len(QUANTILES) * C  # l2 and linf, per_class 10 only
    got = {(r["norm"], r["q"], r["class"]): r["eps"] for r in drawn}
    assert got[("l2", "q = 0.5", 3)] == pytest.approx(0.5 * 1.3 * 1.5)  # the cnn's: the triplet's are twice that


def test_rule_table_pairs_per_class_with_uniform(df):
    table = epsilon.rule_table(df)
    assert table.columns == ["label", "norm", "quantile", "fraction", "eps", "robust_acc_per_class", "robust_acc_uniform", "gain"]
    assert table.select("label", "norm", "quantile").rows() == [(lb, n, q) for lb in ("cnn", "triplet") for n in ("l2", "linf") for q in QUANTILES]
    for label, norm, q, _, eps, per, uniform, gain in table.rows():
        trial = {v: k for k, v in TRIALS.items()}[label]
        assert eps == _mean_eps(norm, q)
        assert (per, uniform) == pytest.approx((_rule_acc(trial, norm, q, "per-class"), _rule_acc(trial, norm, q, "uniform")))
        assert gain == pytest.approx(0.1)
    pgd = epsilon.rule_table(df, attack="pgd")
    assert pgd.get_column("robust_acc_uniform").to_list() == pytest.approx([u + 0.05 for u in table.get_column("robust_acc_uniform")])
    with pytest.raises(ValueError, match="eps_rule"):
        epsilon.rule_table(df.filter(pl.col("eps_rule").is_null()))


def test_class_rule_chart_draws_both_rules_per_class(df, found, vega_values):
    drawn = pl.DataFrame(vega_values(epsilon.class_rule_chart(found["class_eps_robustness"], df).to_dict()))
    assert drawn.height == len(TRIALS) * 2 * len(QUANTILES) * C * 2  # worst only
    got = {(r["label"], r["setting"], r["class"], r["rule"]): (r["accuracy"], r["eps"]) for r in drawn.iter_rows(named=True)}
    assert got[("cnn", "l2 q=0.5", 2, "per-class")] == pytest.approx((0.7, 1.5 * 1.1))
    assert got[("cnn", "l2 q=0.5", 2, "uniform")] == pytest.approx((0.5, 1.5))


# -- crafted images -------------------------------------------------------------------------


def test_crafted_table(df):
    table = epsilon.crafted_table(df)
    assert table.columns == ["label", "eps", "n_eval", "robust_acc", "target_rate", "adv_confidence_mean", "linf_mean"]
    assert table.select("label", "eps").rows() == [(lb, e) for lb in ("cnn", "triplet") for e in CRAFT_EPS]
    assert table.filter(label="cnn", eps=0.3).select("robust_acc", "target_rate").row(0) == pytest.approx((0.6, 0.1))


def _png(data: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG"
    return np.asarray(img.convert("RGB"))


def _cell(png: np.ndarray, a: int, b: int) -> np.ndarray:
    """The image in row a (x0's class), column b (x1's class)."""
    x = epsilon.GRID_LABEL_W + images.PAD + b * (W * images.SCALE + images.PAD)
    y = epsilon.GRID_HEAD_H + images.PAD + a * (H * images.SCALE + epsilon.GRID_TEXT_H + images.PAD)
    return png[y : y + H * images.SCALE, x : x + W * images.SCALE]


def _shown(img: np.ndarray) -> np.ndarray:
    """A (1, H, W) image as the grid draws it: gray RGB, upscaled by nearest neighbour."""
    gray = (np.clip(img[0], 0, 1) * 255 + 0.5).astype(np.uint8)
    return np.repeat(np.repeat(gray, images.SCALE, axis=0), images.SCALE, axis=1)[..., None].repeat(3, axis=2)


def test_crafted_grid_size_and_cells(df, found):
    grids = epsilon.crafted_grids(found["crafted_images"], df)
    assert list(grids) == list(CRAFT_EPS)
    png = _png(grids[0.3])
    width, height = epsilon.grid_size(C, H, W)
    assert png.shape == (height, width, 3)
    assert width == epsilon.GRID_LABEL_W + C * (W * images.SCALE + images.PAD) + images.PAD
    assert height == epsilon.GRID_HEAD_H + C * (H * images.SCALE + epsilon.GRID_TEXT_H + images.PAD) + images.PAD
    x0 = _x0(FIRST)  # the cnn's images: the first trial by label
    for c in range(C):
        assert np.array_equal(_cell(png, c, c), _shown(x0[c])), c  # the diagonal is x0 itself
    assert np.array_equal(_cell(png, 1, 3), _shown(_crafted(x0, 1, 3, 0.3)))
    other = _png(epsilon.crafted_grid(found["crafted_images"], df, 0.3, trial_id="a1"))
    assert np.array_equal(_cell(other, 0, 0), _shown(_x0("a1")[0]))
    with pytest.raises(ValueError, match="eps 0.2"):
        epsilon.crafted_grid(found["crafted_images"], df, 0.2)


# -- the embedding --------------------------------------------------------------------------


def test_embedding_table(df):
    table = epsilon.embedding_table(df)
    cols = [f"e={e:g} {c}" for e in EMBED_EPS for c in ("robust_acc", "inside l2 4.5", "inside linf 0.3")]  # norms l0, l1, l2, linf
    assert table.columns == ["label", "knn_acc", "within_mean", "between_mean", *cols]
    assert table.rows() == [("triplet", 0.97, 0.4, 1.2, 0.75, None, 0.25, 0.5, None, 0.5)]  # L2 fooled nothing: no inside rate


def test_embedding_histograms_and_rules(df, found, vega_values):
    drawn = vega_values(epsilon.distance_histogram(found["embedding_distances"], df).to_dict())
    bins = [r for r in drawn if r["role"] == "bin"]
    assert len(bins) == 2 * 80
    for kind in ("within", "between"):
        assert sum(r["fraction"] for r in bins if r["kind"] == kind) == pytest.approx(1.0)
    assert sorted(r["embed_eps"] for r in drawn if r["role"] == "rule") == list(EMBED_EPS)

    data = epsilon.adversary_data(found["embedding_adversaries"], df)
    assert data.columns == ["label", "attack", "bin_lo", "bin_hi", "count", "fraction"]
    linf = data.filter(attack="linf 0.3")
    # Fooled only (0.05 is not); 0.10 and 0.12 share [0.10, 0.15); 2.0 falls in the last bin.
    assert linf.select("bin_lo", "count").rows() == [(pytest.approx(0.10), 2), (pytest.approx(0.60), 1), (pytest.approx(1.95), 1)]
    assert linf.get_column("fraction").to_list() == pytest.approx([0.5, 0.25, 0.25])
    assert data.get_column("attack").unique().to_list() == ["linf 0.3"]  # L2 fooled nothing
    chart = vega_values(epsilon.adversary_chart(found["embedding_adversaries"], df).to_dict())
    assert sorted((r["attack"], r["embed_eps"]) for r in chart if r["role"] == "rule") == [("linf 0.3", e) for e in EMBED_EPS]


# -- report ---------------------------------------------------------------------------------

# In registry order (study.registry.BUILTIN): the robustness evaluator's per-class eps section,
# then the distances, crafted and embedding evaluators' sections.
EPSILON_CHARTS = [
    "class-eps-robustness", "distances-l0", "distances-l1", "distances-l2", "distances-linf", "class-eps", "crafted-0.1", "crafted-0.3",
    "embedding-classes", "embedding-distances", "embedding-adversaries",
]
EPSILON_TABLES = ["Per-class against uniform eps", "Distances between classes", "Classes closer to another class", "The Linf distance matrix", "Crafted images", "Epsilon in the embedding"]


def _plain_robustness(df: pl.DataFrame) -> pl.DataFrame:
    """A plain eps grid (eps_rule null) of both trials, in the loaded frame's columns."""
    rows = [
        dict(df.row(0, named=True), evaluator="robustness", attack=a, norm="linf", eps=e, eps_rule=None, eps_quantile=None, eps_fraction=None, per_class=None,
             robust_acc=0.9 - e, success_rate=e, steps=10, row_key=f"{t}-{a}-{e}", trial_id=t, label=label)
        for t, label in TRIALS.items() for a in ("pgd", "worst") for e in (0.0, 0.1, 0.3)
    ]
    return pl.DataFrame(rows, schema=df.schema)


def test_report_sections_follow_the_rows(df, found, vega_values):
    plain = _plain_robustness(df)
    both = pl.concat([df, plain])
    stems = [s for s, *_ in build_charts(both, found)]
    assert stems[-len(EPSILON_CHARTS):] == EPSILON_CHARTS
    titles = [t for t, _, _ in summary_tables(both, found)]
    assert titles[-len(EPSILON_TABLES):] == EPSILON_TABLES and titles[0] == "Best robust accuracy"
    # The plain robustness sections leave out the per-class and uniform eps rows.
    curves = next(c for s, _, _, c in build_charts(both, found) if s == "curves")
    assert len(vega_values(curves.to_dict())) == plain.height
    best = dict((t, table) for t, _, table in summary_tables(both, found))["Best robust accuracy"]
    assert "eps_rule" not in best.columns and best.height == 4  # pgd and worst at 0.1, 0.3
    # Without the rows and artifacts: nothing of epsilon; artifacts of other trials count for nothing.
    assert [s for s, *_ in build_charts(plain)] == ["curves", "frontier-linf", "heatmap-linf", "perturbations"]
    assert not set(EPSILON_TABLES) & {t for t, _, _ in summary_tables(plain)}
    others = {name: art.with_columns(trial_id=pl.lit("elsewhere")) for name, art in found.items()}
    assert not set(EPSILON_CHARTS) & {s for s, *_ in build_charts(plain, others)}
    assert not set(EPSILON_TABLES) & {t for t, _, _ in summary_tables(plain, others)}
    # Rows without artifacts: the tables from rows only.
    assert [t for t, _, _ in summary_tables(df)] == ["Per-class against uniform eps", "Distances between classes", "Crafted images", "Epsilon in the embedding"]
    assert build_charts(df) == []


def test_report_renders_the_epsilon_sections(folder, tmp_path, charts_render):
    index = write_report(folder, tmp_path / "report")
    page = index.read_text()
    for title in EPSILON_TABLES:
        assert f"<h2>{title}</h2>" in page
    for stem in EPSILON_CHARTS:
        assert (index.parent / f"{stem}.png").is_file(), stem
    assert re.findall(r'<img class="figure" id="([^"]+)"', page) == ["crafted-0.1", "crafted-0.3"]
    assert "trial cnn" in page  # the captions name the trial the input-space views use
    charts_render(index, [s for s in EPSILON_CHARTS if not s.startswith("crafted")])
