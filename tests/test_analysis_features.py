"""Tables and charts of the robust / non-robust features study (analysis.features), on small
frames built here from literal rows with the contract's columns: three models (cnn, logreg, mlp)
trained on five sets (D, D_R, D_NR, D_rand, D_det), robustness rows of PGD Linf at eps 0 and 0.3,
and the features evaluator's transfer rows at two eps."""

from __future__ import annotations

import polars as pl
import pytest
from scipy.stats import binomtest

from analysis import features

MODELS = ("cnn", "logreg", "mlp")
# train_set -> (set_eps, set_start): the settings of each training set.
SETS = {None: (None, None), "robust": (None, "noise"), "non-robust": (None, "noise"), "rand": (0.5, None), "det": (0.5, None)}
N = 1000
# (model, train_set) -> (clean correct, robust correct at PGD Linf 0.3) of N points.
COUNTS = {
    ("cnn", None): (990, 0), ("cnn", "robust"): (850, 410), ("cnn", "non-robust"): (880, 3), ("cnn", "rand"): (630, 0), ("cnn", "det"): (440, 0),
    ("logreg", None): (920, 12), ("logreg", "robust"): (700, 60), ("logreg", "non-robust"): (500, 1), ("logreg", "rand"): (140, 0), ("logreg", "det"): (110, 0),
    ("mlp", None): (980, 0), ("mlp", "robust"): (800, 300), ("mlp", "non-robust"): (820, 0), ("mlp", "rand"): (500, 2), ("mlp", "det"): (1000, 0),
}
# The contract's columns the analysis reads (every row has each; null where it does not apply).
COLUMNS = (
    "evaluator", "model", "label", "trial_id", "attack", "norm", "eps", "steps", "eps_rule", "clean_acc", "robust_acc", "n_eval", "adv_eps", "adv_norm",
    "source_label", "source_trial_id", "transfer_error", "agreement", "train_set", "set_eps", "set_step", "set_steps", "set_start", "set_key", "set_n",
    "set_target_rate", "set_rep_reduction", "set_l2_mean", "set_label_agreement",
)
# model -> transfer_error of the standard source's examples at eps 0.25 and 0.5, trained on D.
TRANSFER_D = {"cnn": (0.6, 0.9), "logreg": (0.2, 0.4), "mlp": (0.4, 0.7)}


def _trial(model: str, kind: str | None, eps: float | None = None, start: str | None = None) -> dict:
    """The training group of one trial, as every row of it carries."""
    set_eps, set_start = SETS[kind] if eps is None and start is None else (eps, start)
    suffix = "" if kind is None else f" {kind}" + ("" if set_eps is None else f" {set_eps:g}") + ("" if set_start is None else f" {set_start}")
    label = f"{model}{suffix}"
    return dict(
        trial_id=f"t-{label}", label=label, model=model, train_set=kind, set_eps=set_eps, set_step=None if set_eps is None else set_eps / 4,
        set_steps=100 if kind else None, set_start=set_start, set_key=f"k-{kind}-{set_eps}-{set_start}" if kind else None, set_n=50000 if kind else None,
        adv_eps=None, adv_norm=None,
    )


def _robustness(trial: dict, clean: int, robust: int, n: int = N, extra_pgd: int | None = None) -> list[dict]:
    """The trial's PGD Linf rows at eps 0 and 0.3 (and a weaker second PGD run at 0.3 with
    ``extra_pgd`` correct, when given)."""
    common = dict(evaluator="robustness", attack="pgd", norm="linf", n_eval=n, clean_acc=clean / n, eps_rule=None, **trial)
    rows = [dict(common, eps=0.0, robust_acc=clean / n, steps=None), dict(common, eps=0.3, robust_acc=robust / n, steps=40)]
    if extra_pgd is not None:
        rows.append(dict(common, eps=0.3, robust_acc=extra_pgd / n, steps=10))
    return rows


def _features(trial: dict, errors: tuple[float, float]) -> list[dict]:
    return [
        dict(
            evaluator="features", attack="pgd", norm="l2", eps=eps, n_eval=N, source_label="source cnn", source_trial_id="t-source",
            transfer_error=e, agreement=0.5, robust_acc=1 - e, **trial,
        )
        for eps, e in zip((0.25, 0.5), errors)
    ]


