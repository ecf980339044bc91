"""One offline HTML page for a study: ``advsweep report RESULTS [--out DIR]`` (or
``python -m analysis.report``).

Writes DIR/index.html (default ``report/<study>/`` under the current folder) and one PNG per
chart beside it. The page carries Vega, Vega-Lite and vega-embed inline (vl-convert's bundle),
so it opens anywhere with no network: on a cluster node, from an archive, attached to a mail.
RESULTS may be a finished sweep or one still running (trials/ only; no manifest yet).
"""

from __future__ import annotations

import argparse
import functools
import html
import json
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import altair as alt
import polars as pl
import vl_convert as vlc

from analysis import charts, epsilon, evaluation, features, frontier, gaussian, images, natural, sections, tilting, uncertainty
from analysis.load import TRAINING_AXES, ResultsError, load, read_artifact, read_manifest
from study import fsio
from study.names import DISTANCE_NORMS

ARTIFACTS = (
    "tilting-plane", "perturbation", "uncertainty", "natural", "natural_images", "class_distances", "class_eps", "class_eps_robustness",
    "crafted_images", "embedding_distances", "embedding_class_distances", "embedding_adversaries", "gaussian", "unrestricted_examples",
)
# The generative model's grids under generative/ (study.trial.prepare_generative), by report stem.
GENERATIVE = {"generative-samples": "samples.png", "generative-reconstructions": "reconstructions.png", "acgan-samples": "acgan-samples.png"}
GENERATIVE_SCALE = 2  # their 28 px digits, enlarged (nearest neighbour) to read on the page
# A study varying one training axis gets a one-row heatmap; with more values than this, none.
HEATMAP_MAX_STRIP = 8
PROVENANCE = ("advsweep_version", "git_sha", "torch_version", "ray_version", "python_version", "started_at", "finished_at", "wall_s")


@functools.cache
def _vl_version() -> str | None:
    """The Vega-Lite version altair writes specs for, as vl-convert names it (None: its latest)."""
    major_minor = ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])
    return major_minor if major_minor in vlc.get_vegalite_versions() else None


@functools.cache
def _bundle() -> str:
    """vega-embed, Vega-Lite and Vega as one script defining window.vegaEmbed (~1 MB, ~2 s)."""
    return vlc.javascript_bundle(vl_version=_vl_version()).replace("</script", "<\\/script")


def _varying(df: pl.DataFrame) -> list[str]:
    return [c for c in TRAINING_AXES if df.get_column(c).n_unique() > 1]


def read_artifacts(results: str) -> dict[str, pl.DataFrame]:
    """The per-trial artifacts the report draws (``study.artifacts``), by name; absent ones left out."""
    found = {name: read_artifact(results, name) for name in ARTIFACTS}
    return {name: frame for name, frame in found.items() if frame is not None and not frame.is_empty()}


def read_generative(results: str) -> dict[str, bytes]:
    """The generative model's PNG grids (``GENERATIVE``) the results folder has, by report stem."""
    fs, base = fsio.resolve(results)
    paths = {stem: fsio.join(base, "generative", name) for stem, name in GENERATIVE.items()}
    return {stem: fsio.read_bytes(fs, path) for stem, path in paths.items() if fsio.exists(fs, path)}


@dataclass
class FeatureSets:
    """What a features study keeps beside its rows (study.trial.prepare_features): the
    constructed sets (features/sets.json), their sample grids, and the robust source's threat
    model (norm, eps) from the sweep's spec, where D_R's robustness is measured."""

    sets: list[dict]
    grids: dict[str, bytes]
    threat: tuple[str, float] | None


def read_feature_sets(results: str) -> FeatureSets | None:
    fs, base = fsio.resolve(results)
    path = fsio.join(base, "features", "sets.json")
    if not fsio.exists(fs, path):
        return None
    sets = json.loads(fsio.read_bytes(fs, path))
    grids = {s["key"]: fsio.read_bytes(fs, fsio.join(base, "features", f"{s['key']}.png")) for s in sets}
    spec_path, threat = fsio.join(base, "spec.json"), None
    if fsio.exists(fs, spec_path):
        adv = json.loads(fsio.read_bytes(fs, spec_path)).get("features", {}).get("robust", {}).get("adversarial")
        threat = (adv["norm"], adv["eps"]) if adv else None
    return FeatureSets(sets, grids, threat)


def _of_trials(artifact: pl.DataFrame | None, df: pl.DataFrame) -> pl.DataFrame | None:
    """An artifact when it has rows of ``df``'s trials (it may hold other studies' too), else None."""
    if artifact is None or not artifact.get_column("trial_id").is_in(df.get_column("trial_id").unique().to_list()).any():
        return None
    return artifact


def _robustness(df: pl.DataFrame) -> pl.DataFrame:
    """The robustness rows of plain eps grids; those at a per-class eps and its uniform twin
    (``eps_rule``) have their own sections (``_epsilon_tables``, ``_epsilon_charts``)."""
    return df.filter(pl.col("evaluator") == "robustness", pl.col("eps_rule").is_null())


