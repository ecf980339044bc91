"""Run a study: ``python -m jobs.sweep SPEC [--results URI] [--dry-run]``.

The same command runs on a laptop (embedded Ray) and as the ``ray job submit`` entry point
(``ray.init()`` honours RAY_ADDRESS). Exit status: 0 done, 1 some trial failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone

from study import __version__, data, results
from study.data import DataError
from study.spec import SpecError, StudySpec, load_spec
from study.store import ModelStore, model_key


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m jobs.sweep", description=__doc__.splitlines()[0])
    p.add_argument("spec", help="search space YAML, e.g. search_spaces/quickstart.yaml")
    p.add_argument("--results", help="results folder or URI (overrides the spec's `results`)")
    p.add_argument("--dry-run", action="store_true", help="validate and print the plan; run nothing")
    return p.parse_args(argv)


def prepare(args) -> tuple[StudySpec, data.Dataset]:
    """Everything that can fail on bad input, before Ray starts or anything is written."""
    spec = load_spec(args.spec)
    if args.results:
        spec.results = args.results
    try:
        ds = data.load(spec.data)
    except DataError as e:
        raise SpecError(f"{args.spec}: {e}") from None
    return spec, ds


def plan(spec: StudySpec, ds: data.Dataset) -> dict:
    configs = spec.grid_configs()
    trials = spec.n_trials()
    out = {"trials": trials, "rows": trials * spec.rows_per_trial(), "rows_per_trial": spec.rows_per_trial()}
    if configs is not None:
        store = ModelStore(spec.store_uri)
        keys = {model_key(c, ds.fingerprint) for c in configs}
        out["models"] = len(keys)
        out["in_store"] = sum(store.has(k) for k in keys)
    return out


def param_space(spec: StudySpec) -> dict:
    from ray import tune

    domain = {
        "grid": tune.grid_search,
        "choice": tune.choice,
        "uniform": lambda v: tune.uniform(*v),
        "loguniform": lambda v: tune.loguniform(*v),
        "randint": lambda v: tune.randint(*v),
    }
    choices = spec.tune_choices()
    return {
        n: a.values[0] if a.kind == "value" else domain[a.kind](list(choices[n]) if n in choices else a.values)
        for n, a in spec.train.items()
    }


def provenance() -> dict:
    import ray
    import torch

    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=os.path.dirname(__file__)).stdout.strip() or None
    except OSError:
        sha = None
    return {"advsweep_version": __version__, "git_sha": sha, "torch_version": torch.__version__, "ray_version": ray.__version__}


def absolute(uri: str) -> str:
    return uri if "://" in uri else os.path.abspath(uri)


def run(spec: StudySpec, ds: data.Dataset, spec_path: str) -> int:
    import ray
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from study.trial import StudyContext, run_trial

    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    results_uri, store_uri = absolute(spec.results_uri), absolute(spec.store_uri)
    own_ray = not ray.is_initialized()
    if own_ray:
        local = not os.environ.get("RAY_ADDRESS")
        # Embedded Ray needs no dashboard; a cluster's dashboard stays where the cluster put it.
        ray.init(include_dashboard=False if local else None, log_to_driver=True)
    prov = provenance()
    context = StudyContext(spec=spec, results_uri=results_uri, store_uri=store_uri, provenance=prov)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, data=ds, study=context),
        {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu},
    )
    tuner = tune.Tuner(
        trainable,
        param_space=param_space(spec),
        tune_config=tune.TuneConfig(
            num_samples=spec.search.num_samples,
            search_alg=BasicVariantGenerator(random_state=spec.seed),
            metric=spec.search.metric,
            mode=spec.search.mode,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(name=spec.name, storage_path=results_uri + "/tune", verbose=1),
    )
    grid = tuner.fit()

    trials = []
    for r in grid:
        m = r.metrics or {}
        trials.append({
            "trial_id": m.get("advsweep_trial_id"),
            "label": m.get("label"),
            "status": "ERROR" if r.error else "TERMINATED",
            "from_store": m.get("from_store"),
            "train_s": m.get("train_s"),
            "eval_s": m.get("eval_s"),
            "rows": m.get("rows"),
            "error": str(r.error).splitlines()[0] if r.error else None,
        })
    results_path, table = results.compact(results_uri, [t["trial_id"] for t in trials if t["trial_id"]])
    manifest = {
        "study": spec.name,
        "spec_file": spec_path,
        "spec": spec.model_dump(mode="json"),
        "schema_version": results.SCHEMA_VERSION,
        **prov,
        "python_version": platform.python_version(),
        "started_at": started.isoformat(),
        "finished_at": datetime.now(timezone.utc).isoformat(),
        "wall_s": time.perf_counter() - t0,
        "rows": table.num_rows,
        "trials": trials,
    }
    manifest_path = results.write_manifest(results_uri, manifest)
    if own_ray:
        ray.shutdown()

    print_summary(table, trials, results_path, manifest_path, results_uri)
    failed = [t for t in trials if t["status"] == "ERROR"]
    for t in failed:
        print(f"trial failed: {t['label'] or t['trial_id']}: {t['error']}", file=sys.stderr)
    return 1 if failed else 0


def print_summary(table, trials, results_path, manifest_path, results_uri):
    import polars as pl

    from analysis.frontier import best_per_point

    rob = pl.from_arrow(table).filter(pl.col("evaluator") == "robustness")
    best = best_per_point(rob).select(
        "norm", "attack", "eps", pl.col("robust_acc").round(3), pl.col("clean_acc").round(3), pl.col("label").alias("best model")
    )
    with pl.Config(tbl_rows=-1, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True, fmt_str_lengths=60):
        print("\nBest robust accuracy per norm / attack / eps (worst = the point must survive every attack):")
        print(best)
    if rob.height:
        top = rob.sort("clean_acc", descending=True).row(0, named=True)
        print(f"best clean accuracy: {top['clean_acc']:.3f} ({top['label']})")
    trained = sum(1 for t in trials if t["from_store"] is False)
    stored = sum(1 for t in trials if t["from_store"])
    print(f"\nmodels: {trained} trained, {stored} from the store")
    print(f"rows: {table.num_rows} ({len(trials)} trials)")
    print(f"results: {results_path}")
    print(f"trials:  {results_uri}/trials/")
    print(f"manifest: {manifest_path}")


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        spec, ds = prepare(args)
    except SpecError as e:
        print(e, file=sys.stderr)
        return 2
    if args.dry_run:
        p = plan(spec, ds)
        models = f"{p['models']} models ({p['models'] - p['in_store']} to train, {p['in_store']} in the store)" if "models" in p else "models sampled at run time"
        print(f"{spec.name}: {p['trials']} trials, {models}; {p['rows_per_trial']} rows per trial, {p['rows']} rows")
        print(f"results -> {spec.results_uri}   store -> {spec.store_uri}")
        return 0
    return run(spec, ds, args.spec)


if __name__ == "__main__":
    sys.exit(main())