def _rows(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame([{c: r.get(c) for c in COLUMNS} for r in rows], infer_schema_length=None)


def _frame(counts=COUNTS, with_features=True) -> pl.DataFrame:
    rows = []
    for (model, kind), (clean, robust) in counts.items():
        trial = _trial(model, kind)
        rows += _robustness(trial, clean, robust)
        if with_features:
            # Trained on another set, a model misclassifies the source's examples about as its clean error.
            rows += _features(trial, TRANSFER_D[model] if kind is None else (1 - clean / N, 1 - clean / N))
    return _rows(rows)


# -- set names ----------------------------------------------------------------------------


def test_set_names_and_order():
    df = features.with_set(_frame())
    names = dict(df.select("train_set", "set").unique().iter_rows())
    assert names == {None: "D", "robust": "D_R", "non-robust": "D_NR", "rand": "D_rand", "det": "D_det"}
    assert features.set_order(df) == ["D", "D_R", "D_NR", "D_rand", "D_det"]
    assert df.height == _frame().height and df.get_column("set").null_count() == 0


def test_set_names_get_eps_where_a_kind_has_several():
    rows = [r for m in ("cnn", "mlp") for kind in SETS for r in _robustness(_trial(m, kind), 900, 100)]
    # D_rand also at eps 2 and 0.25 (ordered by eps, not as text); D_det stays at one eps and keeps its bare name.
    rows += [r for m in ("cnn", "mlp") for e in (2.0, 0.25) for r in _robustness(_trial(m, "rand", eps=e), 800, 0)]
    df = features.with_set(_rows(rows))
    assert features.set_order(df) == ["D", "D_R", "D_NR", "D_rand eps=0.25", "D_rand eps=0.5", "D_rand eps=2", "D_det"]
    assert df.filter(pl.col("label") == "mlp rand 2").get_column("set").unique().to_list() == ["D_rand eps=2"]


def test_set_names_tell_apart_sets_differing_in_start():
    rows = [r for start in ("noise", "other") for r in _robustness(_trial("cnn", "robust", start=start), 900, 100)]
    rows += _robustness(_trial("cnn", None), 990, 0)
    df = features.with_set(_rows(rows))
    assert features.set_order(df) == ["D", "D_R start=noise", "D_R start=other"]


# -- intervals ----------------------------------------------------------------------------


@pytest.mark.parametrize("k,n", [(0, 1000), (3, 1000), (410, 1000), (999, 1000), (1000, 1000), (56, 70)])
@pytest.mark.parametrize("confidence", [0.95, 0.99])
def test_clopper_pearson_matches_scipy_exact(k, n, confidence):
    lo, hi = features.clopper_pearson(k, n, confidence)
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    assert float(lo) == pytest.approx(ci.low, abs=1e-12) and float(hi) == pytest.approx(ci.high, abs=1e-12)


def test_wilson_matches_scipy():
    lo, hi = features.wilson(56, 70)
    ci = binomtest(56, 70).proportion_ci(method="wilson")
    assert (lo, hi) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_newcombe_hybrid_score_known_values():
    # Newcombe (1998), Statistics in Medicine 17:873, Table II, example (a): 56/70 - 48/80, method 10.
    lo, hi = features.newcombe(56, 70, 48, 80)
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)
    # Example (d), at the boundary: 0/10 - 0/20 -> (-0.1611, 0.2775).
    lo, hi = features.newcombe(0, 10, 0, 20)
    assert (round(lo, 4), round(hi, 4)) == (-0.1611, 0.2775)


# -- accuracy tables ----------------------------------------------------------------------


