"""Tables, charts and report sections of the `uncertainty` evaluator (MC-dropout models), on the
real bnn-test sweep (tests/specs/bnn.yaml: one mc-cnn, input sets clean, FGSM 0.3, C&W and
natural, T from 1 to 100), checked against the rows and the per-point artifact read
independently with polars."""

from __future__ import annotations

import re

import numpy as np
import polars as pl
import pytest
from PIL import Image

from analysis import uncertainty
from analysis.load import load, read_artifact
from analysis.report import build_charts, summary_tables, write_report

TS = [1, 2, 5, 10, 20, 50, 100]
SETS = ["clean", "fgsm 0.3", "cw", "natural"]


@pytest.fixture(scope="module")
def bnn_df(bnn_sweep) -> pl.DataFrame:
    return load(bnn_sweep.results).collect()


@pytest.fixture(scope="module")
def points(bnn_sweep) -> pl.DataFrame:
    return read_artifact(str(bnn_sweep.results), "uncertainty")


@pytest.fixture(scope="module")
def bnn_report(bnn_sweep, tmp_path_factory):
    return write_report(str(bnn_sweep.results), tmp_path_factory.mktemp("bnn-report"))



def _rows(df: pl.DataFrame) -> pl.DataFrame:
    return df.filter(evaluator="uncertainty")


# -- pure ----------------------------------------------------------------------------------


def test_input_set_names():
    assert uncertainty.input_set("clean", 0.0) == "clean"
    assert uncertainty.input_set("baseline", None) == "baseline"
    assert uncertainty.input_set("fgsm", 0.3) == "fgsm 0.3"
    assert uncertainty.input_set("pgd", 0.03) == "pgd 0.03"
    assert uncertainty.input_set("cw", None) == "cw"
    frame = pl.DataFrame({"attack": ["cw", "new", "fgsm", "clean", "pgd", "fgsm"], "eps": [None, 0.2, 0.3, 0.0, 0.3, 0.1]})
    named = uncertainty.with_input_set(frame)
    assert named.get_column("input_set").to_list() == ["cw", "new 0.2", "fgsm 0.3", "clean", "pgd 0.3", "fgsm 0.1"]
    assert named.columns == ["attack", "eps", "input_set"]
    # Clean first, then the attacks in registry order (unknown ones last), each one's eps ascending.
    assert uncertainty.set_order(frame) == ["clean", "fgsm 0.1", "fgsm 0.3", "pgd 0.3", "cw", "new 0.2"]
    # The artifact's own column: renamed in place.
    art = uncertainty.with_input_set(pl.DataFrame({"input_set": ["fgsm", "baseline"], "eps": [0.3, None]}), attack="input_set")
    assert art.get_column("input_set").to_list() == ["fgsm 0.3", "baseline"]


