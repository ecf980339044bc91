"""Tables and charts of the robust / non-robust features study (Ilyas et al. 2019, "Adversarial
Examples Are Not Bugs, They Are Features").

Each trial trains a standard model (``model``: cnn, mlp, logreg) on one training set (``train_set``,
named by ``with_set``): the original D, or one built from it with two *source* models, D_R
(robust features: representation matching to the robust source), D_NR (non-robust features: to the
standard source), D_rand and D_det (targeted L2 PGD on the standard source toward a random label /
(y+1) mod C, relabelled with the target). Every trial is evaluated on the original test set by the
`robustness` evaluator; the study evaluator `features` classifies the standard source's adversarial
examples with every trial model (``transfer_error``: the share that fool it).

Accuracies are binomial proportions over ``n_eval`` test points, so they carry Clopper-Pearson
intervals (``clopper_pearson``); the robust-accuracy gain of D_R over D carries Newcombe's hybrid
score interval for a difference of two independent proportions (``newcombe``).

``accuracy_rows`` (numeric), ``accuracy_table`` (display), ``robust_margin``, ``sets_table``,
``transfer_rows``, ``transfer_data``: polars frames; ``accuracy_chart``, ``transfer_matrix_chart``,
``transfer_vs_accuracy_chart``: altair charts with their data inline, as ``analysis.charts``.
"""

from __future__ import annotations

import math

import altair as alt
import numpy as np
import polars as pl
from scipy.stats import norm as normal

from study.intervals import clopper_pearson

from analysis.load import eager

# train_set -> set name; null is the original training set.
NAMES = {None: "D", "robust": "D_R", "shuffled": "D_shuf", "non-robust": "D_NR", "rand": "D_rand", "det": "D_det"}
KINDS = tuple(NAMES)
# The columns that tell two sets of one kind apart, with the names a set's name shows them by.
SETTINGS = {"set_eps": "eps", "set_start": "start", "set_steps": "steps", "set_step": "step"}
# Ilyas et al. 2019 on CIFAR-10 (given as the study's reference points): clean test accuracy and
# robust accuracy of a standard model trained on each set; None where no figure is quoted.
PAPER = {"robust": (0.84, 0.48), "non-robust": (0.88, 0.0), "rand": (0.63, None), "det": (0.44, None)}
PAPER_COLUMN = "paper (CIFAR-10)"
HOW = {
    "robust": "representation matching to the robust source",
    "non-robust": "representation matching to the standard source",
    "rand": "targeted L2 PGD on the standard source toward a random label",
    "det": "targeted L2 PGD on the standard source toward (y+1) mod C",
    "shuffled": "the control for D_R: x plus another image's change x_r - x in D_R, labelled y",
}
SET_COLORS = {"D": "#8c8c8c", "D_R": "#4c78a8", "D_NR": "#f58518", "D_rand": "#54a24b", "D_det": "#e45756", "D_shuf": "#9ecae9"}
# What pairs a D_shuf with the D_R whose changes it permutes.
MATCHING = ("set_start", "set_steps", "set_step")


def _rank(column: str, order: list[str] | tuple[str, ...]) -> pl.Expr:
    """A sort key placing ``order``'s values of ``column`` first, in that order, then the rest."""
    return pl.col(column).replace_strict(list(order), list(range(len(order))), default=len(order), return_dtype=pl.Int64)


def _kind_rank() -> pl.Expr:
    """A sort key of ``train_set``: D (null) first, then robust, shuffled (its control), non-robust, rand, det, others."""
    return pl.when(pl.col("train_set").is_null()).then(-1).otherwise(_rank("train_set", KINDS[1:]))