def test_accuracy_rows_numbers_and_intervals():
    rows = features.accuracy_rows(_frame(), eps=0.3, norm="linf")
    assert rows.height == 15
    assert rows.select("model", "set").rows()[:5] == [("cnn", "D"), ("cnn", "D_R"), ("cnn", "D_NR"), ("cnn", "D_rand"), ("cnn", "D_det")]
    assert rows.get_column("model").unique(maintain_order=True).to_list() == ["cnn", "logreg", "mlp"]
    for r in rows.iter_rows(named=True):
        clean, robust = COUNTS[(r["model"], r["train_set"])]
        assert r["clean_acc"] == pytest.approx(clean / N) and r["robust_acc"] == pytest.approx(robust / N) and r["n_eval"] == N
        for k, lo, hi in ((clean, r["clean_lo"], r["clean_hi"]), (robust, r["robust_lo"], r["robust_hi"])):
            ci = binomtest(k, N).proportion_ci(method="exact")
            assert (lo, hi) == pytest.approx((ci.low, ci.high), abs=1e-9)
            assert lo <= k / N <= hi
    assert rows.filter(pl.col("set") == "D").get_column("robust_lo").to_list()[0] == 0.0  # k = 0
    assert rows.filter(pl.col("model") == "mlp", pl.col("set") == "D_det").get_column("clean_hi").item() == 1.0  # k = n
    paper = {r["set"]: (r["paper_clean"], r["paper_robust"]) for r in rows.filter(pl.col("model") == "cnn").iter_rows(named=True)}
    assert paper == {"D": (None, None), "D_R": (0.84, 0.48), "D_NR": (0.88, 0.0), "D_rand": (0.63, None), "D_det": (0.44, None)}


def test_above_chance_uses_the_lower_bound():
    rows = features.accuracy_rows(_frame(), eps=0.3, norm="linf")
    above = {(r["model"], r["set"]): r["above_chance"] for r in rows.iter_rows(named=True)}
    # logreg on D_det: 110/1000 = 11% > 10%, but its lower bound (~9.2%) is not above chance; 140/1000 is.
    assert above[("logreg", "D_det")] is False
    assert above[("logreg", "D_rand")] is True
    assert sum(above.values()) == 14
    # With 5 classes chance is 20%: 14% is below it.
    five = features.accuracy_rows(_frame(), eps=0.3, norm="linf", n_classes=5)
    assert five.filter(pl.col("model") == "logreg", pl.col("set") == "D_rand").get_column("above_chance").item() is False


def test_accuracy_rows_take_the_strongest_run_and_refuse_a_missing_point():
    rows = _robustness(_trial("cnn", None), 990, 50, extra_pgd=200) + _robustness(_trial("cnn", "robust"), 850, 400, extra_pgd=420)
    acc = features.accuracy_rows(_rows(rows), eps=0.3, norm="linf")
    assert acc.get_column("robust_acc").to_list() == [0.05, 0.4]
    with pytest.raises(ValueError, match="eps 0.1"):
        features.accuracy_rows(_frame(), eps=0.1, norm="linf")
    with pytest.raises(ValueError, match="no robustness rows"):
        features.accuracy_rows(_frame().filter(pl.col("evaluator") == "features"), eps=0.3, norm="linf")


def test_accuracy_table_display():
    table = features.accuracy_table(_frame().lazy(), eps=0.3, norm="linf")
    assert table.columns == ["model", "set", "n", "clean", "above chance", "robust (pgd linf 0.3)", "paper (CIFAR-10)"]
    cnn_r = table.filter(pl.col("model") == "cnn", pl.col("set") == "D_R").row(0, named=True)
    ci = binomtest(850, N).proportion_ci(method="exact")
    assert cnn_r["clean"] == f"85.0% [{ci.low * 100:.1f}, {ci.high * 100:.1f}]"
    assert cnn_r["above chance"] == "yes"
    assert cnn_r["paper (CIFAR-10)"] == "84% clean / 48% robust"
    papers = table.filter(pl.col("model") == "cnn").get_column("paper (CIFAR-10)").to_list()
    assert papers == [None, "84% clean / 48% robust", "88% clean / 0% robust", "63% clean", "44% clean"]


# -- the robust margin --------------------------------------------------------------------


