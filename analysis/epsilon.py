"""Tables, charts and image grids for choosing epsilon ("Adversarial Examples: Rethinking the
Definition"): how far apart the classes are, per-class eps, crafted images and eps measured in
a learned embedding.

`distances` rows: one per (trial, norm, ``per_class``, ``eps_quantile``) with the class x class
mean distances summarised (``within_mean``, ``between_mean``, ``within_smaller_rate``,
``nearest_other_mean``) and the per-class eps suggestions (``eps`` their mean, ``eps_min``,
``eps_max``). Its artifacts (``study.artifacts``): ``class_distances`` (every cell of the class x
class matrix per norm; the diagonal is the within-class mean) and ``class_eps`` (eps per class
and quantile). Input-space distances do not depend on the model, so the views of them use one
trial: the first by label (``first_trial``), at its largest ``per_class`` (``sample``).

`robustness` rows with ``eps_rule`` (``per-class`` or ``uniform``, at the same mean eps) and the
``class_eps_robustness`` artifact (robust accuracy per class under each rule). `crafted` rows:
one per eps of x0 + eps sign(x1) over pairs of test images of different classes, with the
``crafted_images`` artifact (the first image of each class and its crafted images). `embedding`
rows (triplet models): a summary row (``knn_acc``, ``within_mean``, ``between_mean``), the
embedding-space PGD per ``embed_eps`` and the input-space PGD's ``inside_rate`` per (norm, eps,
embed_eps); artifacts ``embedding_distances`` (histograms), ``embedding_class_distances``,
``embedding_adversaries``.

``distance_table``, ``closer_classes``, ``matrix_range``, ``rule_table``, ``crafted_table``,
``embedding_table``, ``embedding_transfer_table`` (every model measured in every triplet
embedding: the study evaluator ``embedding-transfer``): polars frames; ``distance_heatmap``, ``class_eps_chart``,
``class_rule_chart``, ``embedding_heatmap``, ``distance_histogram``, ``adversary_chart``: altair
charts with their data inline, as ``analysis.charts``; ``crafted_grid`` (``crafted_grids``: one
per eps): PNG bytes (PIL), as ``analysis.images``.
"""

from __future__ import annotations

import io

import altair as alt
import numpy as np
import polars as pl
from PIL import Image, ImageDraw

from analysis.frontier import EVAL_POINT
from analysis.images import BACKGROUND, FONT_SIZE, PAD, SCALE, WRONG, load_font, to_rgb
from analysis.load import eager
from study.names import DISTANCE_NORMS

RULES = ("per-class", "uniform")
RULE_COLORS = ("#f58518", "#4c78a8")
KINDS = ("within", "between")
KIND_COLORS = ("#4c78a8", "#f58518")
ADV_BINS = 40  # histogram bins of the adversaries' embedding distances over [0, 2]
EMBED_MAX = 2.0  # unit-norm embeddings: no two are farther apart
GRID_HEAD_H = 46  # px above the crafted grid: its title and the column headers
GRID_LABEL_W = 64  # px of the row headers on the left
GRID_TEXT_H = 18  # px under each image: the prediction and its confidence
OTHER = (30, 90, 200)  # the text colour of a prediction that is neither x0's nor x1's class


def _rank(column: str, order: tuple[str, ...] | list) -> pl.Expr:
    return pl.col(column).replace_strict(list(order), list(range(len(order))), default=len(order), return_dtype=pl.Int64)


