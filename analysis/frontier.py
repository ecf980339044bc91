"""Which trained models are worth keeping: Pareto frontiers, robustness areas and costs.

Every function takes result rows (a polars DataFrame or LazyFrame, e.g. ``analysis.load``)
and returns an eager DataFrame. A model is a ``trial_id``; an evaluation point is a value of
study.results.KEY_COLUMNS (evaluator, attack, attack_options, ensemble, cascade, norm, eps, ...),
so curves of the same attack run with different settings never mix.
"""

from __future__ import annotations

import polars as pl

from analysis.load import TRAINING_AXES, eager
from study import results

EVAL_POINT = list(results.KEY_COLUMNS)
CURVE = [c for c in EVAL_POINT if c != "eps"]
# Carried along with a model's numbers so a result row says which model it is.
MODEL_COLUMNS = ["study", "trial_id", "label", *TRAINING_AXES, *(c for c, _, g, _ in results.COLUMNS if g == "training" and c not in TRAINING_AXES)]


def _present(df: pl.DataFrame, columns) -> list[str]:
    return [c for c in columns if c in df.columns]


def pareto(frame: pl.DataFrame | pl.LazyFrame, x: str = "clean_acc", y: str = "robust_acc") -> pl.DataFrame:
    """Every row, with ``on_frontier``: no other model at the same evaluation point is at least
    as good in both ``x`` and ``y`` and strictly better in one (both maximised).

    Exact (plain float comparisons, no tolerance). Identical points are all on the frontier, or
    all off it; a point another beats in one metric while tying in the other is off it. A row
    with ``x`` or ``y`` null or NaN is off the frontier and dominates nothing.
    """
    df = eager(frame).with_row_index("_row")
    # A frame without evaluation-point columns (a notebook's own selection) is one point.
    point = _present(df, EVAL_POINT) or ["_point"]
    scored = (
        df.with_columns(_point=pl.lit(0))
        .select("_row", *point, pl.col(x, y).fill_nan(None))
        .drop_nulls([x, y])
        # Within each evaluation point, rows now come in order of decreasing x.
        .sort(x, descending=True)
        .with_columns(
            _before=pl.col(y).cum_max().shift(1).over(point),  # best y among rows of x >= this x
            _top=pl.col(y).max().over([*point, x]),
        )
        # The first row of a run of equal x sees only rows of strictly greater x.
        .with_columns(_above=pl.col("_before").first().over([*point, x]))
        .select("_row", on_frontier=(pl.col(y) == pl.col("_top")) & (pl.col("_above").is_null() | (pl.col(y) > pl.col("_above"))))
    )
    return df.join(scored, on="_row", how="left").sort("_row").with_columns(pl.col("on_frontier").fill_null(False)).drop("_row")