def test_stable_t_on_a_hand_made_frame():
    assert uncertainty.stable_t([1, 2, 5, 10], [0.60, 0.80, 0.895, 0.90]) == 5
    assert uncertainty.stable_t([10, 1, 5, 2], [0.90, 0.60, 0.895, 0.80]) == 5  # any order
    # A curve that leaves the band after entering it: stable only after its last excursion.
    assert uncertainty.stable_t([1, 2, 5, 10, 20], [0.90, 0.905, 0.85, 0.899, 0.90]) == 10
    assert uncertainty.stable_t([1, 2, 5], [0.9, 0.9, 0.9]) == 1
    assert uncertainty.stable_t([1, 2], [0.5, 0.7]) == 2
    assert uncertainty.stable_t([1, 2, 5], [0.7, 0.7, 0.7 + 0.01]) == 1  # within the tolerance, inclusive
    assert uncertainty.stable_t([1, 2], [None, None]) is None

    # auroc_table: per trial and adversarial set; clean rows (no AUROC) are left out.
    rows = []
    curves = {
        ("a", "fgsm", 0.3): ([0.60, 0.75, 0.85, 0.88, 0.89, 0.895, 0.90], [0.55, 0.70, 0.80, 0.85, 0.87, 0.88, 0.95]),
        ("a", "cw", None): ([0.52, 0.52, 0.51, 0.50, 0.50, 0.50, 0.50], [0.50] * 7),
        ("b", "fgsm", 0.3): ([0.70, 0.90, 0.97, 0.97, 0.98, 0.98, 0.98], [0.70, 0.80, 0.90, 0.95, 0.97, 0.975, 0.98]),
    }
    for (trial, attack, eps), (mi, smv) in curves.items():
        for t, a, s in zip(TS, mi, smv):
            rows.append(dict(evaluator="uncertainty", trial_id=trial, label=f"model {trial}", attack=attack, eps=eps, mc_samples=t,
                             auroc_mi=a, auroc_mi_se=0.01, auroc_smv=s, auroc_smv_se=0.02))
    for trial in "ab":
        for t in TS:
            rows.append(dict(evaluator="uncertainty", trial_id=trial, label=f"model {trial}", attack="clean", eps=0.0, mc_samples=t,
                             auroc_mi=None, auroc_mi_se=None, auroc_smv=None, auroc_smv_se=None))
    table = uncertainty.auroc_table(pl.DataFrame(rows, infer_schema_length=None))
    assert table.select("label", "input_set").rows() == [("model a", "fgsm 0.3"), ("model a", "cw"), ("model b", "fgsm 0.3")]
    assert table.get_column("mc_samples").to_list() == [100] * 3
    assert table.get_column("auroc_mi").to_list() == [0.90, 0.50, 0.98]
    assert table.get_column("auroc_smv_se").to_list() == [0.02] * 3
    assert table.get_column("stable_T").to_list() == [20, 5, 5]
    assert table.get_column("stable_T_smv").to_list() == [100, 1, 20]
    assert table.get_column("mi_last_change").to_list() == pytest.approx([0.005, 0.0, 0.0])


# -- on the real sweep ---------------------------------------------------------------------


def test_seed_table_matches_the_rows_and_the_points(bnn_df, points):
    rows = _rows(bnn_df)
    assert sorted(rows.get_column("mc_samples").unique().to_list()) == TS
    table = uncertainty.seed_table(bnn_df)
    assert table.columns == ["label", "mc_samples", "input_set", "accuracy", "mi_mean", "smv_mean", "mi_rel", "smv_rel"]
    assert table.get_column("input_set").to_list() == SETS  # one row per set, clean first
    assert table.get_column("mc_samples").to_list() == [100] * len(SETS)

    at_max = rows.filter(mc_samples=100)
    wheres = [pl.col("attack") == "clean", (pl.col("attack") == "fgsm") & (pl.col("eps") == 0.3), pl.col("attack") == "cw", pl.col("attack") == "natural"]
    for name, where in zip(SETS, wheres):
        row = table.filter(input_set=name).row(0, named=True)
        expected = at_max.filter(where)
        assert expected.height == 1, name
        assert row["accuracy"] == expected.item(0, "robust_acc")
        assert row["mi_mean"] == expected.item(0, "mi_mean")
        assert row["smv_rel"] == expected.item(0, "smv_rel")

    # Independently, from every point at T_max: the baseline set's mean MI, and each set's mean
    # MI, SMV and accuracy (float32 scores averaged once in float32, once here in float64).
    art = uncertainty.with_input_set(points, attack="input_set")
    assert art.get_column("input_set").unique(maintain_order=True).to_list() == ["baseline", *SETS]
    per_set = art.group_by("input_set").agg(n=pl.len(), mi=pl.col("mi").mean(), smv=pl.col("smv").mean(), acc=1 - pl.col("wrong").mean())
    base = per_set.filter(input_set="baseline").row(0, named=True)
    assert base["n"] == rows.item(0, "n_baseline") == 200
    for r in table.iter_rows(named=True):
        p = per_set.filter(input_set=r["input_set"]).row(0, named=True)
        assert p["n"] == 400
        assert r["mi_mean"] == pytest.approx(p["mi"], rel=1e-4, abs=1e-7)
        assert r["smv_mean"] == pytest.approx(p["smv"], rel=1e-4, abs=1e-9)
        assert r["accuracy"] == pytest.approx(p["acc"], abs=1e-6)
        assert r["mi_rel"] == pytest.approx(r["mi_mean"] / base["mi"], rel=1e-4)
        assert r["smv_rel"] == pytest.approx(r["smv_mean"] / base["smv"], rel=1e-4)

    # The MC-dropout model is more uncertain on adversarial inputs than on clean ones.
    mi = dict(zip(table["input_set"], table["mi_mean"]))
    assert mi["fgsm 0.3"] > mi["clean"] and mi["cw"] > mi["clean"]
    assert table.filter(input_set="clean").item(0, "accuracy") > 0.9

    # Another T; the source text's layout (measures as rows, input sets as columns).
    at10 = uncertainty.seed_table(bnn_df, mc_samples=10)
    assert at10.get_column("mc_samples").to_list() == [10] * len(SETS)
    assert at10.get_column("mi_mean").to_list() == [rows.filter(mc_samples=10, attack=a).item(0, "mi_mean") for a in ("clean", "fgsm", "cw", "natural")]
    wide = uncertainty.seed_table(bnn_df, wide=True)
    assert wide.columns == ["label", "mc_samples", "measure", *SETS]
    assert wide.get_column("measure").to_list() == ["accuracy", "mean MI", "mean SMV", "relative MI", "relative SMV"]
    assert wide.filter(measure="mean MI").row(0)[3:] == tuple(table.get_column("mi_mean"))
    with pytest.raises(ValueError, match="mc_samples = 3"):
        uncertainty.seed_table(bnn_df, mc_samples=3)
    with pytest.raises(ValueError, match="no uncertainty rows"):
        uncertainty.seed_table(bnn_df.filter(evaluator="robustness"))