def _labels(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    return eager(frame).select("trial_id", "label").unique("trial_id")


def _with_labels(artifact: pl.DataFrame, frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """The artifact's rows of ``frame``'s trials, with their ``label``."""
    return artifact.join(_labels(frame), on="trial_id")


def first_trial(frame: pl.DataFrame | pl.LazyFrame) -> tuple[str, str]:
    """(trial_id, label) of the first trial by label (then trial_id) of ``frame``'s rows."""
    trials = eager(frame).select("label", "trial_id").unique().sort("label", "trial_id")
    if trials.is_empty():
        raise ValueError("no trials")
    label, trial_id = trials.row(0)
    return trial_id, label


def artifact_trial(artifact: pl.DataFrame, frame: pl.DataFrame | pl.LazyFrame) -> tuple[str, str]:
    """(trial_id, label) of the first trial by label among the artifact's trials that ``frame``
    has rows of: the one trial the input-space views and the crafted grids show."""
    art = _with_labels(artifact, frame)
    if art.is_empty():
        raise ValueError("no artifact rows of the result rows' trials")
    return first_trial(art)


def _one_trial(artifact: pl.DataFrame, frame: pl.DataFrame | pl.LazyFrame, trial_id: str | None) -> pl.DataFrame:
    trial_id = trial_id or artifact_trial(artifact, frame)[0]
    one = _with_labels(artifact, frame).filter(pl.col("trial_id") == trial_id)
    if one.is_empty():
        raise ValueError(f"no artifact rows of trial {trial_id}")
    return one


def sample(artifact: pl.DataFrame, frame: pl.DataFrame | pl.LazyFrame, trial_id: str | None = None) -> pl.DataFrame:
    """A ``class_distances`` or ``class_eps`` artifact's rows of one trial (default: the first
    by label of those ``frame`` has rows of) at its largest ``per_class``, with ``label``."""
    one = _one_trial(artifact, frame, trial_id)
    return one.filter(pl.col("per_class") == pl.col("per_class").max())


# -- distances between classes ------------------------------------------------------------


def distance_rows(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """The distances evaluator's rows; raises ValueError without any."""
    df = eager(frame).filter(pl.col("evaluator") == "distances", pl.col("within_mean").is_not_null())
    if df.is_empty():
        raise ValueError("no distances rows (evaluator = distances)")
    return df


def distance_table(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """The first trial's (by label) distances rows: per_class, norm, quantile, fraction,
    within_mean, between_mean, within_smaller_rate, nearest_other_mean, eps (the mean over
    classes of eps_c = fraction x the quantile of class c's nearest-other-class distances),
    eps_min, eps_max; by per_class, norm (l0, l1, l2, linf) and quantile."""
    rows = distance_rows(frame)
    trial_id, _ = first_trial(rows)
    return rows.filter(pl.col("trial_id") == trial_id).sort(pl.col("per_class"), _rank("norm", DISTANCE_NORMS), pl.col("eps_quantile")).select(
        "per_class", "norm", quantile="eps_quantile", fraction="eps_fraction", within_mean="within_mean", between_mean="between_mean",
        within_smaller_rate="within_smaller_rate", nearest_other_mean="nearest_other_mean", eps="eps", eps_min="eps_min", eps_max="eps_max",
    )


def closer_classes(cells: pl.DataFrame) -> pl.DataFrame:
    """Per norm of a ``class_distances`` sample (``sample``), the classes whose within-class mean
    distance is not below their mean distance to every other class (the complement of
    ``within_smaller_rate``): norm, class, within, nearest_other (the class c' != c with the
    smallest mean distance from c; ties: the lower class), distance (that mean)."""
    within = cells.filter(pl.col("class_a") == pl.col("class_b")).select("norm", pl.col("class_a").alias("class"), within="mean")
    nearest = (
        cells.filter(pl.col("class_a") != pl.col("class_b"))
        .sort("mean", "class_b")
        .group_by("norm", "class_a", maintain_order=True)
        .first()
        .select("norm", pl.col("class_a").alias("class"), nearest_other="class_b", distance="mean")
    )
    closer = within.join(nearest, on=["norm", "class"]).filter(pl.col("within") >= pl.col("distance"))
    return closer.sort(_rank("norm", DISTANCE_NORMS), pl.col("class")).select("norm", "class", "within", "nearest_other", "distance")


def matrix_range(cells: pl.DataFrame, norm: str = "linf") -> pl.DataFrame:
    """The smallest and largest entry of the ``norm`` class x class matrix of a
    ``class_distances`` sample, with the cells they sit in: norm, min, min_cell, max, max_cell
    (a cell as ``class_a-class_b``; the first such cell by class). One row; empty when the
    sample lacks ``norm``."""
    m = cells.filter(pl.col("norm") == norm).sort("class_a", "class_b")
    if m.is_empty():
        return pl.DataFrame(schema={"norm": pl.String, "min": pl.Float64, "min_cell": pl.String, "max": pl.Float64, "max_cell": pl.String})
    cell = pl.format("{}-{}", "class_a", "class_b")
    low = m.filter(pl.col("mean") == pl.col("mean").min()).select(cell).item(0, 0)
    high = m.filter(pl.col("mean") == pl.col("mean").max()).select(cell).item(0, 0)
    return pl.DataFrame({"norm": [norm], "min": [m.get_column("mean").min()], "min_cell": [low], "max": [m.get_column("mean").max()], "max_cell": [high]})


def _heatmap(cells: pl.DataFrame, title: str) -> alt.LayerChart:
    """Cells class_a (rows) x class_b (columns) coloured and labelled with ``mean``, the
    diagonal outlined; ``cells`` may carry ``label`` for a facet."""
    data = cells.select(*(c for c in ("label",) if c in cells.columns), "class_a", "class_b", "mean", same=pl.col("class_a") == pl.col("class_b"))
    low, high = data.get_column("mean").min(), data.get_column("mean").max()
    classes = sorted(set(data.get_column("class_a").to_list()) | set(data.get_column("class_b").to_list()))
    side = max(24, min(40, 420 // max(len(classes), 1)))
    base = alt.Chart().encode(
        x=alt.X("class_b:O", title="class", sort=classes, axis=alt.Axis(labelAngle=0)),
        y=alt.Y("class_a:O", title="class", sort=classes),
    )
    rect = base.mark_rect(stroke="white", strokeWidth=1).encode(
        color=alt.Color("mean:Q", title=title, scale=alt.Scale(scheme="blues")),
        tooltip=[alt.Tooltip("class_a:O", title="class"), alt.Tooltip("class_b:O", title="other class"), alt.Tooltip("mean:Q", title="mean distance", format=".4g")],
    )
    diagonal = base.transform_filter("datum.same").mark_rect(filled=False, stroke="#222", strokeWidth=1.5)
    text = base.mark_text(fontSize=9 if side < 34 else 10).encode(
        text=alt.Text("mean:Q", format=".3g"),
        color=alt.condition(f"datum.mean > {(low + high) / 2!r}", alt.value("white"), alt.value("black")),
    )
    return alt.layer(rect, diagonal, text, data=alt.Data(values=data.to_dicts())).properties(width=alt.Step(side), height=alt.Step(side))


def distance_heatmap(cells: pl.DataFrame, norm: str) -> alt.LayerChart:
    """The ``norm`` class x class mean distance matrix of a ``class_distances`` sample
    (``sample``): rows and columns the classes, the value written in each cell, the diagonal (the
    within-class mean over pairs of distinct images) outlined."""
    m = cells.filter(pl.col("norm") == norm)
    if m.is_empty():
        raise ValueError(f"no class_distances cells for norm {norm!r}")
    r = m.row(0, named=True)
    return _heatmap(m, f"mean {norm}").properties(title=f"{norm}: {r['per_class']} {r['split']} images per class")


def embedding_heatmap(artifact: pl.DataFrame, frame: pl.DataFrame | pl.LazyFrame) -> alt.FacetChart:
    """The ``embedding_class_distances`` artifact: per trial (panel, by label) the class x class
    mean L2 distance in the embedding, as ``distance_heatmap``."""
    cells = _with_labels(artifact, frame)
    if cells.is_empty():
        raise ValueError("no embedding_class_distances rows of the result rows' trials")
    labels = sorted(cells.get_column("label").unique().to_list())
    return _heatmap(cells, "mean embedding L2").facet(facet=alt.Facet("label:N", title=None, sort=labels, header=alt.Header(labelFontSize=12)), columns=2)


# -- per-class eps ------------------------------------------------------------------------


def class_eps_chart(artifact: pl.DataFrame, frame: pl.DataFrame | pl.LazyFrame, trial_id: str | None = None) -> alt.FacetChart:
    """The ``class_eps`` artifact's sample (``sample``): eps_c by class, a bar per quantile
    (colour, side by side), a row of panels per norm with its own y axis."""
    data = sample(artifact, frame, trial_id).with_columns(q=pl.format("q = {}", pl.col("quantile").round(6)))
    data = data.sort(_rank("norm", DISTANCE_NORMS), "quantile", "class")
    qs = data.get_column("q").unique(maintain_order=True).to_list()
    norms = data.get_column("norm").unique(maintain_order=True).to_list()
    bars = alt.Chart().mark_bar().encode(
        x=alt.X("class:O", title="class", axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("q:N", sort=qs),
        y=alt.Y("eps:Q", title="eps_c"),
        color=alt.Color("q:N", title="quantile", sort=qs),
        tooltip=[
            alt.Tooltip("norm:N"), alt.Tooltip("class:O"), alt.Tooltip("quantile:Q"), alt.Tooltip("fraction:Q"),
            alt.Tooltip("quantile_dist:Q", title="quantile of nearest-other distances", format=".4g"), alt.Tooltip("eps:Q", title="eps_c", format=".4g"),
        ],
    ).properties(width=alt.Step(max(6, 24 // max(len(qs), 1))), height=130)
    columns = ["norm", "class", "q", "quantile", "fraction", "quantile_dist", "eps"]
    return bars.facet(
        data=alt.Data(values=data.select(columns).to_dicts()), row=alt.Row("norm:N", title="norm", sort=norms)
    ).resolve_scale(y="independent")


def rule_table(frame: pl.DataFrame | pl.LazyFrame, attack: str = "worst") -> pl.DataFrame:
    """Robustness at a per-class eps against a uniform eps with the same mean: per trial, norm,
    quantile and fraction (``attack``'s rows with ``eps_rule``, the two rules' rows paired on
    every other evaluation column): label, norm, quantile, fraction, eps (the mean eps),
    robust_acc_per_class, robust_acc_uniform, gain (per-class - uniform); by label, norm,
    quantile. Raises ValueError without such rows."""
    df = eager(frame).filter(pl.col("evaluator") == "robustness", pl.col("eps_rule").is_not_null(), pl.col("attack") == attack)
    if df.is_empty():
        raise ValueError(f"no robustness rows with eps_rule for attack {attack!r}")
    key = ["trial_id", *(c for c in EVAL_POINT if c not in ("eps", "eps_rule") and c in df.columns)]
    per = df.filter(pl.col("eps_rule") == "per-class").select(*key, "label", "eps", robust_acc_per_class="robust_acc")
    uniform = df.filter(pl.col("eps_rule") == "uniform").select(*key, robust_acc_uniform="robust_acc")
    pairs = per.join(uniform, on=key, how="left", nulls_equal=True)
    return pairs.sort(pl.col("label"), _rank("norm", DISTANCE_NORMS), pl.col("eps_quantile")).select(
        "label", "norm", quantile="eps_quantile", fraction="eps_fraction", eps="eps", robust_acc_per_class="robust_acc_per_class",
        robust_acc_uniform="robust_acc_uniform", gain=pl.col("robust_acc_per_class") - pl.col("robust_acc_uniform"),
    )


def class_rule_data(artifact: pl.DataFrame, frame: pl.DataFrame | pl.LazyFrame, attack: str = "worst") -> pl.DataFrame:
    """The data of ``class_rule_chart``, from the ``class_eps_robustness`` artifact's ``attack``
    rows: label, setting (``<norm> q=<quantile>``), norm, quantile, class, n, rule
    (``per-class``, ``uniform``), eps (the class's eps, or the uniform one), accuracy."""
    art = _with_labels(artifact, frame).filter(pl.col("attack") == attack)
    if art.is_empty():
        raise ValueError(f"no class_eps_robustness rows for attack {attack!r} of the result rows' trials")
    art = art.with_columns(setting=pl.format("{} q={}", "norm", pl.col("quantile").round(6))).sort("label", _rank("norm", DISTANCE_NORMS), "quantile", "class")
    keep = ("label", "setting", "norm", "quantile", "class", "n")
    return pl.concat([
        art.select(*keep, rule=pl.lit(RULES[0]), eps="eps", accuracy="acc_per_class"),
        art.select(*keep, rule=pl.lit(RULES[1]), eps="eps_uniform", accuracy="acc_uniform"),
    ])


def class_rule_chart(artifact: pl.DataFrame, frame: pl.DataFrame | pl.LazyFrame, attack: str = "worst") -> alt.FacetChart:
    """Robust accuracy (``attack``) per class at the class's own eps (per-class) and at the
    uniform eps with the same mean, side by side; a row of panels per model (label), a column
    per norm and quantile."""
    data = class_rule_data(artifact, frame, attack)
    settings = data.get_column("setting").unique(maintain_order=True).to_list()
    bars = alt.Chart().mark_bar().encode(
        x=alt.X("class:O", title="class", axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("rule:N", sort=list(RULES)),
        y=alt.Y("accuracy:Q", title=f"robust accuracy ({attack})", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("rule:N", title="eps", sort=list(RULES), scale=alt.Scale(domain=list(RULES), range=list(RULE_COLORS))),
        tooltip=[
            alt.Tooltip("label:N", title="model"), alt.Tooltip("setting:N"), alt.Tooltip("class:O"), alt.Tooltip("rule:N", title="eps"),
            alt.Tooltip("eps:Q", format=".4g"), alt.Tooltip("n:Q", title="points"), alt.Tooltip("accuracy:Q", format=".3f"),
        ],
    ).properties(width=alt.Step(8), height=140)
    return bars.facet(
        data=alt.Data(values=data.to_dicts()),
        row=alt.Row("label:N", title=None, sort=sorted(data.get_column("label").unique().to_list()), header=alt.Header(labelFontSize=12)),
        column=alt.Column("setting:N", title=None, sort=settings),
    )


# -- crafted images -----------------------------------------------------------------------


def crafted_table(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """The crafted evaluator's rows: label, eps, n_eval, robust_acc (the fraction of crafted
    images x0 + eps sign(x1) classified as x0's class), target_rate (as x1's class),
    adv_confidence_mean, linf_mean; by label and eps. Raises ValueError without any."""
    df = eager(frame).filter(pl.col("evaluator") == "crafted", pl.col("robust_acc").is_not_null())
    if df.is_empty():
        raise ValueError("no crafted rows (evaluator = crafted)")
    return df.sort("label", "eps").select("label", "eps", "n_eval", "robust_acc", "target_rate", "adv_confidence_mean", "linf_mean")


def grid_size(n_classes: int, height: int, width: int, scale: int = SCALE) -> tuple[int, int]:
    """(width, height) in px of a crafted grid of ``n_classes`` x ``n_classes`` height x width images."""
    cell_w, cell_h = width * scale, height * scale
    return GRID_LABEL_W + n_classes * (cell_w + PAD) + PAD, GRID_HEAD_H + n_classes * (cell_h + GRID_TEXT_H + PAD) + PAD


def crafted_grid(images: pl.DataFrame, frame: pl.DataFrame | pl.LazyFrame, eps: float, trial_id: str | None = None, scale: int = SCALE) -> bytes:
    """PNG bytes of the ``crafted_images`` artifact of one trial (default: the first by label of
    those ``frame`` has rows of) at ``eps``: row a, column b holds x0 + eps sign(x1), x0 the first
    image of class a and x1 of class b; the diagonal holds x0 itself. Upscaled ``scale`` times
    (nearest neighbour); under each image the model's prediction and its confidence, black where
    it is x0's class, red where it is x1's, blue for any other class. Titled with the trial's
    label and eps; ``grid_size`` wide, or wider where that title needs it."""
    one = _one_trial(images, frame, trial_id)
    cells = one.filter((pl.col("kind") == "x0") | ((pl.col("kind") == "crafted") & (pl.col("eps") == eps)))
    if cells.filter(pl.col("kind") == "crafted").is_empty():
        raise ValueError(f"no crafted images at eps {eps:g}")
    classes = sorted(cells.filter(pl.col("kind") == "x0").get_column("class_a").to_list())
    r0 = cells.row(0, named=True)
    h, w = r0["height"], r0["width"]
    font, small, big = load_font(), load_font(FONT_SIZE - 2), load_font(FONT_SIZE + 1)
    title = f"{r0['label']}, eps {eps:g}"
    width, height = grid_size(len(classes), h, w, scale)
    width = max(width, int(big.getlength(title)) + 2 * PAD)  # a long label widens it
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    cell_w, cell_h = w * scale, h * scale
    draw.text((PAD, 4), title, fill=(0, 0, 0), font=big, anchor="la")
    index = {c: i for i, c in enumerate(classes)}
    for c, i in index.items():
        draw.text((GRID_LABEL_W + PAD + i * (cell_w + PAD) + cell_w / 2, GRID_HEAD_H - 4), f"x1: {c}", fill=(0, 0, 0), font=font, anchor="md")
        draw.text((PAD, GRID_HEAD_H + PAD + i * (cell_h + GRID_TEXT_H + PAD) + cell_h / 2), f"x0: {c}", fill=(0, 0, 0), font=font, anchor="lm")
    for r in cells.iter_rows(named=True):
        a, b = r["class_a"], r["class_b"]
        if a not in index or b not in index:
            continue
        x0, y0 = GRID_LABEL_W + PAD + index[b] * (cell_w + PAD), GRID_HEAD_H + PAD + index[a] * (cell_h + GRID_TEXT_H + PAD)
        img = np.asarray(r["pixels"], dtype=np.float64).reshape(r["channels"], h, w)
        canvas.paste(Image.fromarray(to_rgb(img)).resize((cell_w, cell_h), Image.NEAREST), (x0, y0))
        colour = (0, 0, 0) if r["pred"] == a else WRONG if r["pred"] == b else OTHER
        draw.text((x0 + cell_w / 2, y0 + cell_h + 2), f"{r['pred']} ({r['confidence']:.2f})", fill=colour, font=small, anchor="ma")
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def crafted_grids(images: pl.DataFrame, frame: pl.DataFrame | pl.LazyFrame, trial_id: str | None = None) -> dict[float, bytes]:
    """``crafted_grid`` of one trial (default: ``artifact_trial``) at each eps it has, ascending."""
    one = _one_trial(images, frame, trial_id)
    values = sorted(one.filter(pl.col("kind") == "crafted").get_column("eps").unique().to_list())
    return {eps: crafted_grid(images, frame, eps, one.get_column("trial_id").first()) for eps in values}


# -- the embedding ------------------------------------------------------------------------


def embedding_rows(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """The embedding evaluator's rows; raises ValueError without any."""
    df = eager(frame).filter(pl.col("evaluator") == "embedding")
    if df.is_empty():
        raise ValueError("no embedding rows (evaluator = embedding)")
    return df


def _attack_name(norm: str, eps: float) -> str:
    """An input-space attack as tables and charts name it: ``linf 0.3``."""
    return f"{norm} {eps:g}"


def embedding_table(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """One row per triplet trial (label): knn_acc, within_mean, between_mean (the summary row),
    then per embed_eps e (ascending) ``e=<e> robust_acc`` (robust accuracy under embedding-space
    PGD within ||e(x') - e(x)||_2 <= e) and, per input-space PGD attack (norm, eps),
    ``e=<e> inside <norm> <eps>`` (its inside_rate: the fraction of its successful adversaries
    whose embedding stays within e; empty where the attack fooled no point)."""
    rows = embedding_rows(frame)
    table = rows.filter(pl.col("attack").is_null()).select("trial_id", "label", "knn_acc", "within_mean", "between_mean")
    order = []
    embed = rows.filter(pl.col("attack") == "embedding-pgd")
    inside = rows.filter(pl.col("attack") == "pgd")  # inside_rate null: the attack fooled no point
    attacks = inside.select("norm", "eps").unique().sort(_rank("norm", DISTANCE_NORMS), "eps").rows()
    for e in sorted(set(embed.get_column("embed_eps").to_list()) | set(inside.get_column("embed_eps").to_list())):
        order.append((f"e={e:g} robust_acc", embed.filter(pl.col("embed_eps") == e).select("trial_id", value="robust_acc")))
        for norm, eps in attacks:
            at = inside.filter(pl.col("embed_eps") == e, pl.col("norm") == norm, pl.col("eps") == eps)
            order.append((f"e={e:g} inside {_attack_name(norm, eps)}", at.select("trial_id", value="inside_rate")))
    for name, values in order:
        table = table.join(values.rename({"value": name}), on="trial_id", how="left")
    return table.sort("label", "trial_id").drop("trial_id")


def embedding_transfer_table(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """The study evaluator ``embedding-transfer``: one row per (embedding, attacked model):
    ``embedding`` (the triplet trial's label), ``model`` (the attacked trial's), its clean
    accuracy, then per embed_eps e the columns of ``embedding_table``. Raises ValueError without
    such rows."""
    rows = eager(frame).filter(pl.col("evaluator") == "embedding-transfer")
    if rows.is_empty():
        raise ValueError("no embedding-transfer rows (evaluator = embedding-transfer)")
    rows = rows.with_columns(pair=pl.concat_str("source_trial_id", "trial_id", separator="/"))
    table = rows.group_by("pair").agg(
        pl.col("source_label").first().alias("embedding"), pl.col("label").first().alias("model"), pl.col("clean_acc").first()
    )
    embed = rows.filter(pl.col("attack") == "embedding-pgd")
    inside = rows.filter(pl.col("attack") == "pgd")
    attacks = inside.select("norm", "eps").unique().sort(_rank("norm", DISTANCE_NORMS), "eps").rows()
    for e in sorted(rows.get_column("embed_eps").unique().to_list()):
        columns = [(f"e={e:g} robust_acc", embed.filter(pl.col("embed_eps") == e).select("pair", value="robust_acc"))]
        for norm, eps in attacks:
            at = inside.filter(pl.col("embed_eps") == e, pl.col("norm") == norm, pl.col("eps") == eps)
            columns.append((f"e={e:g} inside {_attack_name(norm, eps)}", at.select("pair", value="inside_rate")))
        for name, values in columns:
            table = table.join(values.rename({"value": name}), on="pair", how="left")
    return table.sort("embedding", "model", "pair").drop("pair")


def _rules(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """label, embed_eps: the radii each trial's embedding rows used."""
    rows = eager(frame).filter(pl.col("evaluator") == "embedding", pl.col("embed_eps").is_not_null())
    return rows.select("label", "embed_eps").unique().sort("label", "embed_eps")


def _rule_layer(x_title: str) -> alt.Chart:
    return alt.Chart().transform_filter("datum.role == 'rule'").mark_rule(color="#222", strokeDash=[4, 3]).encode(
        x=alt.X("embed_eps:Q", title=x_title), tooltip=[alt.Tooltip("embed_eps:Q", title="embed_eps")]
    )


def distance_histogram(artifact: pl.DataFrame, frame: pl.DataFrame | pl.LazyFrame) -> alt.FacetChart:
    """The ``embedding_distances`` histograms: per triplet trial (panel, by label) the fraction
    of within-class and of between-class pairs per bin of embedding L2 distance (overlaid), with
    dashed rules at the trial's embed_eps values."""
    hist = _with_labels(artifact, frame)
    if hist.is_empty():
        raise ValueError("no embedding_distances rows of the result rows' trials")
    hist = hist.with_columns(fraction=pl.col("count") / pl.col("count").sum().over("trial_id", "kind"), role=pl.lit("bin"))
    bins = hist.select("label", "kind", "bin_lo", "bin_hi", "count", "fraction", "role")
    data = pl.concat([bins, _rules(frame).filter(pl.col("label").is_in(bins.get_column("label").unique().to_list())).with_columns(role=pl.lit("rule"))], how="diagonal")
    x_title = "embedding L2 distance"
    bars = alt.Chart().transform_filter("datum.role == 'bin'").mark_bar(opacity=0.55, binSpacing=0).encode(
        x=alt.X("bin_lo:Q", title=x_title, scale=alt.Scale(domain=[0, EMBED_MAX])),
        x2="bin_hi:Q",
        y=alt.Y("fraction:Q", title="fraction of pairs", stack=None),
        y2=alt.datum(0),
        color=alt.Color("kind:N", title="pairs", sort=list(KINDS), scale=alt.Scale(domain=list(KINDS), range=list(KIND_COLORS))),
        tooltip=[alt.Tooltip("kind:N"), alt.Tooltip("bin_lo:Q", format=".3f"), alt.Tooltip("bin_hi:Q", format=".3f"), alt.Tooltip("count:Q"), alt.Tooltip("fraction:Q", format=".3f")],
    )
    layered = alt.layer(bars, _rule_layer(x_title)).properties(width=320, height=150)
    return layered.facet(
        data=alt.Data(values=data.to_dicts()),
        facet=alt.Facet("label:N", title=None, sort=sorted(bins.get_column("label").unique().to_list()), header=alt.Header(labelFontSize=12)),
        columns=2,
    )


def adversary_data(artifact: pl.DataFrame, frame: pl.DataFrame | pl.LazyFrame, bins: int = ADV_BINS) -> pl.DataFrame:
    """The data of ``adversary_chart``: per trial (label) and input-space PGD attack (``attack``:
    ``<norm> <eps>``) the successful adversaries' embedding distances ||e(x_adv) - e(x)||_2 in
    ``bins`` bins over [0, 2] (the last one closed): label, attack, bin_lo, bin_hi, count,
    fraction (of that attack's successful adversaries)."""
    adv = _with_labels(artifact, frame).filter(pl.col("attack") == "pgd", pl.col("fooled"), pl.col("embed_dist").is_not_null())
    if adv.is_empty():
        raise ValueError("no successful pgd adversaries in embedding_adversaries of the result rows' trials")
    width = EMBED_MAX / bins
    pairs = adv.select("norm", "eps").unique()
    names = pairs.with_columns(pl.Series("attack_name", [_attack_name(n, e) for n, e in pairs.iter_rows()], dtype=pl.String))
    adv = adv.join(names, on=["norm", "eps"]).sort(_rank("norm", DISTANCE_NORMS), "eps").with_columns(
        attack=pl.col("attack_name"), bin=(pl.col("embed_dist") / width).floor().cast(pl.Int64).clip(0, bins - 1)
    )
    counts = adv.group_by("label", "attack", "bin", maintain_order=True).agg(count=pl.len())
    return counts.with_columns(
        bin_lo=pl.col("bin") * width, bin_hi=(pl.col("bin") + 1) * width, fraction=pl.col("count") / pl.col("count").sum().over("label", "attack")
    ).sort("label").select("label", "attack", "bin_lo", "bin_hi", "count", "fraction")


def adversary_chart(artifact: pl.DataFrame, frame: pl.DataFrame | pl.LazyFrame, bins: int = ADV_BINS) -> alt.FacetChart:
    """How far in the embedding the input-space PGD adversaries moved their point
    (``adversary_data``): a histogram per triplet trial (row, by label) and attack (column),
    with dashed rules at the trial's embed_eps values (an adversary left of a rule stays inside
    that ball: the embedding rows' inside_rate)."""
    data = adversary_data(artifact, frame, bins).with_columns(role=pl.lit("bin"))
    attacks = data.get_column("attack").unique(maintain_order=True).to_list()
    rules = _rules(frame).join(data.select("label", "attack").unique(), on="label").with_columns(role=pl.lit("rule"))
    x_title = "embedding L2 distance of the adversary"
    bars = alt.Chart().transform_filter("datum.role == 'bin'").mark_bar(color="#e45756", binSpacing=0).encode(
        x=alt.X("bin_lo:Q", title=x_title, scale=alt.Scale(domain=[0, EMBED_MAX])),
        x2="bin_hi:Q",
        y=alt.Y("fraction:Q", title="fraction of adversaries"),
        y2=alt.datum(0),
        tooltip=[alt.Tooltip("attack:N"), alt.Tooltip("bin_lo:Q", format=".3f"), alt.Tooltip("bin_hi:Q", format=".3f"), alt.Tooltip("count:Q"), alt.Tooltip("fraction:Q", format=".3f")],
    )
    layered = alt.layer(bars, _rule_layer(x_title)).properties(width=260, height=130)
    return layered.facet(
        data=alt.Data(values=pl.concat([data, rules], how="diagonal").to_dicts()),
        row=alt.Row("label:N", title=None, sort=sorted(data.get_column("label").unique().to_list()), header=alt.Header(labelFontSize=12)),
        column=alt.Column("attack:N", title="input-space PGD", sort=attacks),
    )
