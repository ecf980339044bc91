"""Charts read the order of attacks from the rows, not from the results table's sorting."""

from __future__ import annotations

import polars as pl

from analysis import charts

ENSEMBLE = "apgd-ce+fmn+fmn-t+apgd-t+square"


def _rows(ensemble: str | None) -> pl.DataFrame:
    """A robustness table as results.parquet holds it: sorted by attack name, `worst` among them."""
    attacks = sorted([*ENSEMBLE.split("+"), "worst", "pgd"])
    return pl.DataFrame(
        {
            "label": "m",
            "trial_id": "t",
            "attack": attacks,
            "ensemble": [None if a == "pgd" else ensemble for a in attacks],
            "norm": "linf",
            "eps": 0.1,
            "robust_acc": 0.5,
            "l2_mean": None,
            "linf_mean": [None if a == "worst" else 0.1 for a in attacks],
        },
        schema_overrides={"ensemble": pl.String, "l2_mean": pl.Float64},
    )


def _columns(chart) -> list[str]:
    spec = chart.to_dict()
    return spec["facet"]["column"]["sort"]


def test_curves_show_an_ensemble_in_running_order_then_others_then_worst():
    assert _columns(charts.robustness_curves(_rows(ENSEMBLE))) == ["apgd-ce", "fmn", "fmn-t", "apgd-t", "square", "pgd", "worst"]


def test_without_an_ensemble_the_rows_order_stands():
    assert _columns(charts.robustness_curves(_rows(None))) == ["apgd-ce", "apgd-t", "fmn", "fmn-t", "pgd", "square", "worst"]


def test_perturbation_sizes_follow_the_running_order():
    spec = charts.perturbation_sizes(_rows(ENSEMBLE)).to_dict()
    assert spec["spec"]["encoding"]["x"]["sort"] == ["apgd-ce", "fmn", "fmn-t", "apgd-t", "square", "pgd"]