def test_auroc_table_and_curve_agree_with_the_rows(bnn_df, vega_values):
    rows = _rows(bnn_df)
    table = uncertainty.auroc_table(bnn_df)
    assert table.get_column("input_set").to_list() == SETS[1:]
    curve = uncertainty.curve_data(bnn_df)
    assert curve.height == 2 * (len(SETS) - 1) * len(TS)  # MI and SMV x the adversarial sets x T
    for r in table.iter_rows(named=True):
        attack = r["input_set"].split()[0]
        at = rows.filter(attack=attack).sort("mc_samples")
        assert r["auroc_mi"] == at.item(-1, "auroc_mi") and r["auroc_smv_se"] == at.item(-1, "auroc_smv_se")
        assert r["mi_last_change"] == pytest.approx(abs(at.item(-1, "auroc_mi") - at.item(-2, "auroc_mi")))
        assert 0 < r["auroc_mi_se"] < 0.1
        # stable_T read off the curve: every T from it within 0.01 of the T_max AUROC, the T
        # before it (if any) not.
        mi = curve.filter(input_set=r["input_set"], measure="MI").sort("mc_samples")
        assert mi.get_column("mc_samples").to_list() == TS
        final = mi.item(-1, "auroc")
        assert final == r["auroc_mi"]
        off = (mi.get_column("auroc") - final).abs() > 0.01 + 1e-12
        later = mi.filter(pl.col("mc_samples") >= r["stable_T"])
        assert ((later.get_column("auroc") - final).abs() <= 0.01 + 1e-12).all()
        before = mi.filter(pl.col("mc_samples") < r["stable_T"])
        if not before.is_empty():
            assert off[before.height - 1]
        assert mi.get_column("lo").to_list() == pytest.approx((mi["auroc"] - 1.96 * mi["se"]).clip(0, 1).to_list())
    # MI tells FGSM 0.3 from clean inputs far better than chance.
    assert table.filter(input_set="fgsm 0.3").item(0, "auroc_mi") > 0.7

    spec = uncertainty.auroc_curve(bnn_df).to_dict()
    assert spec["facet"]["row"]["field"] == "measure" and spec["facet"]["column"]["field"] == "label"
    assert len(spec["spec"]["layer"]) == 3  # band, line, chance rule
    line = spec["spec"]["layer"][1]["encoding"]
    assert line["x"]["scale"]["type"] == "log" and line["y"]["scale"]["domain"][1] == 1.0
    assert line["y"]["scale"]["domain"][0] <= 0.4 and line["y"]["scale"]["domain"][0] <= min(curve.get_column("lo"))
    drawn = pl.DataFrame(vega_values(spec))
    assert drawn.height == curve.height and set(drawn.get_column("measure")) == {"MI", "SMV"}