def test_robust_margin_sign_interval_and_known_values():
    margin = features.robust_margin(_frame(), eps=0.3, norm="linf")
    assert margin.get_column("model").to_list() == ["cnn", "logreg", "mlp"]
    assert margin.get_column("set").unique().to_list() == ["D_R"]
    for r in margin.iter_rows(named=True):
        assert r["margin"] == pytest.approx(COUNTS[(r["model"], "robust")][1] / N - COUNTS[(r["model"], None)][1] / N)
        assert r["margin_lo"] <= r["margin"] <= r["margin_hi"]
        assert r["clears_sampling_error"] == (r["margin_lo"] > 0)
    assert margin.get_column("clears_sampling_error").all()
    # Newcombe's example (a) as robust accuracies: 56/70 on D_R, 48/80 on D.
    hand = _rows(_robustness(_trial("cnn", None), 75, 48, n=80) + _robustness(_trial("cnn", "robust"), 65, 56, n=70))
    r = features.robust_margin(hand, eps=0.3, norm="linf").row(0, named=True)
    assert (r["acc_D"], r["n_D"], r["acc_R"], r["n_R"]) == (0.6, 80, 0.8, 70)
    assert r["margin"] == pytest.approx(0.2)
    assert (round(r["margin_lo"], 4), round(r["margin_hi"], 4)) == (0.0524, 0.3339)
    assert r["clears_sampling_error"] is True


def test_robust_margin_negative_and_within_sampling_error():
    # D_R worse than D (a negative margin), and a tiny gain that sampling error covers.
    counts = {("cnn", None): (990, 30), ("cnn", "robust"): (850, 20), ("mlp", None): (980, 10), ("mlp", "robust"): (800, 14)}
    margin = features.robust_margin(_frame(counts, with_features=False), eps=0.3, norm="linf")
    cnn, mlp = margin.rows(named=True)
    assert cnn["margin"] == pytest.approx(-0.01) and cnn["margin_hi"] > 0 > cnn["margin"] > cnn["margin_lo"]
    assert mlp["margin"] == pytest.approx(0.004) and mlp["margin_lo"] < 0 and not mlp["clears_sampling_error"] and not cnn["clears_sampling_error"]


def test_robust_margin_against_the_shuffled_control():
    # cnn: D_R beats D (30 -> 120 of 1000) but not its control (115); mlp: D_R beats both; logreg
    # has no control, so its control columns are null. A control of another start pairs with nothing.
    counts = {
        ("cnn", None): (990, 30), ("cnn", "robust"): (960, 120), ("cnn", "shuffled"): (970, 115),
        ("mlp", None): (980, 10), ("mlp", "robust"): (950, 200), ("mlp", "shuffled"): (960, 40),
        ("logreg", None): (900, 5), ("logreg", "robust"): (880, 9),
    }
    rows = []
    for (model, kind), (clean, robust) in counts.items():
        rows += _robustness(_trial(model, kind, start="noise" if kind == "shuffled" else None), clean, robust)
    rows += _robustness(_trial("logreg", "shuffled", start="other"), 880, 500)
    by = {r["model"]: r for r in features.robust_margin(_rows(rows), eps=0.3, norm="linf").iter_rows(named=True)}
    assert by["cnn"]["clears_sampling_error"] and not by["cnn"]["clears_control"]
    assert by["cnn"]["acc_shuf"] == 0.115 and by["cnn"]["over_shuf"] == pytest.approx(0.005)
    assert by["cnn"]["over_shuf_lo"] < 0 < by["cnn"]["over_shuf_hi"]
    assert by["mlp"]["clears_control"] and by["mlp"]["over_shuf"] == pytest.approx(0.16)
    lo, hi = features.newcombe(200, 1000, 40, 1000)
    assert (by["mlp"]["over_shuf_lo"], by["mlp"]["over_shuf_hi"]) == pytest.approx((lo, hi))
    assert by["logreg"]["acc_shuf"] is None and by["logreg"]["clears_control"] is None


def test_robust_margin_needs_both_sets():
    counts = {k: v for k, v in COUNTS.items() if k[1] != "robust"}
    with pytest.raises(ValueError, match="both D and D_R"):
        features.robust_margin(_frame(counts), eps=0.3, norm="linf")


# -- the constructed sets -----------------------------------------------------------------


