"""Altair charts of result rows: each takes a polars frame (``analysis.load``) and returns a chart.

A chart carries its data inline as JSON values of only the columns it draws, so it has no row
limit, needs no data server, and renders offline inside the report page.
"""

from __future__ import annotations

import altair as alt
import polars as pl

from analysis import frontier as fr
from analysis.load import eager

# Shown on hover wherever a point stands for a model.
CONFIG = ["label", "model", "weight_decay", "adversarial", "epochs", "lr", "seed", "trial_id"]
ACC = alt.Scale(domain=[0, 1])
SETTINGS = ("steps", "step_size", "restarts")


def _values(df: pl.DataFrame, columns: list[str]) -> alt.Data:
    return alt.Data(values=df.select(list(dict.fromkeys(c for c in columns if c in df.columns))).to_dicts())


def _tooltip(df: pl.DataFrame, *extra: str) -> list[alt.Tooltip]:
    return [alt.Tooltip(f"{c}:N") for c in CONFIG if c in df.columns] + [alt.Tooltip(f"{c}:Q", format=".3f") for c in extra]


def _attack_order(df: pl.DataFrame) -> list[str]:
    """The frame's attacks in the order the study ran them: an ensemble's in its running order
    (its `ensemble` column; results tables are sorted by name), then any others as they come,
    with `worst` (their combination) last."""
    attacks = df.get_column("attack").unique(maintain_order=True).to_list()
    ran = []
    if "ensemble" in df.columns:
        for ensemble in df.get_column("ensemble").drop_nulls().unique(maintain_order=True).to_list():
            ran += [a for a in ensemble.split("+") if a in attacks and a not in ran]
    rest = [a for a in attacks if a not in ran and a != "worst"]
    return ran + rest + [a for a in attacks if a == "worst"]


def _point(df: pl.DataFrame, attack: str, norm: str, eps: float | None) -> pl.DataFrame:
    """The rows of one attack and norm: at ``eps``, or at every eps > 0 when it is None."""
    at = pl.col("eps") > 0 if eps is None else pl.col("eps") == eps
    rows = df.filter(pl.col("attack") == attack, pl.col("norm") == norm, at, pl.col("robust_acc").is_not_null())
    if rows.is_empty():
        where = "eps > 0" if eps is None else f"eps {eps:g}"
        raise ValueError(f"no rows for attack {attack!r}, norm {norm!r} at {where}")
    return rows


def _per_eps(chart: alt.LayerChart, eps: float | None, norm: str) -> alt.TopLevelMixin:
    """One panel per eps (three to a row) when no eps was chosen."""
    if eps is None:
        return chart.facet(facet=alt.Facet("eps:O", title=f"{norm} eps"), columns=3)
    return chart.properties(title=f"{norm} eps {eps:g}")


def _staircase(df: pl.DataFrame) -> pl.DataFrame:
    """The frontier's corners per eps, closed at the leftmost model's clean accuracy and at
    robust accuracy 0: the edge of the region the frontier dominates."""
    on = pl.col("on_frontier")
    panel = df.group_by("eps").agg(
        left=pl.col("clean_acc").min(),
        top=pl.col("robust_acc").filter(on).max(),
        right=pl.col("clean_acc").filter(on).max(),
    )
    corners = pl.concat([
        panel.select("eps", clean_acc="left", robust_acc="top"),
        df.filter(on).select("eps", "clean_acc", "robust_acc"),
        panel.select("eps", clean_acc="right", robust_acc=pl.lit(0.0)),
    ])
    # Left to right, and top to bottom where two corners share a clean accuracy.
    return corners.sort(["eps", "clean_acc", "robust_acc"], descending=[False, False, True]).with_columns(
        role=pl.lit("frontier"), step=pl.int_range(pl.len()).over("eps")
    )


def robustness_curves(frame: pl.DataFrame | pl.LazyFrame) -> alt.FacetChart:
    """Robust accuracy against eps, one line per model (``label``); a row of panels per norm, a
    column per attack. Each panel has its own eps axis: Linf and L2 radii differ by ~10x."""
    df = eager(frame).filter(pl.col("robust_acc").is_not_null(), pl.col("eps").is_not_null())
    line = (
        alt.Chart()
        .mark_line(point=True)
        .encode(
            x=alt.X("eps:Q", title="eps"),
            y=alt.Y("robust_acc:Q", title="robust accuracy", scale=ACC),
            color=alt.Color("label:N", title="model"),
            detail=[f"{c}:N" for c in SETTINGS],  # one line per run of an attack (e.g. 20 and 100 steps)
            tooltip=_tooltip(df, "eps", "robust_acc", "clean_acc"),
        )
        .properties(width=170, height=140)
    )
    data = _values(df, [*CONFIG, *SETTINGS, "attack", "norm", "eps", "robust_acc", "clean_acc"])
    return line.facet(
        data=data,
        row=alt.Row("norm:N", title="norm"),
        column=alt.Column("attack:N", title="attack", sort=_attack_order(df)),
    ).resolve_scale(x="independent")


