"""Tables and charts of the `uncertainty` evaluator (MC-dropout models; Smith & Gal 2018).

Its rows: one per (trial, input set, eps, T = ``mc_samples``), where the input set is the
``attack`` column (``clean``, ``fgsm``, ``pgd``, ``cw``, ...) with its ``eps`` (null for C&W,
0 for clean). Its ``uncertainty`` artifact (``study.artifacts``): every point's MI and SMV at
T_max, for each input set and the separate clean ``baseline`` set.

``seed_table(df)``: accuracy, mean MI and SMV, and both relative to the baseline set, per trial
and input set at T_max (the source text's table). ``auroc_table(df)``: how well MI and SMV tell
each adversarial set from the clean points at T_max, and from which T that AUROC is stable.
``auroc_curve(df)``: AUROC against T. ``distributions(points, df)``: the per-point MI and SMV
spread per input set. Frames in, polars frames or altair charts (data inline) out, as
``analysis.charts``.
"""

from __future__ import annotations

import math

import altair as alt
import polars as pl

from analysis.load import eager
from study.names import ATTACKS as FAMILIES

# (column, name) of the measures, in the order the tables show them.
MEASURES = [("accuracy", "accuracy"), ("mi_mean", "mean MI"), ("smv_mean", "mean SMV"), ("mi_rel", "relative MI"), ("smv_rel", "relative SMV")]
DETECTORS = {"MI": "auroc_mi", "SMV": "auroc_smv"}  # measure name -> AUROC column (its SE: + "_se")
STABLE_TOL = 0.01  # stable_T: every larger T's AUROC within this of the T_max value
Z95 = 1.96
# Colours: the adversarial sets take these in order in every chart; baseline and clean are grey.
PALETTE = ["#4c78a8", "#f58518", "#e45756", "#72b7b2", "#54a24b", "#eeca3b", "#b279a2", "#ff9da6", "#9d755d"]
CLEAN_GREYS = {"baseline": "#c7c7c7", "clean": "#8c8c8c"}


def input_set(attack: str, eps: float | None) -> str:
    """A readable name of an input set: ``clean``, ``fgsm 0.3``, ``cw`` (eps left out when it is
    null, and for the clean and baseline sets)."""
    if eps is None or (isinstance(eps, float) and math.isnan(eps)) or attack in ("clean", "baseline"):
        return attack
    return f"{attack} {eps:g}"


def with_input_set(frame: pl.DataFrame | pl.LazyFrame, attack: str = "attack", eps: str = "eps", name: str = "input_set") -> pl.DataFrame:
    """``frame`` with the column ``name`` = ``input_set(attack, eps)``. For the artifact, whose
    ``input_set`` column holds the bare set name: ``with_input_set(points, attack="input_set")``."""
    df = eager(frame)
    pairs = df.select(attack, eps).unique()
    names = pairs.with_columns(pl.Series("_name", [input_set(a, e) for a, e in pairs.iter_rows()], dtype=pl.String))
    out = df.join(names, on=[attack, eps], how="left", nulls_equal=True, maintain_order="left")
    return out.drop(name, strict=False).rename({"_name": name})


def set_order(frame: pl.DataFrame, attack: str = "attack", eps: str = "eps") -> list[str]:
    """Input-set names in table order: baseline and clean first, then the attacks in the order
    ``study.attacks`` registers them (fgsm, bim, pgd, apgd-ce, apgd-dlr, cw; any other after
    them, as it first appears in ``frame``), each attack's eps ascending (null last). Fixed, so
    a running sweep's trial files and the compacted results.parquet (sorted) read alike."""
    pairs = frame.select(attack, eps).unique(maintain_order=True)
    known = {"baseline": -2, "clean": -1} | {a: i for i, a in enumerate(FAMILIES)}
    seen = {a: len(known) + i for i, a in enumerate(dict.fromkeys(pairs.get_column(attack).to_list()))}
    key = lambda p: (known.get(p[0], seen[p[0]]), p[1] is None, p[1] if p[1] is not None else 0.0)  # noqa: E731
    return list(dict.fromkeys(input_set(a, e) for a, e in sorted(pairs.iter_rows(), key=key)))


def _colors(order: list[str]) -> alt.Scale:
    adversarial = [s for s in order if s not in CLEAN_GREYS]
    colors = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(adversarial)} | CLEAN_GREYS
    return alt.Scale(domain=order, range=[colors[s] for s in order])


