"""Pareto frontiers, robustness areas and costs: known answers on hand-made tables, and the
frontier and area against brute force on random ones."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis import frontier


def table(rows: list[dict]) -> pl.DataFrame:
    base = dict(evaluator="robustness", attack="pgd", norm="linf", eps=0.1, steps=10, step_size=0.25, restarts=1)
    return pl.DataFrame([{**base, **r} for r in rows], schema_overrides={"steps": pl.Int64, "clean_acc": pl.Float64, "robust_acc": pl.Float64})


def on_frontier(df: pl.DataFrame) -> dict[str, bool]:
    return dict(frontier.pareto(df).select("trial_id", "on_frontier").iter_rows())


def test_frontier_known_answer():
    df = table([
        dict(trial_id="a", clean_acc=0.99, robust_acc=0.10),  # best clean
        dict(trial_id="b", clean_acc=0.90, robust_acc=0.60),  # a trade-off
        dict(trial_id="c", clean_acc=0.80, robust_acc=0.70),  # best robust
        dict(trial_id="d", clean_acc=0.85, robust_acc=0.50),  # beaten by b in both
        dict(trial_id="e", clean_acc=0.70, robust_acc=0.70),  # ties c on robust, loses on clean
        dict(trial_id="f", clean_acc=0.90, robust_acc=0.55),  # ties b on clean, loses on robust
    ])
    assert on_frontier(df) == dict(a=True, b=True, c=True, d=False, e=False, f=False)


def test_frontier_duplicates_are_all_on_it_or_all_off_it():
    df = table([
        dict(trial_id="a", clean_acc=0.9, robust_acc=0.5),
        dict(trial_id="b", clean_acc=0.9, robust_acc=0.5),
        dict(trial_id="c", clean_acc=0.8, robust_acc=0.4),
        dict(trial_id="d", clean_acc=0.8, robust_acc=0.4),
    ])
    assert on_frontier(df) == dict(a=True, b=True, c=False, d=False)


def test_frontier_is_per_evaluation_point_and_skips_missing_values():
    df = table([
        dict(trial_id="a", clean_acc=0.9, robust_acc=0.5),
        dict(trial_id="b", clean_acc=0.8, robust_acc=0.4),
        dict(trial_id="b2", clean_acc=0.8, robust_acc=0.4, attack="worst", steps=None, step_size=None, restarts=None),
        dict(trial_id="c", clean_acc=0.95, robust_acc=None),  # missing: off, and beats nobody
        dict(trial_id="n", clean_acc=float("nan"), robust_acc=0.9),
    ])
    assert on_frontier(df) == dict(a=True, b=False, b2=True, c=False, n=False)
    assert frontier.pareto(df).height == df.height


def brute_force(points: list[tuple]) -> list[bool]:
    def missing(v):
        return v is None or math.isnan(v)

    out = []
    for g, x, y in points:
        if missing(x) or missing(y):
            out.append(False)
            continue
        beaten = any(
            h == g and not missing(u) and not missing(v) and u >= x and v >= y and (u > x or v > y) for h, u, v in points
        )
        out.append(not beaten)
    return out


ACC = st.one_of(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]), st.floats(0, 1), st.none(), st.just(float("nan")))
GROUP = st.tuples(st.sampled_from(["pgd", "worst"]), st.sampled_from([0.1, 0.2]), st.sampled_from([None, 10]))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(GROUP, ACC, ACC), min_size=1, max_size=25))
def test_frontier_matches_brute_force(points):
    df = table([dict(trial_id=str(i), attack=a, eps=e, steps=s, clean_acc=x, robust_acc=y) for i, ((a, e, s), x, y) in enumerate(points)])
    assert frontier.pareto(df).get_column("on_frontier").to_list() == brute_force(points)


def test_frontier_on_a_large_seeded_table():
    rng = np.random.default_rng(0)
    n = 400
    clean, robust = rng.integers(0, 20, n) / 20, rng.integers(0, 20, n) / 20  # many ties
    groups = rng.choice(["fgsm", "pgd", "worst"], n)
    df = table([dict(trial_id=str(i), attack=g, clean_acc=x, robust_acc=y) for i, (g, x, y) in enumerate(zip(groups, clean, robust))])
    expected = brute_force(list(zip(groups, clean, robust)))
    assert frontier.pareto(df).get_column("on_frontier").to_list() == expected
    assert 0 < sum(expected) < n


def curve(trial: str, norm: str, eps: list[float], acc: list[float], clean: float | None = None) -> list[dict]:
    clean = acc[0] if clean is None else clean
    return [dict(trial_id=trial, label=trial, norm=norm, eps=e, clean_acc=clean, robust_acc=a) for e, a in zip(eps, acc)]


def areas(rows: list[dict]) -> dict[tuple, float | None]:
    out = frontier.robustness_area(table(rows))
    return {(t, n): a for t, n, a in out.select("trial_id", "norm", "robust_auc").iter_rows()}


def test_area_known_answers():
    got = areas(
        curve("a", "linf", [0, 0.1, 0.2], [1.0, 0.5, 0.0])
        + curve("a", "l2", [0, 1, 2], [1.0, 0.5, 0.0])  # the same shape on a 10x wider grid
        + curve("b", "linf", [0.2, 0.1], [0.0, 0.5], clean=1.0)  # no eps 0, given out of order
        + curve("c", "linf", [0], [0.9])  # eps 0 alone: no range to average over
        + curve("d", "linf", [0, 0.3], [0.8, 0.8])  # flat: the mean is the value
    )
    assert got[("a", "linf")] == pytest.approx(0.5)
    assert got[("a", "l2")] == pytest.approx(0.5)  # normalised by eps_max: comparable across norms
    assert got[("b", "linf")] == pytest.approx(0.5)  # closed with clean accuracy at eps 0
    assert got[("c", "linf")] is None
    assert got[("d", "linf")] == pytest.approx(0.8)


def test_area_matches_numpy_trapezoid_on_random_curves():
    rng = np.random.default_rng(1)
    rows, expected = [], {}
    for t in range(30):
        eps = np.sort(rng.choice(np.arange(1, 40) / 10, size=rng.integers(1, 8), replace=False))
        eps = np.concatenate([[0.0], eps])
        acc = np.sort(rng.random(len(eps)))[::-1]
        order = rng.permutation(len(eps))  # row order must not matter
        rows += curve(str(t), "l2", list(eps[order]), list(acc[order]), clean=float(acc[0]))
        expected[(str(t), "l2")] = float(np.trapezoid(acc, eps) / eps[-1])
    got = areas(rows)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12)


def model(trial: str, adv: str | None, wd: float, clean: float, robust: float, eps: float = 0.1, attack: str = "pgd") -> dict:
    return dict(
        study="s", trial_id=trial, label=trial, dataset="d", classes=None, model="cnn", seed=0, epochs=1, lr=1e-3,
        batch_size=64, weight_decay=wd, adv_attack=adv, adv_norm="linf" if adv else None, adv_eps=0.1 if adv else None,
        adv_alpha=0.5 if adv else None, attack=attack, eps=eps, clean_acc=clean, robust_acc=robust,
    )


def test_cost_known_answers():
    df = table([
        model("std", None, 0.0, clean=0.90, robust=0.20),
        model("adv", "fgsm", 0.0, clean=0.85, robust=0.70),  # -0.05 clean for +0.5 robust
        model("std", None, 0.0, clean=0.90, robust=0.30, eps=0.2),
        model("adv", "fgsm", 0.0, clean=0.85, robust=0.30, eps=0.2),  # no gain
        model("std", None, 0.0, clean=0.90, robust=0.90, eps=0.0),  # eps 0: not a robustness point
        model("adv", "fgsm", 0.0, clean=0.85, robust=0.85, eps=0.0),
        model("std-wd", None, 1e-3, clean=0.80, robust=0.40),
        model("adv-wd", "fgsm", 1e-3, clean=0.82, robust=0.30),  # a loss: no cost either
        model("adv-alone", "fgsm", 5e-3, clean=0.80, robust=0.50),  # no standard twin
    ])
    got = frontier.robustness_cost(df)
    rows = {(r["label"], r["eps"]): r for r in got.iter_rows(named=True)}
    assert set(rows) == {("adv", 0.1), ("adv", 0.2), ("adv-wd", 0.1)}
    assert rows[("adv", 0.1)]["standard_label"] == "std"
    assert rows[("adv", 0.1)]["clean_drop"] == pytest.approx(0.05)
    assert rows[("adv", 0.1)]["robust_gain"] == pytest.approx(0.5)
    assert rows[("adv", 0.1)]["cost"] == pytest.approx(0.1)
    assert rows[("adv", 0.2)]["robust_gain"] == pytest.approx(0.0) and rows[("adv", 0.2)]["cost"] is None
    assert rows[("adv-wd", 0.1)]["standard_label"] == "std-wd"
    assert rows[("adv-wd", 0.1)]["robust_gain"] < 0 and rows[("adv-wd", 0.1)]["cost"] is None


def test_best_per_point_breaks_ties_by_clean_accuracy():
    df = table([
        dict(trial_id="a", label="a", clean_acc=0.8, robust_acc=0.5),
        dict(trial_id="b", label="b", clean_acc=0.9, robust_acc=0.5),
        dict(trial_id="c", label="c", clean_acc=0.99, robust_acc=0.4),
        dict(trial_id="z", label="z", clean_acc=0.99, robust_acc=0.99, eps=0.0),
    ])
    assert frontier.best_per_point(df).select("eps", "label").rows() == [(0.1, "b")]


def test_frontier_gap_known_answers():
    grid = table([
        dict(trial_id="g1", label="g1", clean_acc=0.99, robust_acc=0.10),
        dict(trial_id="g2", label="g2", clean_acc=0.90, robust_acc=0.60),
        dict(trial_id="g3", label="g3", clean_acc=0.80, robust_acc=0.70),
        dict(trial_id="g4", label="g4", clean_acc=0.50, robust_acc=0.20),  # off the grid's frontier
    ])
    found = table([
        dict(trial_id="s1", label="s1", clean_acc=0.90, robust_acc=0.60),  # on it (equals g2)
        dict(trial_id="s2", label="s2", clean_acc=0.88, robust_acc=0.55),  # g2 is 0.02 / 0.05 better
        dict(trial_id="s3", label="s3", clean_acc=0.95, robust_acc=0.65),  # beyond it
        dict(trial_id="s4", label="s4", clean_acc=0.49, robust_acc=0.19),  # g1 needs 0.5, g2 0.41, g3 0.51; g4 (0.01) is off the front
    ])
    gaps = {r["trial_id"]: (round(r["gap"], 9), r["nearest"]) for r in frontier.frontier_gap(found, grid).iter_rows(named=True)}
    assert gaps["s1"] == (0.0, "g2")
    assert gaps["s2"] == (0.05, "g2")
    assert gaps["s3"][0] == 0.0
    assert gaps["s4"] == (0.41, "g2")  # never g4: only frontier models are the reference


def test_frontier_gap_compares_only_the_same_evaluation_point():
    grid = table([dict(trial_id="g", label="g", clean_acc=0.9, robust_acc=0.9, eps=0.2)])
    found = table([dict(trial_id="s", label="s", clean_acc=0.5, robust_acc=0.5, eps=0.1)])
    assert frontier.frontier_gap(found, grid).is_empty()


def test_frontier_of_a_frame_without_evaluation_point_columns():
    """A notebook's own selection (trial_id, clean_acc, robust_acc): one evaluation point."""
    df = pl.DataFrame({"trial_id": ["a", "b", "c", "d"], "clean_acc": [0.9, 0.8, 0.95, 0.7], "robust_acc": [0.5, 0.6, 0.4, 0.55]})
    out = frontier.pareto(df)
    assert out.get_column("on_frontier").to_list() == [True, True, True, False]