def robustness_area(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """One row per model and curve (evaluator, attack, norm, steps, ...): ``robust_auc``.

    ``robust_auc`` is the area under robust accuracy over eps (trapezoid rule) divided by
    ``eps_max``, i.e. the mean robust accuracy over [0, eps_max], in [0, 1]. The normalisation
    makes Linf and L2 curves (eps ranges 0.3 vs 3, say) comparable; areas are comparable across
    studies only when their ``eps_max`` agree. A grid that does not start at 0 is closed with
    robust accuracy = clean accuracy at eps 0 (no perturbation). Null when eps_max is 0.
    """
    df = eager(frame).filter(pl.col("robust_acc").is_not_null() & pl.col("eps").is_not_null())
    keys = ["trial_id", *_present(df, CURVE)]
    eps, acc = pl.col("eps").sort(), pl.col("robust_acc").sort_by("eps")
    first_segment = eps.first() * (pl.col("clean_acc").first() + acc.first()) / 2
    area = first_segment + (eps.diff() * (acc + acc.shift(1)) / 2).sum()
    return (
        df.group_by(keys)
        .agg(
            *(pl.col(c).first() for c in _present(df, MODEL_COLUMNS) if c not in keys),
            eps_max=eps.last(),
            points=pl.len(),
            robust_auc=pl.when(eps.last() > 0).then(area / eps.last()),
        )
        .select(*_present(df, MODEL_COLUMNS), *_present(df, CURVE), "eps_max", "points", "robust_auc")
        .sort(_present(df, ["label", "trial_id", "norm", "attack"]))
    )


def robustness_cost(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """What adversarial training costs in clean accuracy per point of robust accuracy it buys.

    For each adversarially trained model A (``adv_attack`` not null) and its standard twin S
    (same study, every other training column equal, ``adv_attack`` null), at every evaluation
    point with eps > 0:

        clean_drop  = clean_acc(S) - clean_acc(A)
        robust_gain = robust_acc(A) - robust_acc(S)
        cost        = clean_drop / robust_gain       null unless robust_gain > 0

    cost 0.1: one point of clean accuracy lost per ten points of robust accuracy gained;
    negative: A is better on clean points too. With no gain there is nothing to pay for, hence
    null (the drop and gain columns still say what happened). Models without a twin get no row.
    """
    df = eager(frame).filter(pl.col("eps") > 0)
    twin_keys = _present(df, ["study", *(c for c, _, g, _ in results.COLUMNS if g == "training" and not c.startswith("adv_"))])
    point = _present(df, EVAL_POINT)
    adv = df.filter(pl.col("adv_attack").is_not_null())
    std = df.filter(pl.col("adv_attack").is_null()).select(
        *twin_keys, *point,
        standard_label=pl.col("label"), standard_trial_id=pl.col("trial_id"),
        standard_clean_acc=pl.col("clean_acc"), standard_robust_acc=pl.col("robust_acc"),
    )
    gain = pl.col("robust_acc") - pl.col("standard_robust_acc")
    return (
        adv.join(std, on=[*twin_keys, *point], how="inner", nulls_equal=True)
        .with_columns(clean_drop=pl.col("standard_clean_acc") - pl.col("clean_acc"), robust_gain=gain)
        .with_columns(cost=pl.when(pl.col("robust_gain") > 0).then(pl.col("clean_drop") / pl.col("robust_gain")))
        .select(
            *_present(df, MODEL_COLUMNS), *point, "clean_acc", "robust_acc",
            "standard_label", "standard_trial_id", "standard_clean_acc", "standard_robust_acc",
            "clean_drop", "robust_gain", "cost",
        )
        .sort(_present(df, ["label", "norm", "attack", "eps"]))
    )


def best_per_point(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """The model with the highest robust accuracy at each evaluation point with eps > 0 (ties:
    the higher clean accuracy, then the label), as jobs.sweep summarises a finished sweep."""
    df = eager(frame).filter(pl.col("eps") > 0, pl.col("robust_acc").is_not_null())
    point = _present(df, EVAL_POINT)
    return (
        df.sort(["robust_acc", "clean_acc", "label"], descending=[True, True, False])
        .group_by(point, maintain_order=True)
        .first()
        .select(*point, "robust_acc", "clean_acc", "label")
        .sort(_present(df, ["evaluator", "norm", "attack", "eps"]))
    )


def frontier_gap(found: pl.DataFrame | pl.LazyFrame, reference: pl.DataFrame | pl.LazyFrame, x: str = "clean_acc", y: str = "robust_acc") -> pl.DataFrame:
    """How far the models a search found are from the exact frontier of a reference study
    (e.g. a grid over the same space), at every evaluation point both have.

    For a found model p and the reference frontier F at the same point (both metrics maximised):

        gap(p) = min over q in F of max(q.x - p.x, q.y - p.y, 0)

    the smallest amount p would have to gain in both metrics to be at least as good as some
    model on the reference frontier: 0 when p is on it (or beyond it). ``nearest`` is the label
    of the q that attains the minimum. Pass only the rows to judge, e.g. an Optuna study's
    Pareto trials: ``found.filter(pl.col("search_pareto"))``.
    """
    df = eager(found)
    ref = pareto(reference).filter("on_frontier")
    point = [c for c in EVAL_POINT if c in df.columns and c in ref.columns]
    pairs = df.join(ref.select(*point, pl.col("label").alias("nearest"), pl.col(x).alias("_qx"), pl.col(y).alias("_qy")), on=point, how="inner", nulls_equal=True)
    shortfall = pl.max_horizontal(pl.col("_qx") - pl.col(x), pl.col("_qy") - pl.col(y), pl.lit(0.0))
    return (
        pairs.with_columns(gap=shortfall)
        .sort("gap")
        .group_by(["trial_id", *point], maintain_order=True)
        .first()
        .select(*_present(df, MODEL_COLUMNS), *point, x, y, "gap", "nearest")
        .sort(_present(df, [*point, "label"]))
    )
