"""What the evaluation store saves: a study's rerun and its rerun with one eps more, against a
fresh evaluation of the same models, measured in the same run.

Four sweeps of SPEC, each as a user runs it (``python -m jobs.sweep``), the models coming from
the store in all four (train them first, e.g. with ``make quickstart``):

  fresh        --fresh: every evaluation computed (the baseline)
  rerun        nothing changed: every entry from the store
  one eps more the spec with EPS added to its first robustness entry's Linf grid
  its fresh    --fresh of that spec, into another folder: the rows the previous one must equal

Prints each sweep's wall time (manifest.json's ``wall_s``) with its ratio to the baseline, what
it took from the store and computed, and whether the rows match.

    .venv/bin/python benchmarks/evalstore.py [--spec search_spaces/quickstart.yaml] [--eps 0.35]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl
import yaml

ROOT = Path(__file__).resolve().parents[1]
MEASURED = ["row_key", "robust_acc", "success_rate", "broken", "clean_acc", "l2_mean", "linf_mean", "queries_mean"]


def sweep(spec: Path, results: Path, *flags: str) -> dict:
    subprocess.run([sys.executable, "-m", "jobs.sweep", str(spec), "--results", str(results), *flags], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    manifest = json.loads((results / "manifest.json").read_text())
    totals = {}
    for t in manifest["trials"]:
        for k, v in (t.get("evaluation") or {}).items():
            totals[k] = totals.get(k, 0) + (v or 0)
    return {"wall_s": manifest["wall_s"], "rows": pl.read_parquet(results / "results.parquet"), **totals}


def same_rows(a: pl.DataFrame, b: pl.DataFrame) -> bool:
    cols = [c for c in MEASURED if c in a.columns]
    return a.select(cols).sort("row_key").equals(b.select(cols).sort("row_key"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", default="search_spaces/quickstart.yaml")
    p.add_argument("--eps", type=float, default=0.35, help="the Linf radius added for the third sweep")
    p.add_argument("--results", default="results/bench-evalstore", help="results folders' prefix (-a, -b): beside results/quickstart, so the spec's default store is the quickstart's")
    args = p.parse_args()
    spec_path = ROOT / args.spec
    a, b = ROOT / f"{args.results}-a", ROOT / f"{args.results}-b"
    spec = yaml.safe_load(spec_path.read_text())
    entry = next(e for e in spec["evaluate"] if e["evaluator"] == "robustness")
    entry["norms"]["linf"]["eps"] = sorted({*entry["norms"]["linf"]["eps"], args.eps})
    with tempfile.TemporaryDirectory() as tmp:
        longer = Path(tmp) / spec_path.name
        longer.write_text(yaml.safe_dump(spec))
        runs = {}
        runs["fresh"] = sweep(spec_path, a, "--fresh", "--overwrite")
        runs["rerun"] = sweep(spec_path, a)
        runs[f"one eps more ({args.eps:g})"] = sweep(longer, a)
        runs["its fresh"] = sweep(longer, b, "--fresh", "--overwrite")
    base = runs["fresh"]["wall_s"]
    print(f"{args.spec}, models from the store; wall_s from each sweep's manifest.json; {os.cpu_count()} cores\n")
    print(f"| sweep | wall_s | vs fresh | entries from the store / computed | (point, eps) pairs attacked / from the store | whole attack runs computed / from the store |")
    print("|---|---|---|---|---|---|")
    for name, r in runs.items():
        print(f"| {name} | {r['wall_s']:.1f} | {r['wall_s'] / base:.2f}x | {r.get('units_reused', 0)} / {r.get('units_computed', 0)} "
              f"| {r.get('pairs_attacked', 0)} / {r.get('pairs_reused', 0)} | {r.get('runs_computed', 0)} / {r.get('runs_reused', 0)} |")
    names = list(runs)
    print(f"\nrerun's rows equal the fresh run's: {same_rows(runs['fresh']['rows'], runs['rerun']['rows'])}")
    print(f"one eps more: rows equal its fresh run's: {same_rows(runs[names[2]]['rows'], runs['its fresh']['rows'])} "
          f"({runs[names[2]]['rows'].height} rows)")


if __name__ == "__main__":
    main()