def _robustness_charts(df: pl.DataFrame) -> list[tuple[str, str, str, alt.TopLevelMixin]]:
    varying = _varying(df)
    color = "adversarial" if "adversarial" in varying else (varying or ["label"])[0]
    # Rows: adversarial training when the study varies it; columns: the next axis it varies.
    y = "adversarial" if "adversarial" in varying else "weight_decay"
    x = next((a for a in varying if a != y), "model")
    attacked = df.filter(pl.col("eps") > 0, pl.col("robust_acc").is_not_null())
    norms = sorted(attacked.get_column("norm").unique().to_list())  # as the curves order their rows
    attacks = attacked.get_column("attack").unique(maintain_order=True).to_list()
    attack = "worst" if "worst" in attacks or not attacks else attacks[0]
    out = [("curves", "Robustness curves", "Robust accuracy against eps, one line per model; rows: norm, columns: attack (worst = a point counts only if it survives every attack).", charts.robustness_curves(df))]
    for norm in norms:
        out.append((
            f"frontier-{norm}", f"Frontier, {norm}",
            f"Clean vs robust accuracy ({attack}) of every model per {norm} eps, coloured by {color}. "
            "Opaque points are on the Pareto frontier (no other model is at least as good in both and better in one); the line bounds the region they dominate.",
            charts.frontier(df, attack=attack, norm=norm, color=color),
        ))
        if len(varying) < 2 and df.get_column(x).n_unique() > HEATMAP_MAX_STRIP:
            continue  # one row of many cells, wider than any page: the curves and frontier show it
        out.append((
            f"heatmap-{norm}", f"Heatmap, {norm}",
            f"Robust accuracy ({attack}) over {x} and {y} per {norm} eps; where other axes vary, the best model of the cell (tooltip).",
            charts.heatmap(df, x=x, y=y, attack=attack, norm=norm),
        ))
    out.append(("perturbations", "Perturbation sizes", "Mean size of the successful perturbations of each attack, in the attack's norm, over every model and eps > 0.", charts.perturbation_sizes(df)))
    return out


def _has_tilting_curve(df: pl.DataFrame) -> bool:
    geo = df.filter(pl.col("evaluator") == "geometry", pl.col("theta_deg").is_not_null(), pl.col("l2") > 0)
    return geo.get_column("l2").n_unique() > 1


def build_charts(
    df: pl.DataFrame, found: dict[str, pl.DataFrame] | None = None, generative: dict[str, bytes] | None = None, sets: FeatureSets | None = None
) -> list[tuple[str, str, str, alt.TopLevelMixin | bytes]]:
    """(file stem, title, what it shows, chart) for every chart of the report: an altair chart,
    or PNG bytes for an image (the perturbation grid, the natural strip, the generator's grids).
    Each evaluator's section (study.registry: its record's ``report``) contributes its charts when
    its rows are there, in registry order; then the generator's grids and the constructed training
    sets. ``found``: the artifacts (``read_artifacts``); ``generative``: the generator's PNG grids
    (``read_generative``); ``sets``: a features study's constructed sets (``read_feature_sets``)."""
    inputs = sections.ReportInputs(df, found or {}, generative or {}, sets)
    charts_ = [item for item in sections.items(inputs) if len(item) == 4]
    return charts_ + _generative_images(generative or {}) + _training_set_charts(df, sets)


def _generative_images(grids: dict[str, bytes]) -> list[tuple[str, str, str, bytes]]:
    what = {
        "generative-samples": ("The generator's samples", "Samples G(z), z ~ N(0, I), of the study's generative model (the WGAN-GP generator the natural adversaries and the reconstruction defense use)."),
        "generative-reconstructions": (
            "The generator's reconstructions",
            "Test images, rows of 8, each row above its reconstruction G(I(x)) through the inverter I and the generator G: how much of a point the search's start and the defense keep.",
        ),
        "acgan-samples": ("The AC-GAN's samples", "Samples G(z, y) of the study's class-conditional AC-GAN, one row per class y (the unrestricted search starts from such samples)."),
    }
    return [(stem, *what[stem], images.upscale(grids[stem], GENERATIVE_SCALE)) for stem in GENERATIVE if stem in grids]


def _uncertainty(df: pl.DataFrame) -> pl.DataFrame:
    return df.filter(pl.col("evaluator") == "uncertainty", pl.col("mc_samples").is_not_null())


def _uncertainty_charts(df: pl.DataFrame, points: pl.DataFrame | None) -> list[tuple[str, str, str, alt.TopLevelMixin]]:
    rows = _uncertainty(df)
    out = []
    if not rows.filter(pl.col("auroc_mi").is_not_null() | pl.col("auroc_smv").is_not_null()).is_empty():
        out.append((
            "uncertainty-auroc", "Detecting adversarial inputs by uncertainty",
            "MC-dropout models (uncertainty evaluator): the AUROC with which mutual information (top) and softmax variance (bottom) tell each adversarial "
            "input set from the clean versions of the same points, against T, the MC samples per input (log axis); band: AUROC +/- 1.96 SE (DeLong); "
            "dashed: chance (0.5).",
            uncertainty.auroc_curve(rows),
        ))
    if _of_trials(points, rows) is not None:
        out.append((
            "uncertainty-distributions", "MI and SMV distributions",
            "MI (top) and SMV (bottom) of every point at the largest T, per input set (baseline: the separate clean set the relative measures divide by), "
            "one panel per model: boxes from the first to the third quartile, white tick the median, whiskers min to max, black dot the mean (the table's "
            "mean MI / SMV). Square-root y axes: most clean points score near 0.",
            uncertainty.distributions(points, rows),
        ))
    return out


def _short(v: float | None) -> str | None:
    """3 decimals, or 3 significant digits below 0.1 (MI and SMV of clean inputs are small)."""
    if v is None:
        return None
    return f"{v:.3f}" if abs(v) >= 0.1 or v == 0 else f"{v:.3g}"