def test_distributions_chart(bnn_df, points):
    stats = uncertainty.box_stats(points, bnn_df)
    assert stats.height == 2 * 5  # MI and SMV x baseline, clean, fgsm 0.3, cw, natural
    art = uncertainty.with_input_set(points, attack="input_set")
    for r in stats.iter_rows(named=True):
        values = art.filter(input_set=r["input_set"]).get_column(r["measure"].lower()).to_numpy()
        assert r["n"] == len(values) and r["median"] == pytest.approx(np.median(values))
        assert r["min"] <= r["q1"] <= r["median"] <= r["q3"] <= r["max"]
    assert stats.filter(measure="MI").get_column("input_set").to_list() == ["baseline", *SETS]

    spec = uncertainty.distributions(points, bnn_df).to_dict()
    assert len(spec["vconcat"]) == 2
    for panel, measure in zip(spec["vconcat"], ("MI", "SMV")):
        assert panel["facet"]["column"]["field"] == "label"
        assert len(panel["spec"]["layer"]) == 4  # whisker, box, median, mean
        assert panel["spec"]["layer"][1]["encoding"]["y"]["scale"]["type"] == "sqrt"
        drawn = pl.DataFrame(panel["data"]["values"])
        assert drawn.height == 1 + len(SETS) and set(drawn.get_column("measure")) == {measure}  # with the baseline
    with pytest.raises(ValueError, match="no uncertainty artifact points"):
        uncertainty.distributions(points.filter(pl.col("trial_id") == "none"), bnn_df)


def test_report_has_the_uncertainty_sections(bnn_report, bnn_df, points):
    page = bnn_report.read_text()
    ids = re.findall(r'<div class="chart" id="([^"]+)"></div>', page)
    assert {"uncertainty-auroc", "uncertainty-distributions", "curves"} <= set(ids)
    assert page.count("<h2>Uncertainty per input set</h2>") == 1 and "<h2>MI and SMV distributions</h2>" in page and "<h2>Detecting adversarial inputs (AUROC)</h2>" in page
    for stem in ("uncertainty-auroc", "uncertainty-distributions"):
        image = np.asarray(Image.open(bnn_report.parent / f"{stem}.png").convert("L"), dtype=float)
        assert min(image.shape) > 150 and image.std() > 10, stem
        assert (image < 128).mean() > 0.005, f"{stem}.png has almost no ink"
    table = uncertainty.seed_table(bnn_df)
    for acc in table.get_column("accuracy"):
        assert f"<td>{acc:.3f}</td>" in page
    auroc = uncertainty.auroc_table(bnn_df)
    for v in auroc.get_column("auroc_mi"):
        assert f"<td>{v:.3f}</td>" in page

    # Each evaluator's sections follow its rows: robustness alone has no uncertainty section,
    # uncertainty alone nothing else.
    robustness = bnn_df.filter(evaluator="robustness")
    assert not [s for s, *_ in build_charts(robustness) if s.startswith("uncertainty")]
    assert [t for t, _, _ in summary_tables(robustness)] == ["Best robust accuracy", "Area under the robustness curve", "Per-attack log", "Signs of a broken evaluation", "Confidence on mistakes"]
    only = _rows(bnn_df)
    assert [s for s, *_ in build_charts(only)] == ["uncertainty-auroc"]  # no artifact given: no distributions
    assert [s for s, *_ in build_charts(only, {"uncertainty": points})] == ["uncertainty-auroc", "uncertainty-distributions"]
    assert [t for t, _, _ in summary_tables(only)] == ["Uncertainty per input set", "Detecting adversarial inputs (AUROC)"]


def test_uncertainty_charts_render_offline_in_headless_chromium(bnn_report, charts_render):
    charts_render(bnn_report, ("uncertainty-auroc", "uncertainty-distributions"))
