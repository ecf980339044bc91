"""Per-trial overhead of running a study through Ray Tune.

Runs N tiny trials (logistic regression on scikit-learn digits, one epoch, one FGSM eps) two
ways in the same process: (a) the trial function called directly in a loop, no Ray; (b) the
real sweep path (jobs.sweep.run: Tuner, with_parameters, reuse_actors, Parquet writes,
compaction). With C trials running at once, ideal Tune wall time is direct / C; the excess,
spread over the trials, is Tune's per-trial overhead.

    .venv/bin/python benchmarks/sweep_overhead.py [--trials 16]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import polars as pl  # noqa: E402

from study import data, planning  # noqa: E402
from study.spec import parse_spec  # noqa: E402


def make_spec(trials: int, results: str):
    return parse_spec(
        {
            "name": "overhead",
            "data": {"dataset": "digits"},
            "train": {"model": "logreg", "epochs": 1, "seed": {"grid": list(range(trials))}},
            "evaluate": [{"evaluator": "robustness", "attacks": ["fgsm"], "norms": {"linf": {"eps": [0.1]}}}],
            "resources": {"cpu": 1},
            "results": results,
        }
    )


def direct(spec, ds) -> float:
    import torch

    from jobs.sweep import absolute
    from study.trial import StudyContext, run_trial

    torch.set_num_threads(1)
    ctx = StudyContext(spec=spec, results_uri=absolute(spec.results_uri), store_uri=absolute(spec.store_uri))
    start = time.perf_counter()
    for cfg in planning.grid_configs(spec):
        run_trial(cfg, ds, ctx, report=lambda metrics: None)
    return time.perf_counter() - start


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=16)
    args = p.parse_args()

    import ray

    from jobs.sweep import run

    with tempfile.TemporaryDirectory() as tmp:
        ds = data.load(make_spec(args.trials, tmp).data)
        t_direct = direct(make_spec(args.trials, f"{tmp}/direct"), ds)

        start = time.perf_counter()
        ray.init(include_dashboard=False, log_to_driver=False)
        t_init = time.perf_counter() - start
        concurrency = int(ray.cluster_resources()["CPU"])
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = run(make_spec(args.trials, f"{tmp}/tune"), ds, "benchmark")
        t_tune = time.perf_counter() - start
        ray.shutdown()
    assert code == 0, "the sweep failed"

    ideal = t_direct / concurrency
    table = pl.DataFrame(
        {
            "way": ["direct loop (no Ray), 1 at a time", f"Ray Tune sweep, {concurrency} at a time", "ray.init (once per sweep)"],
            "trials": [args.trials, args.trials, None],
            "wall_s": [round(t_direct, 2), round(t_tune, 2), round(t_init, 2)],
            "ratio_vs_ideal": [None, round(t_tune / ideal, 2), None],
        }
    )
    with pl.Config(tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True, fmt_str_lengths=50):
        print(table)
    per_trial = (t_tune - ideal) * concurrency / args.trials
    print(f"per-trial overhead of the Tune path: {per_trial:.2f} s of a worker's time "
          f"(direct work per trial: {t_direct / args.trials:.2f} s)")


if __name__ == "__main__":
    main()