def frontier(
    frame: pl.DataFrame | pl.LazyFrame, *, attack: str = "worst", norm: str = "linf", eps: float | None = None, color: str = "adversarial"
) -> alt.TopLevelMixin:
    """Clean against robust accuracy of every model at one attack and norm, with the Pareto
    frontier (``analysis.frontier.pareto``) as a step line: the edge of the region it dominates.

    ``color``: the training axis (column) to colour by. ``eps``: one panel at that eps, or one
    panel per eps > 0 when None. Frontier models are drawn opaque, the dominated ones faded.
    """
    df = _point(fr.pareto(frame), attack, norm, eps)
    df = df.with_columns(pl.col(color).cast(pl.String).fill_null("none").alias(color), role=pl.lit("model"))
    x = alt.X("clean_acc:Q", title="clean accuracy", scale=alt.Scale(zero=False, padding=12))
    y = alt.Y("robust_acc:Q", title=f"robust accuracy ({attack})", scale=ACC)
    points = alt.Chart().transform_filter("datum.role == 'model'").mark_point(filled=True, size=80).encode(
        x=x,
        y=y,
        color=alt.Color(f"{color}:N", title=color),
        opacity=alt.condition("datum.on_frontier", alt.value(1.0), alt.value(0.35)),
        tooltip=[*_tooltip(df, "clean_acc", "robust_acc"), alt.Tooltip("on_frontier:N", title="on frontier")],
    )
    # step-before: from each corner, down to the next one's robust accuracy, then across.
    front = (
        alt.Chart()
        .transform_filter("datum.role == 'frontier'")
        .mark_line(interpolate="step-before", color="#333", strokeWidth=1.5)
        .encode(x=x, y=y, order=alt.Order("step:Q"))
    )
    rows = pl.concat([df, _staircase(df)], how="diagonal")
    data = _values(rows, [*CONFIG, color, "role", "step", "eps", "clean_acc", "robust_acc", "on_frontier"])
    layered = alt.layer(front, points, data=data).properties(width=220, height=180)
    return _per_eps(layered, eps, norm)


def heatmap(
    frame: pl.DataFrame | pl.LazyFrame, x: str = "model", y: str = "adversarial", *, attack: str = "worst", norm: str = "linf", eps: float | None = None
) -> alt.TopLevelMixin:
    """Robust accuracy over two training axes at one attack and norm: at ``eps``, or one panel
    per eps > 0 when None. Where other axes vary too, a cell shows its best model (its label
    is in the tooltip, with the number of models in the cell)."""
    df = _point(eager(frame), attack, norm, eps)
    cells = (
        df.with_columns(pl.col(x, y).cast(pl.String).fill_null("none"))
        .sort(["robust_acc", "clean_acc"], descending=True)
        .group_by([x, y, "eps"], maintain_order=True)
        .agg(pl.col("robust_acc", "clean_acc", "label").first(), models=pl.len())
    )
    base = alt.Chart().encode(x=alt.X(f"{x}:N", title=x, axis=alt.Axis(labelAngle=0)), y=alt.Y(f"{y}:N", title=y))
    rect = base.mark_rect().encode(
        color=alt.Color("robust_acc:Q", title=f"robust accuracy ({attack})", scale=alt.Scale(domain=[0, 1], scheme="viridis")),
        tooltip=[alt.Tooltip("label:N", title="best model"), alt.Tooltip("models:Q"), alt.Tooltip("robust_acc:Q", format=".3f"), alt.Tooltip("clean_acc:Q", format=".3f")],
    )
    text = base.mark_text(fontSize=12).encode(
        text=alt.Text("robust_acc:Q", format=".2f"),
        color=alt.condition("datum.robust_acc > 0.6", alt.value("black"), alt.value("white")),
    )
    data = _values(cells, [x, y, "eps", "robust_acc", "clean_acc", "label", "models"])
    return _per_eps(alt.layer(rect, text, data=data).properties(width=alt.Step(70), height=alt.Step(36)), eps, norm)