def _uncertainty_tables(df: pl.DataFrame) -> list[tuple[str, str, pl.DataFrame]]:
    seed = uncertainty.seed_table(df, wide=True)
    sets = seed.columns[3:]
    # Accuracies and ratios to 3 decimals; the means, often far below 0.1, to 3 significant digits.
    mean = seed.get_column("measure").is_in(["mean MI", "mean SMV"]).to_list()

    def cells(column: str) -> pl.Series:
        values = [_short(v) if m else None if v is None else f"{v:.3f}" for v, m in zip(seed.get_column(column), mean)]
        return pl.Series(column, values, dtype=pl.String)

    seed = seed.with_columns(cells(c) for c in sets).rename({"mc_samples": "T"})
    out = [(
        "Uncertainty per input set",
        "MC-dropout models (uncertainty evaluator) at the largest T: accuracy of the T-sample predictive on each input set (clean, then the adversarial sets, "
        "crafted against the EOT predictive), mean mutual information (nats) and mean softmax variance, and both relative to their mean on the separate clean "
        "baseline set (relative 1: as uncertain as clean inputs).",
        seed,
    )]
    try:
        auroc = uncertainty.auroc_table(df)
    except ValueError:  # only clean inputs: nothing to detect
        return out
    out.append((
        "Detecting adversarial inputs (AUROC)",
        "Per model and adversarial input set at the largest T (column T): the AUROC of MI and of SMV separating the set from the clean points, with DeLong standard "
        f"errors; stable_T (stable_T_smv): the smallest T from which every larger T's AUROC of MI (SMV) is within {uncertainty.STABLE_TOL} of its value "
        "at the largest T; mi_last_change: |AUROC of MI at the largest T - at the one before|.",
        auroc.rename({"mc_samples": "T"}).with_columns(pl.Series("mi_last_change", [_short(v) for v in auroc.get_column("mi_last_change")], dtype=pl.String)),
    ))
    return out


def _table(df: pl.DataFrame) -> str:
    def cell(v) -> str:
        return "" if v is None else f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in df.iter_rows())
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _settings(df: pl.DataFrame) -> list[str]:
    """The evaluation settings that tell apart two curves of one model, norm and attack (e.g. PGD
    run with 20 and with 100 steps); usually none, and the tables stay narrow."""
    per_curve = df.group_by("trial_id", "norm", "attack").agg(pl.col(c).n_unique() for c in frontier.CURVE if c not in ("norm", "attack"))
    return [c for c in per_curve.columns[3:] if per_curve.get_column(c).max() > 1]


def _by_lambda(table: pl.DataFrame, df: pl.DataFrame) -> pl.DataFrame:
    """``table`` (one row per label) in label order, or by lambda when the study varies `l2`
    (labels like `l2=1e-06` and `l2=0.0001` sort wrongly as text)."""
    lambdas = df.group_by("label").agg(pl.col("l2").first().alias("_lambda"))
    if lambdas.get_column("_lambda").drop_nulls().n_unique() < 2:
        return table.sort("label")
    return table.join(lambdas, on="label", how="left").sort(["_lambda", "label"], nulls_last=True).drop("_lambda")


def _robustness_tables(df: pl.DataFrame) -> list[tuple[str, str, pl.DataFrame]]:
    settings = _settings(df.filter(pl.col("robust_acc").is_not_null()))
    best = frontier.best_per_point(df).select("norm", "attack", *settings, "eps", "robust_acc", "clean_acc", pl.col("label").alias("best model"))
    curve = pl.concat_str(["norm", pl.lit(" "), "attack", *(pl.format(f" {c}={{}}", pl.col(c).cast(pl.String).fill_null("-")) for c in settings)])
    area = frontier.robustness_area(df).with_columns(curve=curve).pivot(on="curve", index="label", values="robust_auc", sort_columns=True).sort("label")
    out = [
        ("Best robust accuracy", "The most robust model at each norm, attack and eps > 0.", best),
        ("Area under the robustness curve", "Mean robust accuracy over [0, eps max] of each norm (trapezoid rule), per model and attack.", area),
    ]
    log = evaluation.attack_log(df)
    if not log.is_empty():
        out.append((
            "Per-attack log",
            "Points each attack broke at each norm and eps, summed over the models (models: how many); in a cascade (AutoAttack's way) the points it broke that no earlier attack had, "
            "so a late attack that breaks many is a warning. worst: every point broken.",
            log,
        ))
    signs = evaluation.evaluation_warnings(df)
    out.append((
        "Signs of a broken evaluation",
        "Checked: a black-box attack breaking points the gradient attacks left robust; a scale-invariant (DLR) loss breaking far more than cross-entropy; robust accuracy above 0 at Linf eps 1; "
        "more iterations raising robust accuracy; robust accuracy rising with eps (docs/evaluation.md).",
        pl.DataFrame({"warning": signs or ["none found"]}),
    ))
    conf = df.filter(pl.col("eps") > 0, pl.col("attack") != "worst", pl.col("adv_confidence_mean").is_not_null())
    if not conf.is_empty():
        # At the largest eps of each attack and norm: one column each keeps the table narrow.
        top = conf.filter(pl.col("eps") == pl.col("eps").max().over("attack", "norm"))
        point = pl.format("{} {} {}", "attack", "norm", pl.col("eps").round(6).cast(pl.String))
        table = (
            top.with_columns(point=point)
            .pivot(on="point", index="label", values="adv_confidence_mean", aggregate_function="mean", sort_columns=True)
            .join(top.group_by("label").agg(pl.col("clean_acc").first()), on="label")
        )
        out.append((
            "Confidence on mistakes",
            "Mean confidence (probability of the predicted class) on the successful adversarial examples, at the largest eps of each attack and norm.",
            _by_lambda(table, df),
        ))
    return out


def summary_tables(df: pl.DataFrame, found: dict[str, pl.DataFrame] | None = None, sets: FeatureSets | None = None) -> list[tuple[str, str, pl.DataFrame]]:
    """(title, what, table) for every table of the report: each evaluator's section's tables when
    its rows are there (``found``: the artifacts, for the tables built from them), then the
    constructed training sets'."""
    inputs = sections.ReportInputs(df, found or {}, {}, sets)
    return [item for item in sections.items(inputs) if len(item) == 3] + _training_set_tables(df, sets)


