"""Boundary tilting (Tanay & Griffin) charts of the `geometry` evaluator's rows and artifacts.

``tilting_curve(df)``: the tilting angle theta, the adversarial distance d_adv and the test error
against the L2 penalty lambda (the `l2` training axis). ``plane_scatter(plane, df)``: train and
test points projected on the tilting plane (the `tilting-plane` artifact, ``study.artifacts``)
with the decision line, one panel per chosen lambda. Both take polars frames and return altair
charts with their data inline (as ``analysis.charts``).
"""

from __future__ import annotations

import math

import altair as alt
import polars as pl

from analysis.load import eager

THETA = "theta (degrees)"
D_MEASURED = "median minimal L2 perturbation (closed form)"
D_PREDICTED = "Tanay's predicted d_adv"
ERROR = "test error"
SERIES = [THETA, D_MEASURED, D_PREDICTED, ERROR]
COLORS = ["#4c78a8", "#e45756", "#f58518", "#54a24b"]
LAMBDA = "lambda (L2 penalty, log scale)"
PANEL = 230  # plane scatter: px per panel side (the panels are square, u and v on one scale)


def _lambda_axis(df: pl.DataFrame) -> bool:
    """Whether the rows vary the `l2` training axis (lambda) over positive values."""
    if "l2" not in df.columns:
        return False
    values = df.get_column("l2").drop_nulls()
    return values.n_unique() > 1 and values.min() > 0