def test_sets_table():
    sets = [
        dict(name="D_det eps=0.5", kind="det", key="k3", eps=0.5, step=0.1, steps=100, start=None, n=50000, target_rate=0.97, rep_reduction=None,
             l2_mean=0.48, label_agreement=0.0, build_s=12.5, from_store=False, source="source cnn"),
        dict(name="D_R", kind="robust", key="k1", eps=None, step=0.1, steps=1000, start="noise", n=50000, target_rate=None, rep_reduction=0.93,
             l2_mean=9.1, label_agreement=1.0, build_s=None, from_store=True, source="robust cnn"),
        dict(name="D_rand eps=0.5", kind="rand", key="k2", eps=0.5, step=0.1, steps=100, start=None, n=50000, target_rate=0.95, rep_reduction=None,
             l2_mean=0.47, label_agreement=0.1, build_s=11.0, from_store=False, source="source cnn"),
    ]
    table = features.sets_table(sets)
    assert table.columns == ["name", "how", "n", "target_rate", "rep_reduction", "l2_mean", "label_agreement", "build_s", "from_store", "source"]
    assert table.get_column("name").to_list() == ["D_R", "D_rand eps=0.5", "D_det eps=0.5"]
    assert table.get_column("how").to_list()[0] == "representation matching to the robust source, start noise, 1000 steps of 0.1"
    assert "(y+1) mod C, eps 0.5, 100 steps of 0.1" in table.get_column("how").to_list()[2]
    assert table.get_column("build_s").to_list() == [None, 11.0, 12.5]


# -- transfer -----------------------------------------------------------------------------


def test_transfer_rows():
    rows = features.transfer_rows(_frame())
    assert rows.height == 30
    assert rows.filter(pl.col("set") == "D", pl.col("eps") == 0.5).select("model", "transfer_error").rows() == [("cnn", 0.9), ("logreg", 0.4), ("mlp", 0.7)]
    with pytest.raises(ValueError, match="no features rows"):
        features.transfer_rows(_frame(with_features=False))


def test_transfer_matrix_chart_cells(vega_values):
    spec = features.transfer_matrix_chart(_frame()).to_dict()
    cells = vega_values(spec)
    assert len(cells) == 15  # 3 models x 5 sets, at the largest eps only
    assert {(c["model"], c["set"]): c["transfer_error"] for c in cells}[("cnn", "D")] == 0.9
    assert "eps 0.5" in spec["title"] and "source cnn" in spec["title"]
    small = vega_values(features.transfer_matrix_chart(_frame(), eps=0.25).to_dict())
    assert len(small) == 15 and {(c["model"], c["set"]): c["transfer_error"] for c in small}[("cnn", "D")] == 0.6
    with pytest.raises(ValueError, match="eps 0.1"):
        features.transfer_matrix_chart(_frame(), eps=0.1)


def test_transfer_vs_accuracy(vega_values):
    data = features.transfer_data(_frame())
    # One point per model and relabelled set: x its transfer rate on D, y its clean accuracy on the set.
    assert data.select("model", "set", "transfer_error", "clean_acc").rows() == [
        ("cnn", "D_rand", 0.9, 0.63), ("cnn", "D_det", 0.9, 0.44),
        ("logreg", "D_rand", 0.4, 0.14), ("logreg", "D_det", 0.4, 0.11),
        ("mlp", "D_rand", 0.7, 0.5), ("mlp", "D_det", 0.7, 1.0),
    ]
    assert (data.get_column("clean_lo") <= data.get_column("clean_acc")).all()
    spec = features.transfer_vs_accuracy_chart(_frame(), eps=0.25).to_dict()
    points = vega_values(spec)
    assert len(points) == 6 and {p["transfer_error"] for p in points} == {0.6, 0.2, 0.4}
    # Without D_rand: one colour, three points.
    counts = {k: v for k, v in COUNTS.items() if k[1] != "rand"}
    assert len(vega_values(features.transfer_vs_accuracy_chart(_frame(counts)).to_dict())) == 3


def test_accuracy_chart(vega_values):
    spec = features.accuracy_chart(_frame(), eps=0.3, norm="linf").to_dict()
    bars = vega_values(spec)
    assert len(bars) == 30  # 15 trials x (clean, robust)
    assert {b["measure"] for b in bars} == {"clean", "robust (pgd linf 0.3)"}
    assert all(b["lo"] <= b["accuracy"] <= b["hi"] for b in bars)
    layers = spec["spec"]["layer"]
    assert any(layer.get("transform") == [{"calculate": "0.1", "as": "chance"}] for layer in layers)
    assert spec["spec"]["layer"][0]["encoding"]["x"]["sort"] == ["D", "D_R", "D_NR", "D_rand", "D_det"]