def robustness_section(rows: pl.DataFrame, inputs: sections.ReportInputs) -> list[tuple]:
    """The robustness evaluator's tables and charts (its per-class eps rows too)."""
    df, found = inputs.df, inputs.found
    out = []
    robustness = _robustness(df)
    if not robustness.is_empty():
        out += _robustness_tables(robustness)
        out += _robustness_charts(robustness)
    if not df.filter(pl.col("evaluator") == "robustness", pl.col("eps_rule").is_not_null(), pl.col("attack") == "worst").is_empty():
        out.append((
            "Per-class against uniform eps",
            "Robust accuracy (worst over the attacks) per model, norm and quantile q when every class is attacked at its own eps_c = fraction x the q-quantile "
            "of its training images' nearest-other-class distances (per-class), and when every point is attacked at one uniform eps, their mean over the "
            "evaluated points (eps); gain: per-class - uniform.",
            epsilon.rule_table(df),
        ))
    by_class = _of_trials(found.get("class_eps_robustness"), df)
    if by_class is not None and not by_class.filter(pl.col("attack") == "worst").is_empty():
        out.append((
            "class-eps-robustness", "Robustness per class: per-class against uniform eps",
            "Robust accuracy (worst over the attacks) of each class's evaluation points when every class is attacked at its own eps_c (per-class) and when "
            "every point is attacked at one uniform eps with the same mean; a row of panels per model, a column per norm and quantile q.",
            epsilon.class_rule_chart(by_class, df),
        ))
    return out


def geometry_section(rows: pl.DataFrame, inputs: sections.ReportInputs) -> list[tuple]:
    """Minimal perturbations, and for linear two-class models boundary tilting."""
    df, found = inputs.df, inputs.found
    out = []
    geometry = df.filter(pl.col("evaluator") == "geometry", pl.col("min_eps_median").is_not_null())
    if not geometry.is_empty():
        method = pl.format("{} {}", "attack", "norm")
        table = geometry.with_columns(method=method).pivot(on="method", index="label", values="min_eps_median", aggregate_function="first", sort_columns=True)
        if geometry.get_column("theta_deg").is_not_null().any():
            extra = geometry.group_by("label").agg(pl.col("theta_deg", "d_adv_pred").first())
            table = extra.join(table, on="label")
        out.append((
            "Minimal perturbations (geometry)",
            "Geometry evaluator: the median smallest perturbation (in the norm) that changes the prediction of a correctly classified test point, per method; "
            "for linear two-class models also theta (degrees) and Tanay's predicted d_adv.",
            _by_lambda(table, geometry),
        ))
    if _has_tilting_curve(df):
        out.append((
            "tilting-curve", "Boundary tilting against lambda",
            "Linear two-class models (geometry evaluator) against the L2 penalty lambda. Theta, the angle between w and the centroid direction c1 - c0, on the left axis "
            "of both panels; top, right axis: the median minimal L2 perturbation of the correctly classified test points (exact, closed form) and Tanay's prediction "
            "1/2 ||c1 - c0|| cos theta; bottom, right axis: the test error.",
            tilting.tilting_curve(df),
        ))
    plane = _of_trials(found.get("tilting-plane"), df)
    if plane is not None:
        out.append((
            "tilting-plane", "The tilting plane",
            "Train (faint circles) and test (triangles) points projected on the plane spanned by the centroid direction c1 - c0 (u, origin at the centroids' midpoint) "
            "and the part of w orthogonal to it (v), with the decision line f = 0, for a few lambdas; u and v share one scale, so the line's tilt is true. "
            "Untilted (theta = 0), the line is vertical.",
            tilting.plane_scatter(plane, df),
        ))
    pert = found.get("perturbation")
    if pert is not None and not pert.filter(pl.col("point") == 0).is_empty():
        by = "lambda" if _has_tilting_curve(df) else "label"
        out.append((
            "perturbation-grid", "Minimal perturbation images",
            f"The first correctly classified test point of every trial (rows, by {by}): the image x, its minimal L2 perturbation delta that keeps x + delta in [0, 1] "
            "(mid gray = 0, white / black = +/- the row's max |delta|: each row has its own scale), and the adversarial example x + delta on the decision boundary.",
            images.perturbation_grid(pert, df, point=0),
        ))
    return out


def transfer_section(rows: pl.DataFrame, inputs: sections.ReportInputs) -> list[tuple]:
    """The transfer matrix."""
    df = inputs.df
    out = []
    transfer = df.filter(pl.col("evaluator") == "transfer", pl.col("transfer_error").is_not_null())
    if not transfer.is_empty():
        out.append((
            "transfer", "Transfer matrix",
            "Error rate of the target model (column) on adversarial examples crafted on the source model (row), one panel per eps. "
            "The outlined diagonal is each model's own error under the attack; the tooltip adds agreement, the fraction of points both get wrong where they predict the same class.",
            charts.transfer_matrix(transfer),
        ))
    return out


def uncertainty_section(rows: pl.DataFrame, inputs: sections.ReportInputs) -> list[tuple]:
    """MC-dropout uncertainty per input set, and detection by it."""
    df, found = inputs.df, inputs.found
    out = []
    if not _uncertainty(df).is_empty():
        out += _uncertainty_tables(df)
    out += _uncertainty_charts(df, found.get("uncertainty"))
    return out