def perturbation_sizes(frame: pl.DataFrame | pl.LazyFrame) -> alt.FacetChart:
    """How large the adversarials each attack finds are, in the attack's own norm.

    One box per attack over its rows with eps > 0 (every model and radius): the row's mean size
    of its successful perturbations, ``linf_mean`` for Linf rows and ``l2_mean`` for L2 rows. The
    schema keeps per-row means and medians, not per-point sizes, so this is the spread of means.
    `worst` rows carry no sizes and are left out."""
    df = (
        eager(frame)
        .filter(pl.col("eps") > 0, pl.col("attack") != "worst")
        .with_columns(size=pl.when(pl.col("norm") == "l2").then(pl.col("l2_mean")).otherwise(pl.col("linf_mean")))
        .filter(pl.col("size").is_not_null())
    )
    order = _attack_order(df)
    box = (
        alt.Chart()
        .mark_boxplot(extent="min-max", size=28)
        .encode(
            x=alt.X("attack:N", title="attack", sort=order, axis=alt.Axis(labelAngle=0)),
            y=alt.Y("size:Q", title="mean perturbation size (in the norm)"),
            color=alt.Color("attack:N", sort=order, legend=None),
        )
        .properties(width=55 * max(len(order), 1), height=180)
    )
    return box.facet(data=_values(df, ["attack", "norm", "size"]), column=alt.Column("norm:N", title="norm")).resolve_scale(y="independent")


def transfer_matrix(frame: pl.DataFrame | pl.LazyFrame) -> alt.TopLevelMixin:
    """The `transfer` evaluator's error matrix: a cell per (source, target) model, coloured and
    labelled with the target's error rate on the source's adversarial examples (0 to 1), one
    panel per eps. Rows: the source (the model the examples were crafted on); columns: the target.
    The diagonal (outlined) is each model's own error under the attack. Tooltip: ``agreement``, over the
    points both get wrong, how often the target predicts the source's wrong class."""
    df = eager(frame).filter(pl.col("evaluator") == "transfer", pl.col("transfer_error").is_not_null())
    if df.is_empty():
        raise ValueError("no transfer rows")
    order = sorted(set(df.get_column("label").to_list()) | set(df.get_column("source_label").to_list()))
    cells = df.select(
        "eps", "attack", "norm", "transfer_error", "agreement", target="label", source="source_label", same=pl.col("trial_id") == pl.col("source_trial_id")
    )
    side = max(34, min(60, 520 // max(len(order), 1)))
    base = alt.Chart().encode(
        x=alt.X("target:N", title="target (classifies the examples)", sort=order, axis=alt.Axis(labelAngle=-40, labelLimit=220)),
        y=alt.Y("source:N", title="source (examples crafted on)", sort=order, axis=alt.Axis(labelLimit=220)),
    )
    rect = base.mark_rect(stroke="white", strokeWidth=1).encode(
        color=alt.Color("transfer_error:Q", title="transfer error", scale=alt.Scale(domain=[0, 1], scheme="orangered")),
        tooltip=[
            alt.Tooltip("source:N"),
            alt.Tooltip("target:N"),
            alt.Tooltip("eps:Q", format="g"),
            alt.Tooltip("transfer_error:Q", title="transfer error", format=".3f"),
            alt.Tooltip("agreement:Q", title="agreement on wrong class", format=".3f"),
        ],
    )
    # Drawn after every cell, so no neighbour's edge covers it.
    diagonal = base.transform_filter("datum.same").mark_rect(filled=False, stroke="#222", strokeWidth=2)
    text = base.mark_text(fontSize=11 if side >= 42 else 9).encode(
        text=alt.Text("transfer_error:Q", format=".2f"),
        color=alt.condition("datum.transfer_error > 0.55", alt.value("white"), alt.value("black")),
    )
    norm = cells.get_column("norm").first()
    attack = cells.get_column("attack").first()
    layered = alt.layer(rect, diagonal, text, data=_values(cells, ["eps", "target", "source", "transfer_error", "agreement", "same"])).properties(
        width=alt.Step(side), height=alt.Step(side)
    )
    return layered.facet(facet=alt.Facet("eps:O", title=f"{attack} {norm} eps", header=alt.Header(labelFontSize=12)), columns=2)
