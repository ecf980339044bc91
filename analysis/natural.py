"""Tables and charts of natural adversaries (Zhao, Dua & Singh 2018) and the reconstruction defense.

`natural` rows: one per (trial, search setting, budget), a search setting being the search kind
(``latent_search``: iterative, hybrid), N samples per round (``latent_samples``) and dr
(``latent_dr``); the budget is ``latent_rounds``, at most N * rounds classifier queries per
point (``budget``). Success is non-decreasing in the budget: each budget reads the same search
stopped earlier. The ``natural`` artifact (``study.artifacts``) has every searched point at the
largest budget: found, ``latent_dist`` = ||z* - I(x)||, queries.

`reconstruction` rows: one per (trial, input set): accuracy on the inputs (``robust_acc``) and
on their projection G(I(inputs)) (``recon_acc``). Input sets are named ``clean``,
``fgsm-linf-0.1`` (attack, norm, eps, spelled as the ``adversarial`` axis), ``cw``, ``natural``
(``set_name``); two sets that would share a name get the settings that tell them apart.

``success_table``, ``distance_table``, ``reconstruction_table``: polars frames;
``success_curve``, ``distance_chart``, ``reconstruction_chart``: altair charts with their data
inline, as ``analysis.charts``. The image strip is ``analysis.images.natural_strip``.
"""

from __future__ import annotations

import math

import altair as alt
import polars as pl

from analysis.load import eager
from study.names import ATTACKS as FAMILIES
from study.names import LATENT_KINDS as KINDS

SETTING = ("latent_search", "latent_samples", "latent_dr")  # one search; latent_rounds is its budget
# The columns that tell two reconstruction input sets apart (those a row has: study.evaluators.inputs).
SET_KEY = ("attack", "norm", "eps", "steps", "step_size", "kappa", "search_steps", "latent_search", "latent_samples", "latent_rounds", "latent_dr")
SEARCH_COLORS = {"iterative": "#4c78a8", "hybrid": "#f58518"}
PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#9d755d"]  # settings with N and dr, or other kinds
DEFENSE = {"accuracy": "as given", "recon_acc": "reconstructed, G(I(x))"}
RECONSTRUCTED = " reconstructed"  # the wide reconstruction table's suffix for the defended accuracy


def _rank(column: str, order: list[str] | tuple[str, ...]) -> pl.Expr:
    """A sort key placing ``order``'s values of ``column`` first, in that order, then the rest."""
    return pl.col(column).replace_strict(list(order), list(range(len(order))), default=len(order), return_dtype=pl.Int64)