def natural_section(rows: pl.DataFrame, inputs: sections.ReportInputs) -> list[tuple]:
    """Natural adversaries: success by budget, latent distances, examples."""
    df, found = inputs.df, inputs.found
    out = []
    points = found.get("natural")
    nat = df.filter(pl.col("evaluator") == "natural", pl.col("latent_search").is_not_null())
    names = {"latent_search": "search", "latent_samples": "N", "latent_dr": "dr"}
    if not nat.is_empty():
        out.append((
            "Natural adversaries: success by budget",
            "Natural adversaries (latent-space search, Zhao et al. 2018): the fraction of the correctly classified points searched for which the search found "
            "an input G(z*) the model misclassifies, with at most r rounds of N samples each (at most N x r classifier queries per point); dr: the search's "
            "radius step in latent space (the iterative search's shell width, the hybrid search's resolution).",
            natural.success_table(nat, wide=True).rename(names),
        ))
        table = natural.distance_table(nat)
        dists = [pl.Series(c, [_short(v) for v in table.get_column(c)], dtype=pl.String) for c in ("latent_dist_mean", "latent_dist_median", "recon_l2_mean")]
        out.append((
            "Natural adversaries: latent distance by target model",
            "At the largest budget (budget: classifier queries per point at most): success rate; the latent distance ||z* - I(x)|| of the adversaries found (mean, median); "
            "the input-space L2 distance of the adversary G(z*) from x (l2_mean) and from x's reconstruction G(I(x)) (recon_l2_mean, the search's own change "
            "without the generator's reconstruction error); and the mean classifier queries spent per point.",
            table.with_columns(dists).rename(names),
        ))
        paired = natural.paired_distances(points, nat) if points is not None else pl.DataFrame()
        if not paired.is_empty():
            out.append((
                "Natural adversaries: paired latent distances",
                "Does the more accurate model need larger latent changes? Per search and pair of models (stronger: the higher clean accuracy), over the points both "
                "classify correctly and both searches broke (the searches draw the same random directions for every model): each model's mean latent distance "
                "there, the mean difference stronger - weaker with its 95% t-interval (diff_lo, diff_hi), and the fraction of points where the stronger model's "
                "is larger.",
                paired.rename(names),
            ))
    nat = df.filter(pl.col("evaluator") == "natural", pl.col("latent_search").is_not_null())
    if not nat.is_empty():
        out.append((
            "natural-success", "Natural adversaries: success against queries",
            "Per target model (panel): the fraction of correctly classified points for which the latent-space search found a natural adversary, against the mean "
            "classifier queries it spent per point (log axis), a point per budget (at most N x rounds queries) and a line per search. Larger budgets read the "
            "same searches stopped later, so each line only rises.",
            natural.success_curve(nat),
        ))
        points = _of_trials(found.get("natural"), nat)
        out.append((
            "natural-distance", "Natural adversaries: latent distance per model",
            "At the largest budget, how far in latent space the adversaries found lie from the point's own code I(x): the median (circle) and mean (diamond) "
            "of ||z* - I(x)||" + (", and a bar over the interquartile range of the found points" if points is not None else "") + ", per target model "
            "and search (log axis). A model whose natural adversaries lie farther away is harder to fool with natural changes.",
            natural.distance_chart(nat, points),
        ))
        strip = _of_trials(found.get("natural_images"), nat)
        if strip is not None:
            out.append((
                "natural-strip", "Natural adversaries: examples",
                "The first correctly classified test points (columns) of every model (a group of rows each): x, its reconstruction G(I(x)) where the search "
                "starts, and the natural adversary G(z*) each search found at the largest budget (gray: none found). Under each image, class -> the "
                "model's prediction (red where they differ), under an adversary its latent distance d = ||z* - I(x)||.",
                images.natural_strip(strip, nat),
            ))
    return out


def reconstruction_section(rows: pl.DataFrame, inputs: sections.ReportInputs) -> list[tuple]:
    """The reconstruction defense per input set."""
    df = inputs.df
    out = []
    if not df.filter(pl.col("evaluator") == "reconstruction", pl.col("recon_acc").is_not_null()).is_empty():
        out.append((
            "The reconstruction defense",
            "Accuracy of each model on each input set as given and, in the column after it, on its reconstruction G(I(inputs)) through the inverter and the "
            "generator (the defense: classify the projection onto the generator's range). The attacks (fgsm-<norm>-<eps>, cw, natural) were crafted against "
            "the undefended model.",
            natural.reconstruction_table(df, wide=True),
        ))
    rec = df.filter(pl.col("evaluator") == "reconstruction", pl.col("recon_acc").is_not_null())
    if not rec.is_empty():
        out.append((
            "reconstruction", "The reconstruction defense per input set",
            "Per model (panel) and input set: accuracy on the inputs as given (light) and on their projection onto the generator's range, G(I(inputs)) (dark). "
            "The attacks were crafted against the undefended model.",
            natural.reconstruction_chart(rec),
        ))
    return out


