"""Sharded evaluation on this machine: one model's evaluation in 1 shard against 2, and a study of
several models with and without shards, measured in the same run.

Four sweeps, each as a user runs it (``python -m jobs.sweep ... --fresh``: every evaluation
computed; the models come from the store: train them first, e.g. with ``make quickstart``):

  one model, unsharded     SPEC restricted to its first training config
  one model, N shards      the same with ``shards: N`` on its robustness entries
  models, unsharded        SPEC with its first model only, its other training axes as they are
                           (the quickstart's: 4 CNNs), the baseline of "no slower than today"
  models, N shards         the same with ``shards: N``

Prints each sweep's wall time (manifest.json's ``wall_s``), the trials' evaluation seconds, the
ratio of each sharded sweep to its unsharded twin, and whether their rows are equal.

    .venv/bin/python benchmarks/shards.py [--spec search_spaces/quickstart.yaml] [--shards 2] [--n-eval 500]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl
import yaml

ROOT = Path(__file__).resolve().parents[1]
COUNTS = ["robust_acc", "success_rate", "broken", "clean_acc", "queries_mean"]
SIZES = ["l2_mean", "linf_mean", "adv_confidence_mean"]


def sweep(spec: dict, folder: Path, results: Path) -> dict:
    path = folder / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    subprocess.run([sys.executable, "-m", "jobs.sweep", str(path), "--results", str(results), "--fresh", "--overwrite"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    manifest = json.loads((results / "manifest.json").read_text())
    rows = pl.read_parquet(results / "results.parquet")
    return {"wall_s": manifest["wall_s"], "eval_s": sum(t.get("eval_s") or 0 for t in manifest["trials"]), "trials": len(manifest["trials"]), "rows": rows}


def same_rows(a: pl.DataFrame, b: pl.DataFrame) -> bool:
    """Counts and accuracies exactly; sizes to float rounding (a shard's batches hold other points)."""
    a, b = a.sort("row_key"), b.sort("row_key")
    if a["row_key"].to_list() != b["row_key"].to_list() or not a.select(COUNTS).equals(b.select(COUNTS)):
        return False
    return all(((a[c] - b[c]).abs() <= 1e-5 * b[c].abs() + 1e-7).all() for c in SIZES if a[c].null_count() < a.height)


def with_shards(spec: dict, shards: int | None) -> dict:
    out = copy.deepcopy(spec)
    for entry in out["evaluate"]:
        if entry["evaluator"] == "robustness" and shards is not None:
            entry["shards"] = shards
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", default="search_spaces/quickstart.yaml")
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--n-eval", type=int, default=None, help="test points (default: the spec's)")
    p.add_argument("--results", default="results/bench-shards", help="results folders' prefix: beside the spec's results, so its default store is the spec's")
    args = p.parse_args()
    spec = yaml.safe_load((ROOT / args.spec).read_text())
    if args.n_eval:
        spec["data"]["n_eval"] = args.n_eval
    first = lambda *axes: {k: (v["grid"][0] if k in axes and isinstance(v, dict) and "grid" in v else v) for k, v in spec["train"].items()}
    one, several = {**spec, "train": first(*spec["train"])}, {**spec, "train": first("model")}
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, base in (("one model", one), ("models", several)):
            for shards in (None, args.shards):
                name = f"{label}, {'unsharded' if shards is None else f'{shards} shards'}"
                runs[name] = sweep(with_shards(base, shards), Path(tmp), ROOT / f"{args.results}-{len(runs)}")
    print(f"{args.spec} (n_eval {spec['data'].get('n_eval')}), models from the store, --fresh; {os.cpu_count()} cores; wall_s from each sweep's manifest.json\n")
    print("| sweep | trials | wall_s | eval_s (trials' sum) | wall_s vs unsharded | rows equal to unsharded |")
    print("|---|---|---|---|---|---|")
    names = list(runs)
    for i, name in enumerate(names):
        r = runs[name]
        twin = runs[names[i - 1]] if i % 2 else None
        ratio = f"{twin['wall_s'] / r['wall_s']:.2f}x faster" if twin else ""
        equal = str(same_rows(r["rows"], twin["rows"])) if twin else ""
        print(f"| {name} | {r['trials']} | {r['wall_s']:.1f} | {r['eval_s']:.1f} | {ratio} | {equal} |")


if __name__ == "__main__":
    main()