def rows(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """The uncertainty evaluator's rows with ``input_set``; raises ValueError without any."""
    df = eager(frame).filter(pl.col("evaluator") == "uncertainty", pl.col("mc_samples").is_not_null())
    if df.is_empty():
        raise ValueError("no uncertainty rows (evaluator = uncertainty with mc_samples)")
    return with_input_set(df)


def trial_order(df: pl.DataFrame) -> list[str]:
    """Trial labels ordered by dropout rate (when the rows carry it), then by label."""
    by = ["dropout", "label"] if "dropout" in df.columns else ["label"]
    return df.select(*by).unique().sort(by, nulls_last=True).get_column("label").unique(maintain_order=True).to_list()


def _at_t(df: pl.DataFrame, mc_samples: int | None) -> pl.DataFrame:
    """The rows at T = ``mc_samples``, or at each trial's largest T."""
    if mc_samples is None:
        return df.filter(pl.col("mc_samples") == pl.col("mc_samples").max().over("trial_id"))
    at = df.filter(pl.col("mc_samples") == mc_samples)
    if at.is_empty():
        raise ValueError(f"no uncertainty rows at mc_samples = {mc_samples} (there are {sorted(df.get_column('mc_samples').unique().to_list())})")
    return at


def _sorted(table: pl.DataFrame, df: pl.DataFrame, sets: str = "input_set") -> pl.DataFrame:
    labels, order = trial_order(df), set_order(df)
    return table.sort(
        pl.col("label").replace_strict(labels, list(range(len(labels))), default=len(labels)),
        pl.col(sets).replace_strict(order, list(range(len(order))), default=len(order)),
    )


def seed_table(frame: pl.DataFrame | pl.LazyFrame, mc_samples: int | None = None, wide: bool = False) -> pl.DataFrame:
    """Per trial and input set at T = ``mc_samples`` (default: the trial's largest T): accuracy
    of the T-sample predictive, mean MI, mean SMV, and both relative to the clean baseline set's
    mean at the same T (``mi_rel``, ``smv_rel``).

    Long (default): one row per (label, input set), clean first, then the attacks
    (``set_order``); columns label, mc_samples, input_set, accuracy, mi_mean, smv_mean, mi_rel, smv_rel.
    ``wide=True``: the source text's layout, the measures as rows (label, mc_samples, measure)
    and the input sets as columns."""
    df = rows(frame)
    at = _at_t(df, mc_samples)
    long = _sorted(at.select("label", "mc_samples", "input_set", accuracy="robust_acc", mi_mean="mi_mean", smv_mean="smv_mean", mi_rel="mi_rel", smv_rel="smv_rel"), df)
    if not wide:
        return long
    order = [s for s in set_order(df) if s in long.get_column("input_set").to_list()]
    melted = long.unpivot(index=["label", "mc_samples", "input_set"], on=[c for c, _ in MEASURES], variable_name="measure")
    table = melted.pivot(on="input_set", index=["label", "mc_samples", "measure"], values="value").select("label", "mc_samples", "measure", *order)
    names = [n for _, n in MEASURES]
    labels = trial_order(df)
    return table.with_columns(pl.col("measure").replace_strict(dict(MEASURES))).sort(
        pl.col("label").replace_strict(labels, list(range(len(labels))), default=len(labels)),
        pl.col("measure").replace_strict(names, list(range(len(names)))),
    )


def stable_t(ts, values, tol: float = STABLE_TOL) -> int | None:
    """The smallest T from which every larger T's value is within ``tol`` of the value at the
    largest T (where the curve has settled). ``ts``, ``values``: the curve's points, any order;
    null values are skipped; None when there are none."""
    points = sorted((int(t), float(v)) for t, v in zip(ts, values) if v is not None and not math.isnan(v))
    if not points:
        return None
    final = points[-1][1]
    stable = points[-1][0]
    for t, v in reversed(points):
        if abs(v - final) > tol + 1e-12:
            break
        stable = t
    return stable


def auroc_table(frame: pl.DataFrame | pl.LazyFrame, tol: float = STABLE_TOL) -> pl.DataFrame:
    """Per trial and adversarial input set: the AUROC of MI and of SMV separating the set from
    the clean points at T_max (the trial's largest T) with their DeLong standard errors;
    ``stable_T`` (``stable_T_smv``): the smallest T from which every larger T's AUROC of MI
    (of SMV) is within ``tol`` of its T_max value; ``mi_last_change``: |AUROC of MI at T_max
    - at the second largest T|, how much the last step of the sweep still moved it."""
    df = rows(frame).filter(pl.col("auroc_mi").is_not_null() | pl.col("auroc_smv").is_not_null())
    if df.is_empty():
        raise ValueError("no uncertainty rows with an AUROC (adversarial input sets)")
    out = []
    for (trial_id, name), curve in df.group_by("trial_id", "input_set", maintain_order=True):
        curve = curve.sort("mc_samples")
        last = curve.row(-1, named=True)
        prev = curve.row(-2, named=True) if curve.height > 1 else None
        change = abs(last["auroc_mi"] - prev["auroc_mi"]) if prev and last["auroc_mi"] is not None and prev["auroc_mi"] is not None else None
        out.append(dict(
            label=last["label"],
            input_set=name,
            mc_samples=last["mc_samples"],
            auroc_mi=last["auroc_mi"],
            auroc_mi_se=last["auroc_mi_se"],
            auroc_smv=last["auroc_smv"],
            auroc_smv_se=last["auroc_smv_se"],
            stable_T=stable_t(curve.get_column("mc_samples"), curve.get_column("auroc_mi"), tol),
            stable_T_smv=stable_t(curve.get_column("mc_samples"), curve.get_column("auroc_smv"), tol),
            mi_last_change=change,
        ))
    schema = dict(label=pl.String, input_set=pl.String, mc_samples=pl.Int64, auroc_mi=pl.Float64, auroc_mi_se=pl.Float64, auroc_smv=pl.Float64,
                  auroc_smv_se=pl.Float64, stable_T=pl.Int64, stable_T_smv=pl.Int64, mi_last_change=pl.Float64)
    return _sorted(pl.DataFrame(out, schema=schema), df)


def curve_data(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """The data of ``auroc_curve``: label, input_set, measure (MI / SMV), mc_samples, auroc, se,
    lo, hi (auroc -/+ 1.96 se, clipped to [0, 1])."""
    df = rows(frame).filter(pl.col("auroc_mi").is_not_null() | pl.col("auroc_smv").is_not_null())
    if df.is_empty():
        raise ValueError("no uncertainty rows with an AUROC (adversarial input sets)")
    long = pl.concat([
        df.select("label", "input_set", "mc_samples", measure=pl.lit(m), auroc=col, se=f"{col}_se") for m, col in DETECTORS.items()
    ]).filter(pl.col("auroc").is_not_null())
    half = Z95 * pl.col("se").fill_null(0.0)
    return _sorted(long.with_columns(lo=(pl.col("auroc") - half).clip(0, 1), hi=(pl.col("auroc") + half).clip(0, 1)), df).sort(
        "measure", maintain_order=True
    )


def _y_floor(values: pl.Series, floor: float = 0.4) -> float:
    """0.4, or lower (to a tenth) when some value is below it, so nothing is clipped."""
    low = values.min()
    return floor if low is None or low >= floor else math.floor(low * 10) / 10


def auroc_curve(frame: pl.DataFrame | pl.LazyFrame) -> alt.FacetChart:
    """AUROC of MI (top row) and of SMV (bottom row) against T (log x axis), one column per
    trial, one line per adversarial input set with a band of AUROC +/- 1.96 SE (DeLong); a
    dashed rule at 0.5 (chance). y from 0.4 to 1 (lower if some band goes below 0.4)."""
    data = curve_data(frame)
    sets = set_order(rows(frame).filter(pl.col("attack") != "clean"))
    ts = sorted(data.get_column("mc_samples").unique().to_list())
    x = alt.X("mc_samples:Q", title="T (MC samples, log scale)", scale=alt.Scale(type="log", domain=[ts[0], ts[-1]], nice=False), axis=alt.Axis(values=ts, format="d", grid=True))
    y_scale = alt.Scale(domain=[_y_floor(data.get_column("lo")), 1.0], nice=False)
    legend = alt.Legend(orient="right", symbolType="stroke", symbolOpacity=1, symbolStrokeWidth=3)  # the lines' colours, not the faint bands'
    color = alt.Color("input_set:N", title="input set", sort=sets, scale=_colors(sets), legend=legend)
    band = alt.Chart().mark_area(opacity=0.18).encode(x=x, y=alt.Y("lo:Q", title="AUROC (clean vs set)", scale=y_scale), y2="hi:Q", color=color)
    line = alt.Chart().mark_line(point=alt.OverlayMarkDef(size=28)).encode(
        x=x,
        y=alt.Y("auroc:Q", scale=y_scale),
        color=color,
        tooltip=[
            alt.Tooltip("label:N", title="model"),
            alt.Tooltip("input_set:N", title="input set"),
            alt.Tooltip("measure:N"),
            alt.Tooltip("mc_samples:Q", title="T"),
            alt.Tooltip("auroc:Q", title="AUROC", format=".3f"),
            alt.Tooltip("se:Q", title="SE", format=".3f"),
        ],
    )
    chance = alt.Chart().mark_rule(strokeDash=[4, 3], color="#888").encode(y="chance:Q").transform_calculate(chance="0.5")
    layered = alt.layer(band, line, chance).properties(width=200, height=160)
    labels = trial_order(rows(frame))
    return layered.facet(
        data=alt.Data(values=data.to_dicts()),
        row=alt.Row("measure:N", title="detector", sort=list(DETECTORS)),
        column=alt.Column("label:N", title=None, sort=labels, header=alt.Header(labelFontSize=12)),
    )


def box_stats(points: pl.DataFrame | pl.LazyFrame, frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """The data of ``distributions``: per trial (label), input set (baseline included) and
    measure (MI, SMV) at T_max: n, min, q1, median, q3, max, mean, p90 of the artifact's values.
    Only the artifact's trials that ``frame`` has rows of."""
    df = eager(frame)
    labels = df.select("trial_id", "label").unique()
    pts = with_input_set(eager(points), attack="input_set").join(labels, on="trial_id")
    if pts.is_empty():
        raise ValueError("no uncertainty artifact points of the result rows' trials")
    long = pl.concat([pts.select("label", "input_set", "mc_samples", measure=pl.lit(m), value=m.lower()) for m in DETECTORS])
    v = pl.col("value")
    stats = long.group_by("label", "input_set", "measure").agg(
        mc_samples=pl.col("mc_samples").first(),
        n=pl.len(),
        min=v.min(),
        q1=v.quantile(0.25, "linear"),
        median=v.median(),
        q3=v.quantile(0.75, "linear"),
        p90=v.quantile(0.9, "linear"),
        max=v.max(),
        mean=v.mean(),
    )
    order = set_order(eager(points), attack="input_set")
    labels_order = trial_order(df)
    return stats.sort(
        pl.col("measure"),
        pl.col("label").replace_strict(labels_order, list(range(len(labels_order))), default=len(labels_order)),
        pl.col("input_set").replace_strict(order, list(range(len(order))), default=len(order)),
    )


def distributions(points: pl.DataFrame | pl.LazyFrame, frame: pl.DataFrame | pl.LazyFrame) -> alt.VConcatChart:
    """MI (top) and SMV (bottom) of every point per input set at T_max, from the
    ``uncertainty`` artifact, one panel per trial: a box per set (baseline, clean, then the
    attacks) from the first to the third quartile with the median (white tick), a whisker from
    min to max and the mean as a black dot. The y axes are square-root scaled: most clean points
    have MI and SMV near 0, a few far higher."""
    stats = box_stats(points, frame)
    order = set_order(eager(points), attack="input_set")
    labels = trial_order(eager(frame))
    panels = []
    for measure, title in (("MI", "mutual information (nats, sqrt scale)"), ("SMV", "softmax variance (sqrt scale)")):
        part = stats.filter(pl.col("measure") == measure)
        y = alt.Y("min:Q", title=title, scale=alt.Scale(type="sqrt", zero=True))
        x = alt.X("input_set:N", title=None, sort=order, axis=alt.Axis(labelAngle=-35))
        color = alt.Color("input_set:N", sort=order, legend=None, scale=_colors(order))
        tooltip = [alt.Tooltip("label:N", title="model"), alt.Tooltip("input_set:N", title="input set"), alt.Tooltip("n:Q")] + [
            alt.Tooltip(f"{c}:Q", format=".4f") for c in ("min", "q1", "median", "q3", "p90", "max", "mean")
        ]
        whisker = alt.Chart().mark_rule(color="#555").encode(x=x, y=y, y2="max:Q")
        box = alt.Chart().mark_bar(size=20).encode(x=x, y=alt.Y("q1:Q", scale=alt.Scale(type="sqrt", zero=True)), y2="q3:Q", color=color, tooltip=tooltip)
        median = alt.Chart().mark_tick(color="white", size=20, thickness=2).encode(x=x, y=alt.Y("median:Q"))
        mean = alt.Chart().mark_point(filled=True, color="black", size=22).encode(x=x, y=alt.Y("mean:Q"), tooltip=tooltip)
        layered = alt.layer(whisker, box, median, mean).properties(width=32 * max(len(order), 1), height=170)
        panels.append(
            layered.facet(
                data=alt.Data(values=part.to_dicts()),
                column=alt.Column("label:N", title=None, sort=labels, header=alt.Header(labelFontSize=12)),
            ).properties(title=f"{measure} per input set")
        )
    return alt.vconcat(*panels, spacing=18)