def distances_section(rows: pl.DataFrame, inputs: sections.ReportInputs) -> list[tuple]:
    """Distances between classes, and the per-class eps they suggest."""
    df, found = inputs.df, inputs.found
    out = []
    if not df.filter(pl.col("evaluator") == "distances", pl.col("within_mean").is_not_null()).is_empty():
        label = epsilon.first_trial(epsilon.distance_rows(df))[1]
        out.append((
            "Distances between classes",
            f"Distances evaluator, trial {label} (the first by label; input-space distances do not depend on the model): per norm, images sampled per class "
            "and quantile: the mean within-class and between-class pairwise distances, the fraction of classes whose within-class mean is below their mean "
            "distance to every other class, the images' mean distance to the nearest image of another class, and the eps suggestions eps_c = fraction x the "
            "quantile of class c's nearest-other-class distances (eps: their mean over classes, eps_min, eps_max).",
            epsilon.distance_table(df),
        ))
    cells = _of_trials(found.get("class_distances"), df)
    if cells is not None:
        sample = epsilon.sample(cells, df)
        r = sample.row(0, named=True)
        out.append((
            "Classes closer to another class",
            "Per norm, each class whose mean distance within the class is not below its mean distance to some other class: within, the nearest other class "
            f"and that distance (trial {r['label']}'s sample of {r['per_class']} {r['split']} images per class). An empty table: every class is nearer to itself than to any other.",
            epsilon.closer_classes(sample),
        ))
        linf = epsilon.matrix_range(sample, "linf")
        if not linf.is_empty():
            out.append((
                "The Linf distance matrix",
                "The smallest and the largest entry of the Linf class x class mean distance matrix and the cells (class_a-class_b) they sit in. The source text "
                "finds every entry about 1 on MNIST (some pixel is dark in one image and bright in the other): then Linf cannot tell the classes apart.",
                linf,
            ))
    cells = _of_trials(found.get("class_distances"), df)
    if cells is not None:
        sample = epsilon.sample(cells, df)
        label = sample.get_column("label").first()
        present = sample.get_column("norm").unique().to_list()
        for norm in [n for n in DISTANCE_NORMS if n in present]:
            out.append((
                f"distances-{norm}", f"Distances between classes, {norm}",
                f"Mean {norm} distance{' (pixels that differ)' if norm == 'l0' else ''} between the sampled images of the row's and the column's class; the "
                "outlined diagonal is the mean within the class, over pairs of distinct images. A class whose diagonal cell is not the smallest of its row sits "
                "closer to another class. "
                f"Input-space distances do not depend on the model: these are trial {label}'s (the first by label).",
                epsilon.distance_heatmap(sample, norm),
            ))
    eps = _of_trials(found.get("class_eps"), df)
    if eps is not None:
        out.append((
            "class-eps", "Per-class eps",
            "eps_c per class and norm (a row of panels each, own y axis): fraction x the q-quantile of the class's sampled images' distances to the nearest "
            f"sampled image of another class, one bar per quantile q; trial {epsilon.artifact_trial(eps, df)[1]}'s sample (the first by label; the inputs' "
            "distances do not depend on the model).",
            epsilon.class_eps_chart(eps, df),
        ))
    return out


def crafted_section(rows: pl.DataFrame, inputs: sections.ReportInputs) -> list[tuple]:
    """The crafted images x0 + eps sign(x1)."""
    df, found = inputs.df, inputs.found
    out = []
    if not df.filter(pl.col("evaluator") == "crafted", pl.col("robust_acc").is_not_null()).is_empty():
        out.append((
            "Crafted images",
            "x0 + eps sign(x1), clipped to [0, 1], for every ordered pair of test images x0, x1 of different classes (n_eval of them): robust_acc, the "
            "fraction still classified as x0's class; target_rate, as x1's class; the mean confidence of the predictions; linf_mean, the mean Linf distance "
            "from x0 (at most eps).",
            epsilon.crafted_table(df),
        ))
    crafted = _of_trials(found.get("crafted_images"), df)
    if crafted is not None:
        label = epsilon.artifact_trial(crafted, df)[1]
        for value, png in epsilon.crafted_grids(crafted, df).items():
            out.append((
                f"crafted-{value:g}", f"Crafted images, eps {value:g}",
                f"x0 + {value:g} sign(x1), clipped to [0, 1], within Linf {value:g} of x0: row a takes x0, the first test image of class a; column b takes x1, "
                f"the first of class b; the diagonal is x0 itself. Under each image, model {label}'s prediction (the first model by label) and its confidence: "
                "black where it is x0's class, red where it is x1's, blue for another class.",
                png,
            ))
    return out


def embedding_section(rows: pl.DataFrame, inputs: sections.ReportInputs) -> list[tuple]:
    """Epsilon measured in a triplet embedding."""
    df, found = inputs.df, inputs.found
    out = []
    if not df.filter(pl.col("evaluator") == "embedding", pl.col("knn_acc").is_not_null()).is_empty():
        out.append((
            "Epsilon in the embedding",
            "Triplet models: 1-nearest-neighbour accuracy in the embedding, the mean within- and between-class embedding distances; per embedding radius e, "
            "the robust accuracy under PGD constrained to ||e(x') - e(x)||_2 <= e (e=<e> robust_acc) and, per input-space PGD attack (norm, eps), the fraction "
            "of its successful adversaries whose embedding stays within e (e=<e> inside <norm> <eps>).",
            epsilon.embedding_table(df),
        ))
    classes = _of_trials(found.get("embedding_class_distances"), df)
    if classes is not None:
        out.append((
            "embedding-classes", "Distances between classes in the embedding",
            "Per triplet model (panel): the mean L2 distance between the embeddings of the sampled images of the row's and the column's class; the outlined "
            "diagonal is the mean within the class.",
            epsilon.embedding_heatmap(classes, df),
        ))
    hist = _of_trials(found.get("embedding_distances"), df)
    if hist is not None:
        out.append((
            "embedding-distances", "Within- and between-class distances in the embedding",
            "Per triplet model (panel): the distribution of the embedding L2 distances of pairs of sampled images of one class (within) and of two classes "
            "(between), each as a fraction of its pairs; dashed: the embed_eps radii of the embedding-space attacks.",
            epsilon.distance_histogram(hist, df),
        ))
    adv = found.get("embedding_adversaries")
    adv = _of_trials(adv.filter(pl.col("attack") == "pgd", pl.col("fooled")) if adv is not None else None, df)
    if adv is not None:
        out.append((
            "embedding-adversaries", "Input-space adversaries in the embedding",
            "How far the successful input-space PGD adversaries moved their point in the embedding, ||e(x_adv) - e(x)||_2, per triplet model (row) and attack "
            "(column); dashed: the embed_eps radii. The adversaries left of a rule stay inside that ball (inside_rate in the table).",
            epsilon.adversary_chart(adv, df),
        ))
    return out