def rows(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """The natural evaluator's rows with ``budget`` = latent_samples * latent_rounds (the most
    classifier queries a point can cost); raises ValueError without any."""
    df = eager(frame).filter(pl.col("evaluator") == "natural", pl.col("latent_search").is_not_null())
    if df.is_empty():
        raise ValueError("no natural rows (evaluator = natural)")
    return df.with_columns(budget=pl.col("latent_samples") * pl.col("latent_rounds"))


def _sorted(table: pl.DataFrame) -> pl.DataFrame:
    """By label, then search kind (iterative, hybrid, others), N, dr and the budget."""
    by = [pl.col("label"), _rank("latent_search", KINDS), pl.col("latent_search"), *(pl.col(c) for c in ("latent_samples", "latent_dr", "latent_rounds") if c in table.columns)]
    return table.sort(by)


def with_setting(df: pl.DataFrame) -> pl.DataFrame:
    """``df`` with ``setting``: the search kind, followed by ``N=.. dr=..`` only where the rows
    have more than one (N, dr) -- what a chart colours by."""
    settings = df.select(SETTING).unique()
    varies = settings.height > settings.get_column("latent_search").n_unique()
    name = pl.format("{} N={} dr={}", "latent_search", "latent_samples", "latent_dr") if varies else pl.col("latent_search")
    return df.with_columns(setting=name)


def success_table(frame: pl.DataFrame | pl.LazyFrame, wide: bool = False) -> pl.DataFrame:
    """Per trial, search setting and budget: success_rate (the fraction of the correctly
    classified points searched whose adversary was found), queries_mean (classifier queries
    spent per point), latent_dist_mean and _median (of the adversaries found).

    Long (default): label, model, latent_search, latent_samples, latent_dr, latent_rounds,
    budget, then those metrics, sorted by label, search kind, N, dr and budget. ``wide=True``:
    one row per (label, search setting), a column ``rounds <r>`` per budget holding the success
    rate with at most r rounds."""
    df = rows(frame)
    long = _sorted(df.select(
        "label", "model", *SETTING, "latent_rounds", "budget", "success_rate", "queries_mean", "latent_dist_mean", "latent_dist_median"
    ))
    if not wide:
        return long
    budgets = sorted(long.get_column("latent_rounds").unique().to_list())
    table = long.with_columns(rounds=pl.format("rounds {}", "latent_rounds")).pivot(on="rounds", index=["label", *SETTING], values="success_rate")
    return table.select("label", *SETTING, *(f"rounds {r}" for r in budgets if f"rounds {r}" in table.columns))


def _largest_budget(df: pl.DataFrame) -> pl.DataFrame:
    return df.filter(pl.col("latent_rounds") == pl.col("latent_rounds").max().over("trial_id", *SETTING))


def distance_table(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """At the largest budget of each trial and search setting, how far the adversaries found
    are from the point: success_rate; latent_dist_mean / _median, ||z* - I(x)||_2 in latent
    space; l2_mean, the input-space L2 of G(z*) - x; recon_l2_mean, of G(z*) - G(I(x)) (the
    search's own change, without the generator's reconstruction error); queries_mean. Columns:
    label, latent_search, latent_samples, latent_dr, budget, then those; one row per trial and
    setting, sorted by label and search kind -- the comparison of target models."""
    top = _largest_budget(rows(frame))
    return _sorted(top.select(
        "label", *SETTING, "budget", "success_rate", "latent_dist_mean", "latent_dist_median", "l2_mean", "recon_l2_mean", "queries_mean"
    ))


def paired_distances(points: pl.DataFrame, frame: pl.DataFrame | pl.LazyFrame, confidence: float = 0.95) -> pl.DataFrame:
    """Which target model needs the larger latent distance, point by point. Per search setting
    and pair of trials (``stronger``: the higher clean accuracy), over the points both classify
    correctly and both searches broke (``point`` is the evaluation index, and the searches draw
    the same random directions for every model): n, each model's mean latent distance there,
    the mean difference stronger - weaker with its ``confidence`` t-interval, and the fraction of
    points where the stronger model's distance is larger. Empty with fewer than two trials."""
    from scipy.stats import t as student_t

    nat = rows(frame)
    acc = dict(nat.group_by("trial_id").agg(pl.col("clean_acc").first()).iter_rows())
    labels = dict(nat.select("trial_id", "label").unique().iter_rows())
    found = points.filter(pl.col("found"), pl.col("trial_id").is_in(list(acc)))
    out = []
    for setting, group in found.group_by(SETTING, maintain_order=True):
        trials = sorted(group.get_column("trial_id").unique().to_list(), key=lambda t: (-acc[t], labels[t]))
        for i, strong in enumerate(trials):
            for weak in trials[i + 1 :]:
                pair = group.filter(pl.col("trial_id") == strong).select("point", a="latent_dist").join(
                    group.filter(pl.col("trial_id") == weak).select("point", b="latent_dist"), on="point"
                )
                diff = pair.get_column("a") - pair.get_column("b")
                n = pair.height
                half = student_t.ppf(0.5 + confidence / 2, n - 1) * diff.std() / math.sqrt(n) if n > 1 else None
                out.append(dict(
                    zip(SETTING, setting),
                    stronger=labels[strong], weaker=labels[weak], n=n,
                    stronger_dist=pair.get_column("a").mean(), weaker_dist=pair.get_column("b").mean(),
                    diff_mean=diff.mean(), diff_lo=diff.mean() - half if half is not None else None, diff_hi=diff.mean() + half if half is not None else None,
                    stronger_farther=(diff > 0).mean() if n else None,
                ))
    return pl.DataFrame(out) if out else pl.DataFrame()


def set_name(attack: str, norm: str | None, eps: float | None) -> str:
    """The base name of an input set: ``clean``; ``<attack>-<norm>-<eps>`` for a pixel-space
    attack at a radius (``fgsm-linf-0.1``, as the ``adversarial`` axis spells it); the attack
    alone when it has no radius (``cw``, ``natural``)."""
    if attack == "clean" or eps is None or (isinstance(eps, float) and math.isnan(eps)):
        return attack
    return "-".join([attack, *([norm] if norm else []), f"{eps:g}"])


def _setting_text(column: str, value) -> str:
    shown = "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
    return f"{column.removeprefix('latent_')}={shown}"


def reconstruction_rows(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """The reconstruction evaluator's rows with ``input_set`` (``set_name``; where two sets
    share a base name, e.g. C&W at two kappas or two natural searches, each gets the settings
    that differ between them: ``cw kappa=0``, ``natural search=hybrid``). Raises ValueError
    without any."""
    df = eager(frame).filter(pl.col("evaluator") == "reconstruction", pl.col("recon_acc").is_not_null())
    if df.is_empty():
        raise ValueError("no reconstruction rows (evaluator = reconstruction)")
    key = [c for c in SET_KEY if c in df.columns]
    sets = df.select(key).unique(maintain_order=True)
    sets = sets.with_columns(_base=pl.Series([set_name(r["attack"], r.get("norm"), r.get("eps")) for r in sets.iter_rows(named=True)], dtype=pl.String))
    names = []
    for r in sets.iter_rows(named=True):
        twins = sets.filter(pl.col("_base") == r["_base"])
        differ = [c for c in key if twins.get_column(c).n_unique() > 1]
        names.append(" ".join([r["_base"], *(_setting_text(c, r[c]) for c in differ)]))
    sets = sets.with_columns(input_set=pl.Series(names, dtype=pl.String)).drop("_base")
    return df.drop("input_set", strict=False).join(sets, on=key, how="left", nulls_equal=True, maintain_order="left")


def set_order(df: pl.DataFrame) -> list[str]:
    """Input-set names of ``reconstruction_rows`` in table order: clean, the attacks in the order
    ``study.attacks`` registers them (fgsm, bim, pgd, apgd, cw), natural, then any other; each
    attack's norms by name and its eps ascending."""
    known = {"clean": -1} | {a: i for i, a in enumerate(FAMILIES)} | {"natural": len(FAMILIES)}
    sets = df.select("input_set", "attack", *(c for c in ("norm", "eps") if c in df.columns)).unique("input_set")
    key = lambda r: (known.get(r["attack"], len(known)), r["attack"], r.get("norm") or "", r.get("eps") is None, r.get("eps") or 0.0, r["input_set"])  # noqa: E731
    return [r["input_set"] for r in sorted(sets.iter_rows(named=True), key=key)]


def reconstruction_table(frame: pl.DataFrame | pl.LazyFrame, wide: bool = False) -> pl.DataFrame:
    """Accuracy per trial and input set without the defense (``accuracy``: on the inputs as
    given) and with it (``recon_acc``: on G(I(inputs))).

    Long (default): label, input_set, accuracy, recon_acc, by label and ``set_order``.
    ``wide=True``: the source text's layout, one row per trial (label) and two columns per input
    set, ``<set>`` and ``<set> reconstructed``."""
    df = reconstruction_rows(frame)
    order = set_order(df)
    long = df.select("label", "input_set", accuracy="robust_acc", recon_acc="recon_acc").sort(pl.col("label"), _rank("input_set", order))
    if not wide:
        return long
    cells = pl.concat([
        long.select("label", column="input_set", value="accuracy"),
        long.select("label", column=pl.col("input_set") + RECONSTRUCTED, value="recon_acc"),
    ])
    table = cells.pivot(on="column", index="label", values="value").sort("label")
    return table.select("label", *(c for s in order for c in (s, s + RECONSTRUCTED)))


def _log_axis(values: pl.Series, steps: tuple[int, ...] = (1, 2, 5)) -> tuple[alt.Scale, alt.Axis]:
    """A log scale a little wider than ``values`` (so no point sits on the edge) with ticks at
    ``steps`` x the powers of ten inside it; symlog with default ticks where some value is 0."""
    values = values.drop_nulls()
    low, high = values.min(), values.max()
    if low is None or low <= 0:
        return alt.Scale(type="symlog"), alt.Axis()
    lo, hi = low / 1.3, high * 1.3
    ticks = [m * 10.0**k for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1) for m in steps]
    return alt.Scale(type="log", domain=[lo, hi], nice=False), alt.Axis(values=[t for t in ticks if lo <= t <= hi], format="~g", grid=True)


def _search_colors(settings: list[str]) -> alt.Scale:
    """Each search kind its own colour in every chart; settings with N and dr take the palette."""
    if all(s in SEARCH_COLORS for s in settings):
        return alt.Scale(domain=settings, range=[SEARCH_COLORS[s] for s in settings])
    return alt.Scale(domain=settings, range=[PALETTE[i % len(PALETTE)] for i in range(len(settings))])


def _labels(df: pl.DataFrame) -> list[str]:
    return sorted(df.get_column("label").unique().to_list())


def success_curve(frame: pl.DataFrame | pl.LazyFrame) -> alt.FacetChart:
    """Success rate (0 to 1) against the mean classifier queries a point cost (log x axis), a
    point per budget and a line per search setting (colour: ``with_setting``), one panel per
    target model (label). Tooltips: budget, rounds, success, mean queries, mean latent distance."""
    data = with_setting(_sorted(rows(frame).filter(pl.col("queries_mean").is_not_null())))
    settings = data.get_column("setting").unique(maintain_order=True).to_list()
    scale, axis = _log_axis(data.get_column("queries_mean"))
    line = alt.Chart().mark_line(point=alt.OverlayMarkDef(size=45, filled=True)).encode(
        x=alt.X("queries_mean:Q", title="mean classifier queries per point (log scale)", scale=scale, axis=axis),
        y=alt.Y("success_rate:Q", title="success rate", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("setting:N", title="search", sort=settings, scale=_search_colors(settings)),
        order=alt.Order("latent_rounds:Q"),
        tooltip=[
            alt.Tooltip("label:N", title="model"),
            alt.Tooltip("setting:N", title="search"),
            alt.Tooltip("latent_samples:Q", title="N (samples per round)"),
            alt.Tooltip("latent_rounds:Q", title="rounds (at most)"),
            alt.Tooltip("budget:Q", title="budget (queries at most)"),
            alt.Tooltip("success_rate:Q", title="success rate", format=".3f"),
            alt.Tooltip("queries_mean:Q", title="mean queries", format=".1f"),
            alt.Tooltip("latent_dist_mean:Q", title="mean latent distance", format=".3g"),
        ],
    ).properties(width=240, height=170)
    columns = ["label", "setting", "latent_samples", "latent_rounds", "budget", "success_rate", "queries_mean", "latent_dist_mean"]
    return line.facet(
        data=alt.Data(values=data.select(columns).to_dicts()),
        facet=alt.Facet("label:N", title=None, sort=_labels(data), header=alt.Header(labelFontSize=12)),
        columns=3,
    )


def distance_data(frame: pl.DataFrame | pl.LazyFrame, points: pl.DataFrame | None = None) -> pl.DataFrame:
    """The data of ``distance_chart``: per label and search setting at the largest budget,
    setting, success_rate, mean and median latent distance (the rows'), and from the ``natural``
    artifact when given, n_found, q1 and q3 of the found points' latent distances (null without
    it, or for a trial it lacks)."""
    top = with_setting(_largest_budget(rows(frame)))
    out = top.select("trial_id", "label", *SETTING, "latent_rounds", "setting", "success_rate", mean="latent_dist_mean", median="latent_dist_median")
    if points is not None:
        dist = pl.col("latent_dist")
        quartiles = points.filter(pl.col("found"), dist.is_not_null()).group_by("trial_id", *SETTING, "latent_rounds").agg(
            n_found=pl.len(), q1=dist.quantile(0.25, "linear"), q3=dist.quantile(0.75, "linear")
        )
        out = out.join(quartiles, on=["trial_id", *SETTING, "latent_rounds"], how="left", nulls_equal=True)
    else:
        out = out.with_columns(n_found=pl.lit(None, pl.UInt32), q1=pl.lit(None, pl.Float64), q3=pl.lit(None, pl.Float64))
    return _sorted(out)


def distance_chart(frame: pl.DataFrame | pl.LazyFrame, points: pl.DataFrame | None = None) -> alt.LayerChart:
    """Latent distance ||z* - I(x)|| of the adversaries found, by target model (x) and search
    setting (colour, side by side) at the largest budget: the median (circle) and the mean
    (diamond) of the rows, and, given the ``natural`` artifact, a bar over the
    interquartile range of the found points. Log y axis: a few far adversaries pull the mean
    far above the median."""
    data = distance_data(frame, points)
    settings = data.get_column("setting").unique(maintain_order=True).to_list()
    stats = data.unpivot(index=["label", "setting", "success_rate", "n_found", "q1", "q3"], on=["median", "mean"], variable_name="statistic", value_name="distance")
    stats = stats.filter(pl.col("distance").is_not_null())
    scale, axis = _log_axis(pl.concat([stats.get_column("distance"), data.get_column("q1"), data.get_column("q3")]), steps=(1, 3))
    x = alt.X("label:N", title="target model", sort=_labels(data), axis=alt.Axis(labelAngle=0))
    offset = alt.XOffset("setting:N", sort=settings)
    color = alt.Color("setting:N", title="search", sort=settings, scale=_search_colors(settings), legend=alt.Legend(symbolOpacity=1))
    tooltip = [
        alt.Tooltip("label:N", title="model"),
        alt.Tooltip("setting:N", title="search"),
        alt.Tooltip("success_rate:Q", title="success rate", format=".3f"),
        alt.Tooltip("n_found:Q", title="adversaries found"),
        alt.Tooltip("q1:Q", format=".3g"),
        alt.Tooltip("q3:Q", format=".3g"),
    ]
    marks = alt.Chart(alt.Data(values=stats.to_dicts())).mark_point(size=80, filled=True, opacity=1).encode(
        x=x,
        xOffset=offset,
        y=alt.Y("distance:Q", title="latent distance ||z* - I(x)|| (log scale)", scale=scale, axis=axis),
        color=color,
        shape=alt.Shape(
            "statistic:N", title="statistic", sort=["median", "mean"], scale=alt.Scale(domain=["median", "mean"], range=["circle", "diamond"]),
            legend=alt.Legend(symbolFillColor="#555", symbolStrokeColor="#555"),
        ),
        tooltip=[*tooltip, alt.Tooltip("statistic:N"), alt.Tooltip("distance:Q", format=".3g")],
    )
    layers = [marks]
    iqr = data.filter(pl.col("q1").is_not_null())
    if not iqr.is_empty():
        bars = alt.Chart(alt.Data(values=iqr.select("label", "setting", "success_rate", "n_found", "q1", "q3").to_dicts())).mark_bar(opacity=0.3, width=14).encode(
            x=x, xOffset=offset, y=alt.Y("q1:Q", scale=scale), y2="q3:Q", color=color, tooltip=tooltip
        )
        layers.insert(0, bars)
    width = alt.Step(28 * max(len(settings), 1) + 12)
    return alt.layer(*layers).properties(width=width, height=230)


def reconstruction_data(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """The data of ``reconstruction_chart``: label, input_set, defense (``as given``, then
    ``reconstructed, G(I(x))``), accuracy; within each defense, as ``reconstruction_table``."""
    long = reconstruction_table(frame)
    return pl.concat([long.select("label", "input_set", defense=pl.lit(name), accuracy=column) for column, name in DEFENSE.items()])


def reconstruction_chart(frame: pl.DataFrame | pl.LazyFrame) -> alt.FacetChart:
    """Grouped bars: per input set (x, ``set_order``), the accuracy on the inputs as given and on
    their reconstruction G(I(inputs)) (colour, side by side), value on top; one panel per trial."""
    data = reconstruction_data(frame)
    order = set_order(reconstruction_rows(frame))
    defenses = list(DEFENSE.values())
    base = alt.Chart().encode(
        x=alt.X("input_set:N", title="input set", sort=order, axis=alt.Axis(labelAngle=-30, labelLimit=160)),
        xOffset=alt.XOffset("defense:N", sort=defenses),
        y=alt.Y("accuracy:Q", title="accuracy", scale=alt.Scale(domain=[0, 1])),
    )
    bars = base.mark_bar().encode(
        color=alt.Color("defense:N", title="classified", sort=defenses, scale=alt.Scale(domain=defenses, range=["#9ecae9", "#4c78a8"])),
        tooltip=[alt.Tooltip("label:N", title="model"), alt.Tooltip("input_set:N", title="input set"), alt.Tooltip("defense:N", title="classified"), alt.Tooltip("accuracy:Q", format=".3f")],
    )
    text = base.mark_text(dy=-6, fontSize=9).encode(text=alt.Text("accuracy:Q", format=".2f"))
    layered = alt.layer(bars, text).properties(width=alt.Step(22), height=180)
    return layered.facet(
        data=alt.Data(values=data.to_dicts()),
        facet=alt.Facet("label:N", title=None, sort=_labels(data), header=alt.Header(labelFontSize=12)),
        columns=3,
    )