def per_trial(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """One row per trial of a linear two-class model's geometry: trial_id, label, l2, theta_deg,
    centroid_dist, d_adv_pred, d_adv (median closed-form L2 minimal perturbation; null when the
    study ran no L2 geometry), test_error (1 - clean_acc), sorted by lambda then label."""
    geo = eager(frame).filter(pl.col("evaluator") == "geometry", pl.col("theta_deg").is_not_null())
    closed_l2 = (pl.col("attack") == "closed-form") & (pl.col("norm") == "l2")
    return (
        geo.group_by("trial_id")
        .agg(
            pl.col("label", "l2", "theta_deg", "centroid_dist", "d_adv_pred", "clean_acc").first(),
            d_adv=pl.col("min_eps_median").filter(closed_l2).first(),
        )
        .with_columns(test_error=1 - pl.col("clean_acc"))
        .sort(["l2", "label"], nulls_last=True)
    )


def tilting_curve(frame: pl.DataFrame | pl.LazyFrame) -> alt.VConcatChart:
    """Theta, d_adv and the test error against lambda (log x axis), for linear two-class models.

    Two panels sharing the x axis, each with theta on the left axis: the top one with d_adv on
    the right (the median closed-form L2 minimal perturbation of the correctly classified test
    points, and Tanay's prediction 1/2 ||c1 - c0|| cos theta), the bottom one with the test
    error on the right. Raises ValueError without geometry rows that carry theta and lambda."""
    trials = per_trial(frame).filter(pl.col("l2") > 0)
    if trials.is_empty():
        raise ValueError("no geometry rows with theta_deg and a positive l2 (lambda): the tilting curve needs a linear two-class model swept over l2")
    long = pl.concat([
        trials.select("trial_id", "label", "l2", series=pl.lit(THETA), value="theta_deg"),
        trials.select("trial_id", "label", "l2", series=pl.lit(D_MEASURED), value="d_adv"),
        trials.select("trial_id", "label", "l2", series=pl.lit(D_PREDICTED), value="d_adv_pred"),
        trials.select("trial_id", "label", "l2", series=pl.lit(ERROR), value="test_error"),
    ]).filter(pl.col("value").is_not_null())
    present = [s for s in SERIES if s in long.get_column("series").to_list()]
    color = alt.Color(
        "series:N",
        title=None,
        scale=alt.Scale(domain=present, range=[COLORS[SERIES.index(s)] for s in present]),
        sort=present,
        legend=alt.Legend(orient="bottom", direction="horizontal", columns=2, labelLimit=320),
    )
    lo, hi = math.floor(math.log10(trials.get_column("l2").min())), math.ceil(math.log10(trials.get_column("l2").max()))
    step = max(1, math.ceil((hi - lo) / 10))  # at most ~10 labelled decades
    decades = [10.0**e for e in range(lo, hi + 1, step)]
    x = alt.X("l2:Q", title=LAMBDA, scale=alt.Scale(type="log"), axis=alt.Axis(format="~e", grid=True, values=decades))
    tooltip = [
        alt.Tooltip("label:N", title="model"),
        alt.Tooltip("l2:Q", title="lambda", format="~e"),
        alt.Tooltip("series:N", title="what"),
        alt.Tooltip("value:Q", format=".3f"),
    ]

    def lines(series: list[str], axis: alt.Axis, y_title: str) -> alt.Chart:
        return (
            alt.Chart()
            .transform_filter(alt.FieldOneOfPredicate(field="series", oneOf=series))
            .mark_line(point=True)
            .encode(x=x, y=alt.Y("value:Q", title=y_title, axis=axis, scale=alt.Scale(zero=True)), color=color, tooltip=tooltip)
        )

    theta = lines([THETA], alt.Axis(orient="left", titleColor=COLORS[0]), THETA)
    distance = lines([D_MEASURED, D_PREDICTED], alt.Axis(orient="right"), "d_adv (L2 distance)")
    error = lines([ERROR], alt.Axis(orient="right", titleColor=COLORS[3], format=".0%"), ERROR)
    data = alt.Data(values=long.to_dicts())
    top = alt.layer(theta, distance).resolve_scale(y="independent").properties(
        width=520, height=200, title=alt.Title("Tilting angle and adversarial distance", subtitle="left: theta; right: d_adv, measured and predicted")
    )
    bottom = alt.layer(theta, error).resolve_scale(y="independent").properties(
        width=520, height=160, title=alt.Title("Tilting angle and test error", subtitle="left: theta; right: test error (1 - clean accuracy)")
    )
    return alt.vconcat(top, bottom, data=data, spacing=24).resolve_scale(x="shared", color="shared")


def pick_lambdas(values, k: int = 4) -> list[float]:
    """Up to ``k`` of the distinct ``values``, spread evenly in log scale (linearly by rank when
    a value is <= 0), always including the smallest and the largest; sorted."""
    distinct = sorted({float(v) for v in values if v is not None and not math.isnan(v)})
    if len(distinct) <= k:
        return distinct
    if k <= 1:
        return distinct[:k]
    if distinct[0] > 0:
        pos = [math.log(v) for v in distinct]
    else:
        pos = [float(i) for i in range(len(distinct))]
    lo, hi = pos[0], pos[-1]
    chosen: list[int] = []
    for j in range(k):
        target = lo + (hi - lo) * j / (k - 1)
        free = [i for i in range(len(distinct)) if i not in chosen]
        chosen.append(min(free, key=lambda i: abs(pos[i] - target)))
    return sorted(distinct[i] for i in chosen)


def decision_line(wz: float, wn: float, offset: float, box: tuple[float, float, float, float], tol: float = 1e-12) -> list[tuple[float, float]]:
    """The two ends of the line wz * u + wn * v + offset = 0 inside box (u0, u1, v0, v1), or []
    when the line misses the box (or wz = wn = 0). A line with wn ~ 0 (w along the centroid
    direction: no tilt) is the vertical u = -offset / wz."""
    u0, u1, v0, v1 = box
    ends: list[tuple[float, float]] = []
    slack = 1e-9 * max(u1 - u0, v1 - v0, 1.0)
    if abs(wn) > tol:
        for u in (u0, u1):
            v = -(wz * u + offset) / wn
            if v0 - slack <= v <= v1 + slack:
                ends.append((u, min(max(v, v0), v1)))
    if abs(wz) > tol:
        for v in (v0, v1):
            u = -(wn * v + offset) / wz
            if u0 - slack <= u <= u1 + slack:
                ends.append((min(max(u, u0), u1), v))
    if len(ends) < 2:
        return []
    # The two ends farthest apart (a line through a corner is found twice).
    a, b = max(((p, q) for i, p in enumerate(ends) for q in ends[i + 1 :]), key=lambda pq: (pq[0][0] - pq[1][0]) ** 2 + (pq[0][1] - pq[1][1]) ** 2)
    return [a, b] if a != b else []


def _class_names(df: pl.DataFrame) -> dict[int, str]:
    """Label 0/1 of the plane -> a name: the digit (class) of the `classes` column, in its order."""
    classes = df.get_column("classes").drop_nulls().first() if "classes" in df.columns else None
    dataset = df.get_column("dataset").drop_nulls().first() if "dataset" in df.columns else None
    kind = "digit" if dataset and "mnist" in str(dataset).lower() else "class"
    names = [c.strip() for c in str(classes).split(",")] if classes else []
    if len(names) == 2:
        return {0: f"{kind} {names[0]}", 1: f"{kind} {names[1]}"}
    return {0: "class 0", 1: "class 1"}


def plane_panels(plane: pl.DataFrame, frame: pl.DataFrame | pl.LazyFrame, lambdas=None, k: int = 4) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The data of ``plane_scatter``: (points, lines, panels).

    panels: one row per chosen trial (panel order): trial_id, label, l2, theta_deg, test_error,
    title and its square domain u0, u1, v0, v1 (centred on the points, equal spans). points: the
    plane rows of those trials with ``class`` (its name) and ``panel``. lines: two rows per panel
    (the decision line's ends inside the domain; none where it misses it): trial_id, panel, u, v.
    ``lambdas``: values of the `l2` axis to show (default: ``pick_lambdas(k)``); a study that does
    not vary lambda shows up to ``k`` trials in label order."""
    df = eager(frame)
    trials = df.select("trial_id", "label", *(c for c in ("l2",) if c in df.columns)).unique("trial_id").filter(
        pl.col("trial_id").is_in(plane.get_column("trial_id").unique().to_list())
    )
    if "l2" not in trials.columns:
        trials = trials.with_columns(l2=pl.lit(None, dtype=pl.Float64))
    geo = df.filter(pl.col("evaluator") == "geometry").group_by("trial_id").agg(pl.col("theta_deg", "clean_acc").first())
    trials = trials.join(geo, on="trial_id", how="left").with_columns(test_error=1 - pl.col("clean_acc"))
    if trials.is_empty():
        raise ValueError("no tilting-plane rows of the result rows' trials")
    if _lambda_axis(trials):
        wanted = pick_lambdas(trials.get_column("l2").to_list(), k) if lambdas is None else [float(v) for v in lambdas]
        chosen = trials.filter(pl.col("l2").is_in(wanted)).sort(["l2", "label"])
        missing = set(wanted) - set(chosen.get_column("l2").to_list())
        if missing:
            raise ValueError(f"no tilting-plane trial with l2 = {sorted(missing)}")
    else:
        chosen = trials.sort("label").head(k)
    chosen = chosen.with_columns(panel=pl.int_range(pl.len()))

    names = _class_names(df)
    points = plane.join(chosen.select("trial_id", "panel"), on="trial_id").with_columns(
        pl.col("label").replace_strict(names, default=None, return_dtype=pl.String).fill_null(pl.format("class {}", pl.col("label"))).alias("class")
    )
    box = points.group_by("panel").agg(
        u_lo=pl.col("u").min(), u_hi=pl.col("u").max(), v_lo=pl.col("v").min(), v_hi=pl.col("v").max(), wz=pl.col("wz").first(), wn=pl.col("wn").first(), offset=pl.col("offset").first()
    )
    half = (pl.max_horizontal(pl.col("u_hi") - pl.col("u_lo"), pl.col("v_hi") - pl.col("v_lo")) / 2 * 1.08).alias("half")
    box = box.with_columns(half).with_columns(
        u0=(pl.col("u_lo") + pl.col("u_hi")) / 2 - pl.col("half"),
        u1=(pl.col("u_lo") + pl.col("u_hi")) / 2 + pl.col("half"),
        v0=(pl.col("v_lo") + pl.col("v_hi")) / 2 - pl.col("half"),
        v1=(pl.col("v_lo") + pl.col("v_hi")) / 2 + pl.col("half"),
    )
    panels = chosen.join(box.select("panel", "u0", "u1", "v0", "v1", "wz", "wn", "offset"), on="panel").sort("panel")
    line_rows = []
    for p in panels.iter_rows(named=True):
        for end, (u, v) in enumerate(decision_line(p["wz"], p["wn"], p["offset"], (p["u0"], p["u1"], p["v0"], p["v1"]))):
            line_rows.append({"trial_id": p["trial_id"], "panel": p["panel"], "end": end, "u": u, "v": v})
    lines = pl.DataFrame(line_rows, schema={"trial_id": pl.String, "panel": pl.Int64, "end": pl.Int64, "u": pl.Float64, "v": pl.Float64})

    def title(r: dict) -> str:
        head = f"lambda = {r['l2']:g}" if r["l2"] is not None else r["label"]
        return head + (f", theta = {r['theta_deg']:.1f} deg" if r["theta_deg"] is not None else "")

    panels = panels.with_columns(title=pl.Series([title(r) for r in panels.iter_rows(named=True)], dtype=pl.String))
    return points, lines, panels


def plane_scatter(plane: pl.DataFrame, frame: pl.DataFrame | pl.LazyFrame, lambdas=None, k: int = 4) -> alt.ConcatChart:
    """The tilting plane of a few trials (``plane_panels``), one square panel each, u and v on
    one scale so the boundary's angle is true: train points faint circles, test points opaque
    triangles, coloured by class, and the decision line wz * u + wn * v + offset = 0 in black.
    u runs along the centroid direction c1 - c0 (origin: the centroids' midpoint), v along the
    part of w orthogonal to it: an untilted boundary (theta = 0) is vertical."""
    points, lines, panels = plane_panels(plane, frame, lambdas, k)
    names = points.select("label", "class").unique().sort("label").get_column("class").to_list()
    charts = []
    for p in panels.iter_rows(named=True):
        u = alt.Scale(domain=[p["u0"], p["u1"]], nice=False, zero=False)
        v = alt.Scale(domain=[p["v0"], p["v1"]], nice=False, zero=False)
        pts = points.filter(pl.col("panel") == p["panel"]).select("split", "class", "u", "v", "f")
        scatter = alt.Chart(alt.Data(values=pts.to_dicts())).mark_point(filled=True, size=22, clip=True).encode(
            x=alt.X("u:Q", title="u (along c1 - c0)", scale=u),
            y=alt.Y("v:Q", title="v (w orthogonal to c1 - c0)", scale=v),
            color=alt.Color("class:N", title="class", sort=names, scale=alt.Scale(scheme="category10")),
            shape=alt.Shape("split:N", title="split", sort=["train", "test"], scale=alt.Scale(domain=["train", "test"], range=["circle", "triangle-up"])),
            opacity=alt.Opacity("split:N", sort=["train", "test"], scale=alt.Scale(domain=["train", "test"], range=[0.3, 0.85]), title="split"),
            tooltip=[alt.Tooltip("class:N"), alt.Tooltip("split:N"), alt.Tooltip("u:Q", format=".2f"), alt.Tooltip("v:Q", format=".2f"), alt.Tooltip("f:Q", title="f(x)", format=".2f")],
        )
        layers = [scatter]
        ends = lines.filter(pl.col("panel") == p["panel"]).select("u", "v", "end")
        if not ends.is_empty():
            layers.append(
                alt.Chart(alt.Data(values=ends.to_dicts())).mark_line(color="black", strokeWidth=2, clip=True).encode(x=alt.X("u:Q", scale=u), y=alt.Y("v:Q", scale=v), order="end:Q")
            )
        subtitle = f"test error {p['test_error']:.3f}" if p["test_error"] is not None else ""
        charts.append(alt.layer(*layers).properties(width=PANEL, height=PANEL, title=alt.Title(p["title"], subtitle=subtitle)))
    return alt.concat(*charts, columns=4, spacing=18).resolve_scale(x="independent", y="independent", color="shared", shape="shared", opacity="shared")