def embedding_transfer_section(rows: pl.DataFrame, inputs: sections.ReportInputs) -> list[tuple]:
    """Every model measured in each triplet embedding."""
    df = inputs.df
    out = []
    if not df.filter(pl.col("evaluator") == "embedding-transfer").is_empty():
        out.append((
            "Every model in each triplet embedding",
            "Per triplet embedding and attacked model: the model's clean accuracy on the points attacked, its robust accuracy under PGD constrained to "
            "||e(x') - e(x)||_2 <= e in that embedding (e=<e> robust_acc), and, per input-space PGD attack on the model (norm, eps), the fraction of its "
            "successful adversaries whose embedding stays within e. The CNN's rows measure its adversaries with a metric it was not trained against.",
            epsilon.embedding_transfer_table(df),
        ))
    return out


def features_section(rows: pl.DataFrame, inputs: sections.ReportInputs) -> list[tuple]:
    """Transfer from the standard feature source."""
    df = inputs.df
    out = []
    if not df.filter(pl.col("evaluator") == "features").is_empty():
        out.append((
            "features-transfer", "Transfer from the standard source",
            "The share of the standard source model's adversarial examples (untargeted, on the original test split) that fool each architecture (row) trained "
            "on each set (column).",
            features.transfer_matrix_chart(df),
        ))
        try:
            out.append((
                "features-transfer-vs-sets", "Transfer against learning from D_rand and D_det",
                "Ilyas et al.'s Figure 3: per architecture, how often the source's adversarial examples fool it when trained on D (x), against its test "
                "accuracy when trained on the source's relabelled sets (y). Both measure how much of the source's non-robust features it picks up.",
                features.transfer_vs_accuracy_chart(df),
            ))
        except ValueError:  # no architecture was trained on both D and a relabelled set
            pass
    return out


def gaussian_section(rows: pl.DataFrame, inputs: sections.ReportInputs) -> list[tuple]:
    """Ilyas et al.'s Gaussian model (its artifact)."""
    found = inputs.found
    out = []
    gauss = found.get("gaussian")
    if gauss is not None:
        out.append((
            "The Gaussian model",
            "Robust maximum-likelihood estimates per eps: Theorem 2's multiplier lambda fitted to the learned covariance and the relative residual, the "
            "closed-form check of the penalised problem, the identity's weight, the anisotropy and how far the mean moved.",
            gaussian.table(gauss),
        ))
    gauss = found.get("gaussian")
    if gauss is not None:
        out.append((
            "gaussian-covariance", "The Gaussian model: robust covariance",
            "Ilyas et al.'s Gaussian model: 1-sigma ellipses of the covariance learned by robust maximum likelihood (an L2 adversary of radius eps), scaled "
            "to the true covariance's trace so only the shape shows; dashed: the true covariance. As eps grows the ellipse turns toward a circle: the "
            "learned covariance blends with the identity.",
            gaussian.covariance_chart(gauss),
        ))
        out.append((
            "gaussian-blend", "The Gaussian model: blend with the identity",
            "Against eps: the identity's weight in the learned covariance's shape, its anisotropy (largest / smallest eigenvalue), and its eigenvalues "
            "(points) against Theorem 2's closed form at the fitted multiplier lambda (lines).",
            gaussian.blend_chart(gauss),
        ))
    return out


def _training_set_tables(df: pl.DataFrame, sets: FeatureSets | None) -> list[tuple[str, str, pl.DataFrame]]:
    """The constructed training sets of a features study (a training axis, not an evaluator)."""
    out = []
    if sets is not None and sets.sets:
        out.append((
            "Constructed training sets",
            "How each set was built from its source model: for matching, the share of the representation distance removed (rep_reduction); for the "
            "relabelled sets, the share of images the source classifies as their new label (target_rate); the mean L2 distance to the image rebuilt.",
            features.sets_table(sets.sets),
        ))
    if sets is not None and sets.threat is not None and "train_set" in df.columns and df.get_column("train_set").is_not_null().any():
        norm, eps = sets.threat
        out.append((
            "Accuracy on the original test set",
            f"A fresh standard model per architecture and training set: clean and PGD ({norm} {eps:g}, the robust source's training radius) accuracy on "
            "the original test split with 95% Clopper-Pearson intervals, whether the clean accuracy is above chance, and Ilyas et al.'s CIFAR-10 figures.",
            features.accuracy_table(df, eps, norm),
        ))
        try:
            out.append((
                "Robust accuracy: D_R against D",
                f"PGD accuracy at {norm} {eps:g} of the model trained on D_R minus that of the model trained on D, with Newcombe's 95% interval for a "
                "difference of two proportions; it clears sampling error when the interval's lower end is above 0. Where the study has D_shuf, the control "
                "(D plus D_R's changes, shuffled across images: as much change, no label information), D_R minus D_shuf (over_shuf) tells what robust "
                "features buy beyond what changing the images does.",
                features.robust_margin(df, eps, norm),
            ))
        except ValueError:  # no architecture trained on both D and D_R
            pass
    return out


def _training_set_charts(df: pl.DataFrame, sets: FeatureSets | None) -> list[tuple[str, str, str, alt.TopLevelMixin | bytes]]:
    out: list[tuple[str, str, str, alt.TopLevelMixin | bytes]] = []
    if sets is not None and sets.threat is not None and "train_set" in df.columns and df.get_column("train_set").is_not_null().any():
        norm, eps = sets.threat
        out.append((
            "features-accuracy", "Models trained on each training set",
            f"Clean accuracy (left) and PGD accuracy at the robust source's training radius, {norm} {eps:g} (right), on the original test split, of a fresh "
            "standard model of each architecture trained on each set, with 95% Clopper-Pearson intervals; the dashed rule is chance.",
            features.accuracy_chart(df, eps, norm),
        ))
    for s in sets.sets if sets is not None else []:
        out.append((
            f"features-set-{s['key']}", f"Training set {s['name']}",
            f"The first image of each class in the training split (top) and what it became in {s['name']} (bottom), with the label {s['name']} gives it "
            f"({features.HOW[s['kind']]}).",
            images.upscale(sets.grids[s["key"]], GENERATIVE_SCALE),
        ))
    return out