def _g(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


# -- set names ----------------------------------------------------------------------------


def set_name(kind: str | None) -> str:
    """The base name of a training set kind: ``D`` (null), ``D_R``, ``D_NR``, ``D_rand``,
    ``D_det``; ``D_<kind>`` for any other."""
    return NAMES.get(kind, f"D_{kind}")


def _sets(df: pl.DataFrame) -> pl.DataFrame:
    """The distinct training sets of ``df`` (train_set and its settings) with ``set``: the base
    name, `` eps=<g>`` where the kind comes at more than one set_eps, and where two sets still
    share a name, the other settings that differ between them (``start=noise``)."""
    key = ["train_set", *(c for c in SETTINGS if c in df.columns)]
    sets = df.select(key).unique().sort(_kind_rank(), *key, nulls_last=True)
    names = []
    for r in sets.iter_rows(named=True):
        same_kind = sets.filter(pl.col("train_set").eq_missing(r["train_set"]))
        eps = "set_eps" in key and same_kind.get_column("set_eps").drop_nulls().n_unique() > 1 and r["set_eps"] is not None
        names.append(set_name(r["train_set"]) + (f" eps={r['set_eps']:g}" if eps else ""))
    sets = sets.with_columns(set=pl.Series(names, dtype=pl.String))
    out = []
    for r in sets.iter_rows(named=True):
        twins = sets.filter(pl.col("set") == r["set"])
        differ = [c for c in key[1:] if c != "set_eps" and twins.get_column(c).n_unique() > 1]
        out.append(" ".join([r["set"], *(f"{SETTINGS[c]}={'-' if r[c] is None else _g(r[c])}" for c in differ)]))
    return sets.with_columns(set=pl.Series(out, dtype=pl.String))


def with_set(frame: pl.DataFrame | pl.LazyFrame, name: str = "set") -> pl.DataFrame:
    """``frame`` with the column ``name``: each row's training set name (``_sets``), e.g. ``D``,
    ``D_R``, ``D_rand eps=0.5`` when the study builds D_rand at more than one eps."""
    df = eager(frame)
    sets = _sets(df)
    key = [c for c in sets.columns if c != "set"]
    return df.drop(name, strict=False).join(sets.rename({"set": name}), on=key, how="left", nulls_equal=True, maintain_order="left")


def set_order(df: pl.DataFrame, name: str = "set") -> list[str]:
    """The set names of a frame with ``with_set``'s column, in table order: D, D_R, D_shuf,
    D_NR, D_rand, D_det, any other kind; within a kind by eps (then the other settings)."""
    key = [c for c in ("train_set", *SETTINGS) if c in df.columns]
    sets = df.select(*key, name).unique().sort(_kind_rank(), *key, name, nulls_last=True)
    return sets.get_column(name).unique(maintain_order=True).to_list()


def _sorted(table: pl.DataFrame, df: pl.DataFrame) -> pl.DataFrame:
    """By model (name), then set (``set_order``), then label."""
    return table.sort(pl.col("model"), _rank("set", set_order(df)), pl.col("label"))


# -- intervals ----------------------------------------------------------------------------


def wilson(k: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of k / n (no continuity correction)."""
    z = normal.ppf(0.5 + confidence / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def newcombe(k1: float, n1: float, k2: float, n2: float, confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe's hybrid score interval (1998, method 10) for p1 - p2 of two independent
    proportions: the Wilson intervals of each combined. Unlike Wald, it stays inside [-1, 1] and
    keeps its coverage near 0 and 1, where robust accuracies on D sit."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, confidence)
    l2, u2 = wilson(k2, n2, confidence)
    d = p1 - p2
    return d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def _with_interval(df: pl.DataFrame, acc: str, n: str, confidence: float) -> pl.DataFrame:
    """``df`` with ``<acc>_lo`` and ``<acc>_hi``: the Clopper-Pearson interval of ``acc`` over
    ``n`` points (k = round(acc * n)); null where either is null."""
    known = df.get_column(acc).is_not_null() & df.get_column(n).is_not_null()
    acc_v, n_v = df.get_column(acc).fill_null(0).to_numpy(), df.get_column(n).fill_null(0).to_numpy()
    lo, hi = clopper_pearson(np.round(acc_v * n_v), n_v, confidence)
    stem = acc.removesuffix("_acc")
    return df.with_columns(
        pl.when(known).then(pl.Series(lo)).alias(f"{stem}_lo"),
        pl.when(known).then(pl.Series(hi)).alias(f"{stem}_hi"),
    )


# -- accuracies ---------------------------------------------------------------------------


def _robustness(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """The robustness rows of plain eps grids (not a per-class eps rule) with ``set``; raises
    ValueError without any."""
    df = eager(frame).filter(pl.col("evaluator") == "robustness", pl.col("robust_acc").is_not_null())
    if "eps_rule" in df.columns:
        df = df.filter(pl.col("eps_rule").is_null())
    if df.is_empty():
        raise ValueError("no robustness rows (evaluator = robustness)")
    return with_set(df)


def clean_rows(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Per trial, by model and set: model, set, label, trial_id, train_set, set_eps, clean_acc
    (its robustness rows' ``clean_acc``, or robust_acc at eps 0) and n_eval (of that row)."""
    df = _robustness(frame)
    clean = pl.coalesce(pl.col("clean_acc"), pl.when(pl.col("eps") == 0).then(pl.col("robust_acc")))
    per = df.with_columns(_clean=clean).filter(pl.col("_clean").is_not_null()).sort("eps")
    out = per.group_by("trial_id", maintain_order=True).agg(
        pl.col("model", "set", "label", "train_set", "set_eps").first(), clean_acc=pl.col("_clean").first(), n_eval=pl.col("n_eval").first()
    )
    return _sorted(out.select("model", "set", "label", "trial_id", "train_set", "set_eps", "clean_acc", "n_eval"), df)


def accuracy_rows(
    frame: pl.DataFrame | pl.LazyFrame, eps: float, norm: str, attack: str = "pgd", confidence: float = 0.95, n_classes: int = 10
) -> pl.DataFrame:
    """Per trial with a robustness row of ``attack`` at (``norm``, ``eps``), by model, set
    (``set_order``) and label: model, set, label, trial_id, train_set, set_eps, n_eval, clean_acc with its
    Clopper-Pearson ``confidence`` interval (clean_lo, clean_hi), above_chance (clean_lo >
    1 / ``n_classes``), attack, norm, eps, robust_acc with its interval (robust_lo, robust_hi),
    and the paper's figures for the set's kind (paper_clean, paper_robust; null where none).
    Where the attack ran with several settings (e.g. 20 and 100 steps), the lowest robust_acc
    (the strongest run). Raises ValueError without such rows."""
    df = _robustness(frame)
    at = df.filter(pl.col("attack") == attack, pl.col("norm") == norm, pl.col("eps") == eps)
    if at.is_empty():
        grid = sorted(df.filter(pl.col("attack") == attack, pl.col("norm") == norm).get_column("eps").unique().to_list())
        raise ValueError(f"no robustness rows of attack {attack!r} at {norm} eps {eps:g} (its {norm} eps: {grid})")
    at = at.sort("robust_acc").group_by("trial_id", maintain_order=True).first()
    clean = clean_rows(df).select("trial_id", "clean_acc")
    rows = at.drop("clean_acc").join(clean, on="trial_id", how="left")
    paper = pl.DataFrame(
        [(k, c, r) for k, (c, r) in PAPER.items()], schema={"train_set": pl.String, "paper_clean": pl.Float64, "paper_robust": pl.Float64}, orient="row"
    )
    rows = rows.join(paper, on="train_set", how="left")
    rows = _with_interval(_with_interval(rows, "clean_acc", "n_eval", confidence), "robust_acc", "n_eval", confidence)
    rows = rows.with_columns(above_chance=pl.col("clean_lo") > 1 / n_classes)
    columns = [
        "model", "set", "label", "trial_id", "train_set", "set_eps", "n_eval", "clean_acc", "clean_lo", "clean_hi", "above_chance",
        "attack", "norm", "eps", "robust_acc", "robust_lo", "robust_hi", "paper_clean", "paper_robust",
    ]
    return _sorted(rows.select(columns), df)


def _percent(acc: str, lo: str, hi: str) -> pl.Expr:
    """``93.1% [91.4, 94.6]``: an accuracy and its interval in percent, one decimal."""
    pct = lambda c: (pl.col(c) * 100).round(1).cast(pl.String)  # noqa: E731
    return pl.format("{}% [{}, {}]", pct(acc), pct(lo), pct(hi))


def paper_text(kind: str | None) -> str | None:
    """The paper's figures for a set kind as text (``84% clean / 48% robust``), None for D."""
    if kind not in PAPER:
        return None
    clean, robust = PAPER[kind]
    return f"{clean:.0%} clean" + ("" if robust is None else f" / {robust:.0%} robust")


def accuracy_table(
    frame: pl.DataFrame | pl.LazyFrame, eps: float, norm: str, attack: str = "pgd", confidence: float = 0.95, n_classes: int = 10
) -> pl.DataFrame:
    """``accuracy_rows`` for reading: model, set (and label, where some (model, set) has more
    than one trial), n, clean and ``robust (<attack> <norm> <eps>)`` as ``93.1% [91.4, 94.6]``
    (percent, Clopper-Pearson interval), ``above chance`` (yes/no), ``paper (CIFAR-10)``."""
    rows = accuracy_rows(frame, eps, norm, attack, confidence, n_classes)
    several = rows.group_by("model", "set").len().get_column("len").max() > 1
    texts = pl.Series(PAPER_COLUMN, [paper_text(k) for k in rows.get_column("train_set")], dtype=pl.String)
    return rows.with_columns(texts).select(
        "model", "set", *(["label"] if several else []), n="n_eval",
        clean=_percent("clean_acc", "clean_lo", "clean_hi"),
        **{"above chance": pl.when(pl.col("above_chance")).then(pl.lit("yes")).otherwise(pl.lit("no"))},
        **{f"robust ({attack} {norm} {eps:g})": _percent("robust_acc", "robust_lo", "robust_hi")},
        **{PAPER_COLUMN: pl.col(PAPER_COLUMN)},
    )


def robust_margin(frame: pl.DataFrame | pl.LazyFrame, eps: float, norm: str, attack: str = "pgd", confidence: float = 0.95) -> pl.DataFrame:
    """How much robust accuracy training on robust features buys: per model and robust set
    (train_set ``robust``; one row per D_R variant), robust accuracy under ``attack`` at
    (``norm``, ``eps``) on D_R minus on D, with Newcombe's hybrid score ``confidence`` interval
    for the difference of two independent proportions (``newcombe``); and, where the study has
    the D_R's control (train_set ``shuffled`` with the same matching settings), D_R minus the
    control, which changed the images as much without label information. Columns: model, set,
    attack, norm, eps, acc_D, n_D, acc_R, n_R, margin, margin_lo, margin_hi,
    clears_sampling_error (margin_lo > 0), acc_shuf, over_shuf, over_shuf_lo, over_shuf_hi,
    clears_control (over_shuf_lo > 0; null without a control). Models without both D and D_R
    are left out; raises ValueError when none has both, or when a model has more than one trial
    on D."""
    df = eager(frame)
    rows = accuracy_rows(df, eps, norm, attack, confidence)
    matching = [c for c in MATCHING if c in df.columns]
    rows = rows.join(df.select("trial_id", *matching).unique("trial_id"), on="trial_id", how="left")
    d = rows.filter(pl.col("train_set").is_null())
    twice = d.group_by("model").len().filter(pl.col("len") > 1).get_column("model").to_list()
    if twice:
        raise ValueError(f"more than one trial on D for model(s) {sorted(twice)}: the margin needs one")
    pairs = rows.filter(pl.col("train_set") == "robust").select("model", "set", "label", "attack", "norm", "eps", *matching, acc_R="robust_acc", n_R="n_eval").join(
        d.select("model", acc_D="robust_acc", n_D="n_eval"), on="model"
    )
    if pairs.is_empty():
        raise ValueError("no model has trials on both D and D_R")
    control = rows.filter(pl.col("train_set") == "shuffled").select("model", *matching, acc_shuf="robust_acc", n_shuf="n_eval")
    pairs = pairs.join(control, on=["model", *matching], how="left", nulls_equal=True)

    def interval(k_acc: str, k_n: str, other_acc: str, other_n: str, r: dict) -> tuple[float | None, float | None]:
        if r[other_acc] is None:
            return None, None
        return newcombe(round(r[k_acc] * r[k_n]), r[k_n], round(r[other_acc] * r[other_n]), r[other_n], confidence)

    over_d = [interval("acc_R", "n_R", "acc_D", "n_D", r) for r in pairs.iter_rows(named=True)]
    over_shuf = [interval("acc_R", "n_R", "acc_shuf", "n_shuf", r) for r in pairs.iter_rows(named=True)]
    out = pairs.with_columns(
        margin=pl.col("acc_R") - pl.col("acc_D"),
        margin_lo=pl.Series([b[0] for b in over_d], dtype=pl.Float64),
        margin_hi=pl.Series([b[1] for b in over_d], dtype=pl.Float64),
        over_shuf=pl.col("acc_R") - pl.col("acc_shuf"),
        over_shuf_lo=pl.Series([b[0] for b in over_shuf], dtype=pl.Float64),
        over_shuf_hi=pl.Series([b[1] for b in over_shuf], dtype=pl.Float64),
    ).with_columns(clears_sampling_error=pl.col("margin_lo") > 0, clears_control=pl.col("over_shuf_lo") > 0)
    return out.select(
        "model", "set", "attack", "norm", "eps", "acc_D", "n_D", "acc_R", "n_R", "margin", "margin_lo", "margin_hi", "clears_sampling_error",
        "acc_shuf", "over_shuf", "over_shuf_lo", "over_shuf_hi", "clears_control",
    )


# -- the constructed sets -----------------------------------------------------------------


def _how(s: dict) -> str:
    """How a set of ``features/sets.json`` was built, in words."""
    kind = s.get("kind")
    parts = [HOW.get(kind, str(kind))]
    if s.get("start") is not None:
        parts.append(f"start {s['start']}")
    if s.get("eps") is not None:
        parts.append(f"eps {_g(s['eps'])}")
    if s.get("steps") is not None:
        parts.append(f"{s['steps']} steps" + ("" if s.get("step") is None else f" of {_g(s['step'])}"))
    return ", ".join(parts)


def sets_table(sets: list[dict]) -> pl.DataFrame:
    """The constructed training sets (``features/sets.json``), one row each in set order:
    name, how (kind, start, eps, steps in words), n, target_rate (rand/det: share the standard
    source classifies as the new label), rep_reduction (robust/non-robust), l2_mean (mean
    |x_new - x|_2), label_agreement (new label = original), build_s (seconds; null when the set
    was read from the store: from_store), source."""
    schema = {
        "name": pl.String, "how": pl.String, "n": pl.Int64, "target_rate": pl.Float64, "rep_reduction": pl.Float64, "l2_mean": pl.Float64,
        "label_agreement": pl.Float64, "build_s": pl.Float64, "from_store": pl.Boolean, "source": pl.String, "train_set": pl.String, "_eps": pl.Float64,
    }
    rows = [
        dict(
            name=s.get("name"), how=_how(s), n=s.get("n"), target_rate=s.get("target_rate"), rep_reduction=s.get("rep_reduction"), l2_mean=s.get("l2_mean"),
            label_agreement=s.get("label_agreement"), build_s=None if s.get("from_store") else s.get("build_s"), from_store=s.get("from_store"),
            source=None if s.get("source") is None else str(s["source"]), train_set=s.get("kind"), _eps=s.get("eps"),
        )
        for s in sets
    ]
    table = pl.DataFrame(rows, schema=schema)
    return table.sort(_kind_rank(), "_eps", "name", nulls_last=True).drop("train_set", "_eps")


# -- transfer of the standard source's adversarial examples -------------------------------


def transfer_rows(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """The features evaluator's rows (one per target trial and eps): model, set, label,
    trial_id, train_set, set_eps, source_label, attack, norm, eps, transfer_error (the share of the
    standard source's adversarial examples the target misclassifies), agreement, n_eval; by
    model, set, eps. Raises ValueError without any."""
    df = eager(frame).filter(pl.col("evaluator") == "features", pl.col("transfer_error").is_not_null())
    if df.is_empty():
        raise ValueError("no features rows (evaluator = features)")
    df = with_set(df)
    columns = ["model", "set", "label", "trial_id", "train_set", "set_eps", "source_label", "attack", "norm", "eps", "transfer_error", "agreement", "n_eval"]
    order = set_order(df)
    return df.select(c for c in columns if c in df.columns).sort(pl.col("model"), _rank("set", order), pl.col("eps"), pl.col("label"))


def _at_eps(rows: pl.DataFrame, eps: float | None) -> tuple[pl.DataFrame, float]:
    """The transfer rows at ``eps`` (default: the largest) and that eps."""
    eps = rows.get_column("eps").max() if eps is None else eps
    at = rows.filter(pl.col("eps") == eps)
    if at.is_empty():
        raise ValueError(f"no features rows at eps {eps:g} (there are {sorted(rows.get_column('eps').unique().to_list())})")
    return at, eps


def _source_title(at: pl.DataFrame, eps: float) -> str:
    """``source cnn, pgd l2 eps 0.5``: whose adversarial examples, made how."""
    first = at.row(0, named=True)
    made = [str(first[c]) for c in ("attack", "norm") if first.get(c) is not None]
    return f"{first.get('source_label') or 'the source'}, {' '.join([*made, f'eps {eps:g}'])}"


def transfer_matrix_chart(frame: pl.DataFrame | pl.LazyFrame, eps: float | None = None) -> alt.LayerChart:
    """Transfer of the standard source's adversarial examples at ``eps`` (default: the largest):
    a cell per target model (rows) and training set (columns, ``set_order``), coloured and
    labelled with the target's transfer_error (0 to 1). Tooltip: label, agreement, n."""
    rows = transfer_rows(frame)
    at, eps = _at_eps(rows, eps)
    order = set_order(at)
    models = sorted(at.get_column("model").unique().to_list())
    base = alt.Chart().encode(
        x=alt.X("set:N", title="training set", sort=order, axis=alt.Axis(labelAngle=-30, labelAlign="right", labelLimit=160)),
        y=alt.Y("model:N", title="target model", sort=models),
    )
    rect = base.mark_rect(stroke="white", strokeWidth=1).encode(
        color=alt.Color("transfer_error:Q", title="transfer rate", scale=alt.Scale(domain=[0, 1], scheme="orangered")),
        tooltip=[
            alt.Tooltip("label:N", title="target"), alt.Tooltip("set:N", title="training set"), alt.Tooltip("transfer_error:Q", title="transfer rate", format=".3f"),
            alt.Tooltip("agreement:Q", title="agreement on wrong class", format=".3f"), alt.Tooltip("n_eval:Q", title="n"),
        ],
    )
    text = base.mark_text(fontSize=12).encode(
        text=alt.Text("transfer_error:Q", format=".2f"),
        color=alt.condition("datum.transfer_error > 0.55", alt.value("white"), alt.value("black")),
    )
    data = at.select("model", "set", "label", "transfer_error", *(c for c in ("agreement", "n_eval") if c in at.columns))
    return alt.layer(rect, text, data=alt.Data(values=data.to_dicts())).properties(
        width=alt.Step(80), height=alt.Step(36), title=f"transfer rate of {_source_title(at, eps)}"
    )


def transfer_data(frame: pl.DataFrame | pl.LazyFrame, eps: float | None = None, confidence: float = 0.95) -> pl.DataFrame:
    """The data of ``transfer_vs_accuracy_chart``: per model trained on D (its transfer rate at
    ``eps``, default the largest) and each rand/det set it was also trained on: model, set,
    label, train_set, set_eps, transfer_error (the mean where a model has several D trials),
    clean_acc (of the model trained on that set, on the original test set), clean_lo, clean_hi
    (Clopper-Pearson), n_eval, eps. Raises ValueError when no model has both."""
    at, eps = _at_eps(transfer_rows(frame), eps)
    d = at.filter(pl.col("train_set").is_null()).group_by("model").agg(pl.col("transfer_error").mean())
    clean = clean_rows(frame).filter(pl.col("train_set").is_in(["rand", "det"]))
    out = clean.join(d, on="model")
    if out.is_empty():
        raise ValueError("no model has a features row on D and a robustness row on D_rand or D_det")
    out = _with_interval(out, "clean_acc", "n_eval", confidence).with_columns(eps=pl.lit(eps))
    columns = ["model", "set", "label", "train_set", "set_eps", "transfer_error", "clean_acc", "clean_lo", "clean_hi", "n_eval", "eps"]
    return _sorted(out, out).select(columns)


def transfer_vs_accuracy_chart(frame: pl.DataFrame | pl.LazyFrame, eps: float | None = None, n_classes: int = 10) -> alt.LayerChart:
    """The paper's Figure 3: per target architecture, x = the rate at which the standard
    source's adversarial examples (at ``eps``, default the largest) fool it when trained on D,
    y = its clean test accuracy when trained on D_det (and D_rand: colour and shape), with
    the Clopper-Pearson interval as a vertical bar; points labelled by model; a dashed rule at
    chance (1 / ``n_classes``). Transferable non-robust features should put the points on a
    rising line."""
    data = transfer_data(frame, eps)
    sets = set_order(data)
    colors = [SET_COLORS.get(s.split(" ")[0], "#72b7b2") for s in sets]
    x = alt.X("transfer_error:Q", title="transfer rate to the model trained on D", scale=alt.Scale(domain=[0, 1]))
    y = alt.Y("clean_acc:Q", title="clean test accuracy trained on the set", scale=alt.Scale(domain=[0, 1]))
    color = alt.Color("set:N", title="training set", sort=sets, scale=alt.Scale(domain=sets, range=colors))
    points = alt.Chart().mark_point(filled=True, size=90).encode(
        x=x, y=y, color=color, shape=alt.Shape("set:N", title="training set", sort=sets, scale=alt.Scale(domain=sets)),  # one legend with colour and shape
        tooltip=[
            alt.Tooltip("label:N", title="model"), alt.Tooltip("set:N", title="training set"), alt.Tooltip("transfer_error:Q", title="transfer rate", format=".3f"),
            alt.Tooltip("clean_acc:Q", title="clean accuracy", format=".3f"), alt.Tooltip("clean_lo:Q", format=".3f"), alt.Tooltip("clean_hi:Q", format=".3f"),
            alt.Tooltip("n_eval:Q", title="n"),
        ],
    )
    bars = alt.Chart().mark_rule(strokeWidth=1.5, opacity=0.6).encode(x=x, y="clean_lo:Q", y2="clean_hi:Q", color=color)
    names = alt.Chart().mark_text(align="left", dx=7, dy=-7, fontSize=11).encode(x=x, y=y, text="model:N", color=color)
    chance = alt.Chart().mark_rule(strokeDash=[4, 3], color="#888").encode(y="chance:Q").transform_calculate(chance=repr(1 / n_classes))
    eps_shown = data.get_column("eps").first()
    values = data.select("model", "set", "label", "transfer_error", "clean_acc", "clean_lo", "clean_hi", "n_eval").to_dicts()
    return alt.layer(chance, bars, points, names, data=alt.Data(values=values)).properties(
        width=320, height=260, title=f"transfer (eps {eps_shown:g}) against learning from the relabelled sets"
    )


# -- accuracy chart -----------------------------------------------------------------------


def accuracy_chart(
    frame: pl.DataFrame | pl.LazyFrame, eps: float, norm: str, attack: str = "pgd", confidence: float = 0.95, n_classes: int = 10
) -> alt.FacetChart:
    """Clean (left panel) and robust accuracy under ``attack`` at (``norm``, ``eps``) (right
    panel) of every model trained on each set: bars per set (x, ``set_order``) and model
    (colour, side by side), the Clopper-Pearson interval as an error bar, a dashed rule at
    chance (1 / ``n_classes``)."""
    rows = accuracy_rows(frame, eps, norm, attack, confidence, n_classes)
    robust = f"robust ({attack} {norm} {eps:g})"
    data = pl.concat([
        rows.select("model", "set", "label", "n_eval", measure=pl.lit("clean"), accuracy="clean_acc", lo="clean_lo", hi="clean_hi"),
        rows.select("model", "set", "label", "n_eval", measure=pl.lit(robust), accuracy="robust_acc", lo="robust_lo", hi="robust_hi"),
    ])
    order = set_order(rows)
    models = sorted(rows.get_column("model").unique().to_list())
    base = alt.Chart().encode(
        x=alt.X("set:N", title="training set", sort=order, axis=alt.Axis(labelAngle=-30, labelAlign="right", labelLimit=160)),
        xOffset=alt.XOffset("model:N", sort=models),
    )
    bars = base.mark_bar().encode(
        y=alt.Y("accuracy:Q", title="accuracy on the original test set", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("model:N", title="model", sort=models),
        tooltip=[
            alt.Tooltip("label:N", title="model"), alt.Tooltip("set:N", title="training set"), alt.Tooltip("measure:N"),
            alt.Tooltip("accuracy:Q", format=".3f"), alt.Tooltip("lo:Q", format=".3f"), alt.Tooltip("hi:Q", format=".3f"), alt.Tooltip("n_eval:Q", title="n"),
        ],
    )
    errors = base.mark_rule(color="#333", strokeWidth=1.2).encode(y="lo:Q", y2="hi:Q")
    chance = alt.Chart().mark_rule(strokeDash=[4, 3], color="#888").encode(y="chance:Q").transform_calculate(chance=repr(1 / n_classes))
    layered = alt.layer(bars, errors, chance).properties(width=alt.Step(16), height=200)
    return layered.facet(
        data=alt.Data(values=data.to_dicts()),
        column=alt.Column("measure:N", title=None, sort=["clean", robust], header=alt.Header(labelFontSize=12)),
    )
