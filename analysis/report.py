"""One offline HTML page for a study: ``python -m analysis.report RESULTS [--out DIR]``.

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
from datetime import datetime, timezone
from pathlib import Path

import altair as alt
import polars as pl
import vl_convert as vlc

from analysis import charts, frontier
from analysis.load import TRAINING_AXES, ResultsError, load, read_manifest

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


def build_charts(df: pl.DataFrame) -> list[tuple[str, str, str, alt.TopLevelMixin]]:
    """(file stem, title, what it shows, chart) for every chart of the report."""
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
        out.append((
            f"heatmap-{norm}", f"Heatmap, {norm}",
            f"Robust accuracy ({attack}) over {x} and {y} per {norm} eps; where other axes vary, the best model of the cell (tooltip).",
            charts.heatmap(df, x=x, y=y, attack=attack, norm=norm),
        ))
    out.append(("perturbations", "Perturbation sizes", "Mean size of the successful perturbations of each attack, in the attack's norm, over every model and eps > 0.", charts.perturbation_sizes(df)))
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


def summary_tables(df: pl.DataFrame) -> list[tuple[str, str, pl.DataFrame]]:
    settings = _settings(df.filter(pl.col("robust_acc").is_not_null()))
    best = frontier.best_per_point(df).select("norm", "attack", *settings, "eps", "robust_acc", "clean_acc", pl.col("label").alias("best model"))
    curve = pl.concat_str(["norm", pl.lit(" "), "attack", *(pl.format(f" {c}={{}}", pl.col(c).cast(pl.String).fill_null("-")) for c in settings)])
    area = frontier.robustness_area(df).with_columns(curve=curve).pivot(on="curve", index="label", values="robust_auc", sort_columns=True).sort("label")
    return [
        ("Best robust accuracy", "The most robust model at each norm, attack and eps > 0.", best),
        ("Area under the robustness curve", "Mean robust accuracy over [0, eps max] of each norm (trapezoid rule), per model and attack.", area),
    ]


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


def render_html(study: str, df: pl.DataFrame, manifest: dict | None, chart_specs: list[tuple[str, str, str, dict]]) -> str:
    trials = df.get_column("trial_id").n_unique()
    state = "finished" if manifest else "in progress (no manifest.json yet)"
    parts = [
        f"<h1>advsweep report: {html.escape(study)}</h1>",
        f"<p>{trials} trials, {df.height} rows; sweep {state}. Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. "
        "Columns: docs/results-schema.md; analysis functions: docs/analysis.md.</p>",
    ]
    for title, what, table in summary_tables(df):
        parts += [f"<h2>{html.escape(title)}</h2><p>{html.escape(what)}</p>", _table(table)]
    for stem, title, what, spec in chart_specs:
        parts += [
            f'<h2>{html.escape(title)}</h2><p>{html.escape(what)} <a href="{stem}.png">PNG</a></p>',
            f'<div class="chart" id="{stem}"></div>',
            _json_script(f"spec-{stem}", spec),
        ]
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
    for stem, title, what, chart in build_charts(df):
        spec = chart.to_dict()
        (out_dir / f"{stem}.png").write_bytes(vlc.vegalite_to_png(spec, vl_version=_vl_version(), scale=2))
        specs.append((stem, title, what, spec))
    index = out_dir / "index.html"
    index.write_text(render_html(study, df, manifest, specs), encoding="utf-8")
    return index


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__.splitlines()[0])
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