def provenance(df: pl.DataFrame, manifest: dict | None) -> tuple[str, pl.DataFrame]:
    """What ran: from manifest.json, or from the rows themselves while the sweep runs."""
    if manifest:
        keys = [k for k in PROVENANCE if k in manifest]
        return "From manifest.json.", pl.DataFrame({"what": keys, "value": [str(manifest[k]) for k in keys]})
    cols = [c for c in PROVENANCE if c in df.columns]
    values = [", ".join(str(v) for v in df.get_column(c).unique(maintain_order=True).to_list()) for c in cols]
    return "No manifest.json: the sweep is still running or did not finish. Versions from the result rows.", pl.DataFrame({"what": cols, "value": values})


def trial_states(df: pl.DataFrame, manifest: dict | None) -> pl.DataFrame:
    if manifest and manifest.get("trials"):
        return pl.DataFrame(manifest["trials"]).select("label", "status", "from_store", "train_s", "eval_s", "rows", "error")
    return df.group_by("label", "trial_id").agg(rows=pl.len(), clean_acc=pl.col("clean_acc").first(), from_store=pl.col("from_store").first()).sort("label")


STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1300px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: .5em 0 1.5em; font-size: 13px; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 10px; text-align: left; }
th { background: #f4f4f4; }
.chart { margin: .5em 0 .25em; min-height: 100px; }
.chart.failed { color: #b00; }
img.figure { display: block; margin: .5em 0 .25em; max-width: 100%; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 12px; }
"""

# Renders every .chart from its spec; a chart that fails says so in its place.
EMBED = """
for (const el of document.querySelectorAll(".chart")) {
  const spec = JSON.parse(document.getElementById("spec-" + el.id).textContent);
  vegaEmbed(el, spec, {renderer: "svg", actions: false}).catch((err) => {
    el.classList.add("failed");
    el.textContent = "This chart failed to render: " + err;
    console.error(err);
  });
}
"""


def _json_script(id_: str, value) -> str:
    # JSON.parse reads "<\/" as "</"; escaped, a "</script>" inside a string cannot close the tag.
    text = json.dumps(value).replace("</", "<\\/")
    return f'<script type="application/json" id="{id_}">{text}</script>'


def render_html(
    study: str,
    df: pl.DataFrame,
    manifest: dict | None,
    chart_specs: list[tuple[str, str, str, dict | None]],
    found: dict[str, pl.DataFrame] | None = None,
    sets: FeatureSets | None = None,
) -> str:
    """The page; a chart whose spec is None is an image: ``<stem>.png`` beside the page."""
    trials = df.get_column("trial_id").n_unique()
    state = "finished" if manifest else "in progress (no manifest.json yet)"
    parts = [
        f"<h1>advsweep report: {html.escape(study)}</h1>",
        f"<p>{trials} trials, {df.height} rows; sweep {state}. Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. "
        "Columns: docs/results-schema.md; analysis functions: docs/analysis.md.</p>",
    ]
    for title, what, table in summary_tables(df, found, sets):
        parts += [f"<h2>{html.escape(title)}</h2><p>{html.escape(what)}</p>", _table(table)]
    for stem, title, what, spec in chart_specs:
        parts.append(f'<h2>{html.escape(title)}</h2><p>{html.escape(what)} <a href="{stem}.png">PNG</a></p>')
        if spec is None:  # an image, not a Vega-Lite chart: the PNG beside the page
            parts.append(f'<img class="figure" id="{stem}" src="{stem}.png" alt="{html.escape(title)}">')
        else:
            parts += [f'<div class="chart" id="{stem}"></div>', _json_script(f"spec-{stem}", spec)]
    note, versions = provenance(df, manifest)
    parts += ["<h2>Versions</h2>", f"<p>{html.escape(note)}</p>", _table(versions), "<h2>Trials</h2>", _table(trial_states(df, manifest))]
    if manifest and "spec" in manifest:
        parts += ["<h2>Spec</h2>", f"<pre>{html.escape(json.dumps(manifest['spec'], indent=2))}</pre>"]
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>advsweep: {html.escape(study)}</title>'
        f"<style>{STYLE}</style><script>{_bundle()}</script></head>\n<body>\n" + "\n".join(parts) + f"\n<script>{EMBED}</script>\n</body></html>\n"
    )


def write_report(results: str, out: str | Path | None = None) -> Path:
    """Write the report of the results folder ``results``; returns the path of index.html."""
    df = load(results).collect()
    manifest = read_manifest(results)
    study = df.get_column("study").drop_nulls().first() or "study"
    out_dir = Path(out) if out else Path("report") / study
    out_dir.mkdir(parents=True, exist_ok=True)
    specs = []
    found = read_artifacts(results)
    sets = read_feature_sets(results)
    for stem, title, what, chart in build_charts(df, found, read_generative(results), sets):
        if isinstance(chart, bytes):
            (out_dir / f"{stem}.png").write_bytes(chart)
            specs.append((stem, title, what, None))
            continue
        spec = chart.to_dict()
        (out_dir / f"{stem}.png").write_bytes(vlc.vegalite_to_png(spec, vl_version=_vl_version(), scale=2))
        specs.append((stem, title, what, spec))
    index = out_dir / "index.html"
    index.write_text(render_html(study, df, manifest, specs, found, sets), encoding="utf-8")
    return index


def main(argv=None, prog="python -m analysis.report") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("results", help="results folder or URI, e.g. results/quickstart")
    p.add_argument("--out", help="output folder (default: report/<study>)")
    args = p.parse_args(argv)
    try:
        index = write_report(args.results, args.out)
    except ResultsError as e:
        print(e, file=sys.stderr)
        return 2
    print(index.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
