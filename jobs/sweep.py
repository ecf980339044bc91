"""Run a study: ``advsweep run SPEC [--results URI] [--resume] [--overwrite] [--fresh] [--dry-run]``.

The same command, as ``python -m jobs.sweep``, is the ``ray job submit`` entry point; it runs on
a laptop (embedded Ray) and on a cluster (``ray.init()`` honours RAY_ADDRESS). Exit status: 0
done, 1 some trial failed or rows are missing, 2 bad input. ``--resume`` continues an
interrupted sweep from Tune's experiment state under ``<results>/tune/<study>``: finished trials
are not run again.

A results folder belongs to one study (its spec's ``name``): a new run of that study replaces
the folder's earlier rows (its models stay in the store), so results and a report made while it
runs show only this run's rows; another study's folder is refused unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from datetime import datetime, timezone

from study import (__version__, data, features, fsio, imports, planning,
                   preflight, results)
from study.acgan import acgan_key
from study.data import DataError
from study.generative import generative_key
from study.spec import SpecError, StudySpec, TrainConfig, load_spec
from study.evalstore import EvalStore
from study.store import ModelStore, model_key

SPEC_FILE = "spec.json"  # the resolved spec a sweep started with; --resume checks it is unchanged


def parse_args(argv, prog="python -m jobs.sweep"):
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("spec", help="search space YAML, e.g. search_spaces/quickstart.yaml")
    p.add_argument("--results", help="results folder or URI (overrides the spec's `results`)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted sweep of this spec and results folder")
    p.add_argument("--overwrite", action="store_true", help="replace the results of another study in the results folder")
    p.add_argument("--fresh", action="store_true", help="compute every evaluation again, taking nothing from the evaluation store (models still come from the store)")
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
    problem = spec.data_problem(len(ds.y_test), ds.n_classes, len(ds.y_train), ds.input_shape) or preflight.check_models(spec, ds)
    if problem:
        raise SpecError(f"{args.spec}: {problem}")
    if args.resume:
        check_resumable(spec, args.spec)
    elif not args.overwrite:
        check_folder(spec, args.spec)
    return spec, ds


# What a run writes besides Tune's state and the per-sweep builds (generative/, features/): a
# fresh run removes them first, so nothing an earlier run left is merged or reported with its rows.
RUN_OUTPUTS = ("trials", "study", "artifacts", "results.parquet", "manifest.json")


def check_folder(spec: StudySpec, spec_path: str) -> None:
    """A results folder holds one study's results: another study's is refused (not merged)."""
    fs, base = fsio.resolve(absolute(spec.results_uri))
    saved = fsio.join(base, SPEC_FILE)
    owner = json.loads(fsio.read_bytes(fs, saved)).get("name") if fsio.exists(fs, saved) else None
    if owner == spec.name:
        return
    if owner is not None or any(fsio.exists(fs, fsio.join(base, o)) for o in RUN_OUTPUTS):
        held = f"study {owner!r}" if owner else "results of an unknown study"
        raise SpecError(f"{spec_path}: the results folder {spec.results_uri} holds {held}; run with --overwrite to replace them, or choose another --results")


def clear_outputs(fs, base: str) -> None:
    for name in RUN_OUTPUTS:
        path = fsio.join(base, name)
        fsio.remove_tree(fs, path)
        fsio.remove(fs, path)


def experiment_path(spec: StudySpec) -> str:
    return fsio.join(absolute(spec.results_uri), "tune", spec.name)


def check_resumable(spec: StudySpec, spec_path: str) -> None:
    """--resume needs Tune's state of an earlier run of the same spec in the same folder."""
    from ray import tune

    path = experiment_path(spec)
    if not tune.Tuner.can_restore(path):
        raise SpecError(f"{spec_path}: --resume: no interrupted sweep to resume in {spec.results_uri} (no Tune experiment state under tune/{spec.name})")
    fs, base = fsio.resolve(absolute(spec.results_uri))
    saved = fsio.join(base, SPEC_FILE)
    if fsio.exists(fs, saved):
        before, now = json.loads(fsio.read_bytes(fs, saved)), spec.model_dump(mode="json")
        changed = _first_difference(before, now)
        if changed:
            changed = re.sub(r"^(train\.\w+)\.(kind|values).*$", r"\1", changed)  # an axis, as the YAML names it
            raise SpecError(f"{spec_path}: --resume: {changed} differs from the interrupted sweep's spec; resume with the same spec, or run without --resume")


def _first_difference(a, b, where: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            d = _first_difference(a.get(k), b.get(k), f"{where}.{k}" if where else k)
            if d:
                return d
        return None
    return None if a == b else (where or "the spec")


def plan(spec: StudySpec, ds: data.Dataset) -> dict:
    configs = planning.grid_configs(spec)
    out = {"trials": planning.n_trials(spec), "rows": planning.expected_rows(spec)}
    if configs is not None:
        store = ModelStore(spec.store_uri)
        keys = set()
        for c in configs:
            if c.get("checkpoint") is not None:
                continue
            cfg = TrainConfig.model_validate(c)
            fingerprint = features.fit_fingerprint(spec, cfg.train_set, ds.fingerprint)
            key = model_key(c, fingerprint)
            # An ensemble not stored yet is assembled from its members: they are what trains.
            members = cfg.member_configs() if cfg.members is not None and not store.has(key) else []
            keys |= {model_key(m.model_dump(mode="json"), fingerprint) for m in members} or {key}
        out["models"] = len(keys)
        out["in_store"] = sum(store.has(k) for k in keys)
        out["checkpoints"] = len({c["checkpoint"] for c in configs if c.get("checkpoint") is not None})
    if spec.needs_generative:
        out["generative_in_store"] = ModelStore(spec.store_uri).has(generative_key(spec.generative, ds.fingerprint))
    if spec.needs_acgan:
        out["acgan_in_store"] = ModelStore(spec.store_uri).has(acgan_key(spec.acgan, ds.fingerprint))
    if spec.train_sets():
        store = ModelStore(spec.store_uri)
        out["train_sets"] = {features.name(s): store.has(features.set_key(spec, s, ds.fingerprint)) for s in spec.train_sets()}
    return out


def evaluation_plan(spec: StudySpec, ds: data.Dataset, fresh: bool = False) -> list[str]:
    """Per trial of a grid: where its model comes from, and which evaluator entries the
    evaluation store holds for it (taken as they are) or not (computed; for the robustness
    evaluator, which radii its attacks have not attacked on this model before)."""
    from study import checkpoints, evalstore
    from study.evaluators import attack_store
    from study.trial import label

    configs = planning.grid_configs(spec)
    if configs is None:
        return ["evaluation: models are sampled at run time; each trial takes from the evaluation store what it holds"]
    store, evals = ModelStore(spec.store_uri), evalstore.EvalStore(spec.store_uri)
    lines = []
    for c in configs:
        cfg = TrainConfig.model_validate(c)
        fingerprint = features.fit_fingerprint(spec, cfg.train_set, ds.fingerprint)
        sha = checkpoints.digest(checkpoints.read_bytes(cfg.checkpoint)) if cfg.checkpoint is not None else None
        model = "checkpoint" if sha else ("model in the store" if store.has(model_key(c, fingerprint)) else "model to train")
        bound = evalstore.Bound(evals, evalstore.identity(spec, cfg, ds, fingerprint, sha), fresh=fresh)
        parts = []
        for i, axes in enumerate(spec.evaluate):
            if axes.scope != "trial":
                continue
            if not fresh and evals.has("units", bound.key("units", evalstore.settings(axes))):
                parts.append(f"{axes.evaluator}[{i}] from the store")
                continue
            detail = []
            shards = getattr(axes, "shards", None)
            if shards is not None:
                per = f"{shards.cpu:g} CPU" + (f" + {shards.gpu:g} GPU" if shards.gpu else "")
                detail.append(f"points in {shards.count} shards ({'the trial plus one per free ' + ('GPU' if shards.gpu else per) if shards.count == 'auto' else 'the trial takes shards too'}; {per} per shard task)")
            elif axes.evaluator == "robustness" and not fresh:
                for norm_name, norm_axes in axes.norms.items():
                    grid = sorted(e for e in norm_axes.eps if e > 0)
                    for attack_spec in axes.attack_list():
                        what, attack = f"{attack_spec.name} {norm_name}", attack_spec.build()
                        if not attack_store.in_facts(attack):
                            detail.append(f"{what}: one run, reused only with the same ladder and earlier results")
                            continue
                        facts = evals.load_facts(attack_store.facts_key(bound, attack, attack_spec.describe(), norm_name))
                        done = set() if facts is None else set(facts.column("eps").to_pylist())
                        new = [e for e in grid if e not in done]
                        if done and new:
                            detail.append(f"{what}: attacks eps {', '.join(f'{e:g}' for e in new)} (the others from the store)")
                        elif done:
                            detail.append(f"{what}: every eps from the store")
            parts.append(f"{axes.evaluator}[{i}] to compute" + (f" ({'; '.join(detail)})" if detail else ""))
        lines.append(f"  {label(cfg, spec.label_axes()) or cfg.model}: {model}; {', '.join(parts) or 'no per-trial evaluation'}")
    return ["evaluation, per trial" + (" (--fresh: everything computed)" if fresh else "") + ":", *lines]


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


def run(spec: StudySpec, ds: data.Dataset, spec_path: str, resume: bool = False, fresh: bool = False) -> int:
    import ray
    from ray import tune

    from jobs import search
    from study.trial import (StudyContext, prepare_acgan, prepare_features,
                             prepare_generative, run_study_evaluators,
                             run_trial)

    started = datetime.now(timezone.utc)
    run_started = int(time.time())  # Tune stamps reports in whole seconds
    t0 = time.perf_counter()
    results_uri, store_uri = absolute(spec.results_uri), absolute(spec.store_uri)
    fs, base = fsio.resolve(results_uri)
    if not resume:
        clear_outputs(fs, base)
        fsio.write_atomic(fs, fsio.join(base, SPEC_FILE), json.dumps(spec.model_dump(mode="json"), indent=2).encode())
        fsio.remove(fs, fsio.join(base, search.PARETO_FILE))  # a fresh search starts a fresh Pareto set
    # Per-epoch reports carry training metrics only; robustness metrics come with the final one.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    # Each trial logs one line per phase with its id; Ray's dedup would fold lines that differ in digits.
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    own_ray = not ray.is_initialized()
    if own_ray:
        local = not os.environ.get("RAY_ADDRESS")
        # Embedded Ray needs no dashboard; a cluster's dashboard stays where the cluster put it.
        ray.init(include_dashboard=False if local else None, log_to_driver=True)
    prov = provenance()
    context = StudyContext(spec=spec, results_uri=results_uri, store_uri=store_uri, provenance=prov, code_folders=imports.code_folders(spec.import_paths()), fresh=fresh)
    gen_meta = None
    if spec.needs_generative:
        # Once per sweep, before any trial: the trials then load it from the store. A Ray task
        # with a trial's resources, so on a cluster it trains on a worker, not the head.
        task = ray.remote(prepare_generative).options(num_cpus=spec.resources.cpu, num_gpus=spec.resources.gpu)
        gen_meta = ray.get(task.remote(context, ds))
        print(f"generative model {gen_meta['key']}: {'from the store' if gen_meta['from_store'] else 'trained in %.0f s' % gen_meta['train_s']}", flush=True)
    if spec.needs_acgan:
        # Once per sweep, before any trial, like the generative model: the AC-GAN and the judges.
        task = ray.remote(prepare_acgan).options(num_cpus=spec.resources.cpu, num_gpus=spec.resources.gpu)
        ac_meta = ray.get(task.remote(context, ds))
        print(f"AC-GAN {ac_meta['key']}: {'from the store' if ac_meta['from_store'] else 'trained in %.0f s' % ac_meta['train_s']}", flush=True)
    sets = None
    if spec.needs_features:
        # Once per sweep, before any trial: the source models and every constructed training set,
        # into the store, where the trials load them. A Ray task with a trial's resources.
        task = ray.remote(prepare_features).options(num_cpus=spec.resources.cpu, num_gpus=spec.resources.gpu)
        sets = ray.get(task.remote(context, ds))
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, data=ds, study=context),
        {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu},
    )
    if resume:
        print(f"resuming {experiment_path(spec)}: finished trials are not run again", flush=True)
        tuner = tune.Tuner.restore(experiment_path(spec), trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=search.param_space(spec),
            tune_config=search.tune_config(spec, results_uri),
            run_config=tune.RunConfig(
                name=spec.name,
                storage_path=results_uri + "/tune",
                failure_config=tune.FailureConfig(max_failures=spec.search.max_failures),
                verbose=1,
            ),
        )
    grid = tuner.fit()

    trials = [trial_record(r, since=run_started) for r in grid]
    used = {k for r in grid for k in ((r.metrics or {}).get("eval_keys") or "").split(",") if k}
    EvalStore(store_uri).write_ref(results_uri, used)  # what `advsweep store gc` keeps for this folder
    finished = [t["trial_id"] for t in trials if t["status"] == "TERMINATED"]
    study_rows, n_study = (), 0
    after = [e.evaluator for e in spec.evaluate if e.scope == "study"]
    if after and finished:
        configs = [planning.resolve(spec, planning.decode(spec, r.config)) for r, t in zip(grid, trials) if t["status"] == "TERMINATED"]
        print(f"{', '.join(after)}: over the {len(configs)} models of the study", flush=True)
        # A Ray task with a trial's resources: on a cluster it runs on a worker, not the head.
        task = ray.remote(run_study_evaluators).options(num_cpus=spec.resources.cpu, num_gpus=spec.resources.gpu)
        n_study = ray.get(task.remote(context, ds, configs))
        study_rows = tuple(after)
    pareto = search.read_pareto(results_uri) if spec.search.kind == "optuna" else None
    results_path, table = results.compact(results_uri, finished, pareto=pareto, study_rows=study_rows)
    # Every row a trial or study evaluator computed has its own key, so compaction keeps them all
    # (a config a search picked twice is one trial id: the same rows, counted once).
    per_trial = {t["trial_id"]: t["rows"] or 0 for t in trials if t["status"] == "TERMINATED"}
    expected = sum(per_trial.values()) + n_study
    lost = expected - table.num_rows
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
        "resumed": resume,
        "rows": table.num_rows,
        "generative": gen_meta,
        "train_sets": sets,
        "trials": trials,
    }
    manifest_path = results.write_manifest(results_uri, manifest)
    if own_ray:
        ray.shutdown()

    print_summary(table, trials, results_path, manifest_path, results_uri)
    failed = [t for t in trials if t["status"] == "ERROR"]
    for t in failed:
        print(f"trial failed: {t['label'] or t['trial_id']}: {t['error']}", file=sys.stderr)
    if lost:
        print(f"rows: {table.num_rows} in results.parquet, {expected} computed: {lost} rows share a key with another", file=sys.stderr)
    return 1 if failed or lost else 0


def trial_record(r, since: int) -> dict:
    """One Tune trial in the manifest. STOPPED: a scheduler ended it before it wrote rows.
    ``this_run``: false for a trial a resumed sweep found already finished (its last report is
    older than this run, or it found its rows written and kept them)."""
    from jobs.search import FINAL_MARKER

    m = r.metrics or {}
    status = "ERROR" if r.error else ("TERMINATED" if FINAL_MARKER in m else "STOPPED")
    return {
        "trial_id": m.get("advsweep_trial_id"),
        "label": m.get("label"),
        "status": status,
        "this_run": not m.get("kept") and m.get("timestamp", since) >= since,
        "epochs_trained": m.get("epoch"),
        "from_store": m.get("from_store"),
        "checkpoint": m.get("checkpoint"),
        "train_s": m.get("train_s"),
        "eval_s": m.get("eval_s"),
        "rows": m.get("rows"),
        "evaluation": {k: m.get(k) for k in EVAL_STATS},
        "error": str(r.error).splitlines()[0] if r.error else None,
    }


# What a trial took from the evaluation store and what it computed (study.evalstore.Bound.stats).
EVAL_STATS = ("units_reused", "units_computed", "pairs_reused", "pairs_attacked", "runs_reused", "runs_computed")


def evaluation_summary(trials: list[dict]) -> list[str]:
    """Per trial of this run: its model's source, and its evaluation from the store or computed."""
    lines = []
    for t in trials:
        e = t.get("evaluation") or {}
        if not t["this_run"] or e.get("units_reused") is None:
            continue
        model = "checkpoint" if t.get("checkpoint") else ("model from the store" if t["from_store"] else "model trained")
        what = f"{e['units_reused']} entries from the store, {e['units_computed']} computed"
        if e["units_computed"]:
            what += f" (attacks: {e['pairs_attacked']} (point, eps) pairs attacked, {e['pairs_reused']} from the store; whole runs: {e['runs_computed']} computed, {e['runs_reused']} from the store)"
        lines.append(f"  {t['label'] or t['trial_id']}: {model}; {what}")
    return lines


def print_summary(table, trials, results_path, manifest_path, results_uri):
    import polars as pl

    from analysis import epsilon, natural, sections, uncertainty
    from analysis.evaluation import attack_log, evaluation_warnings
    from analysis.frontier import best_per_point

    df = pl.from_arrow(table)
    rob = df.filter(pl.col("evaluator") == "robustness", pl.col("eps_rule").is_null())
    per_class = df.filter(pl.col("evaluator") == "robustness", pl.col("eps_rule").is_not_null(), pl.col("attack") == "worst")
    dist = df.filter(pl.col("evaluator") == "distances")
    crafted = df.filter(pl.col("evaluator") == "crafted")
    emb = df.filter(pl.col("evaluator") == "embedding")
    geo = df.filter(pl.col("evaluator") == "geometry", pl.col("norm") == "l2", pl.col("attack") != "closed-form")
    unc = df.filter(pl.col("evaluator") == "uncertainty")
    nat = df.filter(pl.col("evaluator") == "natural")
    rec = df.filter(pl.col("evaluator") == "reconstruction")
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True, fmt_str_lengths=60):
        if rob.height:
            best = best_per_point(rob.filter(pl.col("attack") == "worst")).select(
                "norm", "eps", pl.col("ensemble").alias("attacks"), pl.col("robust_acc").round(3), pl.col("clean_acc").round(3), pl.col("label").alias("best model")
            )
            print("\nBest robust accuracy per norm / eps (worst case over the attacks: a point counts only if it survives every one):")
            print(best)
            log = attack_log(rob)
            if log.height:
                print("\nPoints each attack broke, summed over the models (in a cascade: those no earlier attack had broken):")
                print(log.drop("ensemble", "cascade") if log.get_column("ensemble").n_unique() == 1 else log)
            signs = evaluation_warnings(df)
            print("\nSigns of a broken evaluation: " + ("none" if not signs else f"{len(signs)}"))
            for line in signs[:20]:
                print(f"  WARNING {line}")
            if len(signs) > 20:
                print(f"  ... and {len(signs) - 20} more (analysis.evaluation.evaluation_warnings)")
        if geo.height:
            print("\nGeometry: tilting angle and median minimal L2 perturbation (box-constrained closed form, else PGD bisection):")
            print(
                geo.sort("attack").unique("trial_id", keep="first").sort("label")
                .select("label", pl.col("theta_deg").round(1), pl.col("d_adv_pred").round(3), pl.col("attack").alias("method"), pl.col("min_eps_median").round(3), pl.col("clean_acc").round(3))
            )
        if unc.height:
            per_set = uncertainty.seed_table(unc).join(uncertainty.auroc_table(unc).select("label", "input_set", "auroc_mi"), on=["label", "input_set"], how="left", maintain_order="left")
            print("\nUncertainty at the largest T: accuracy, mean MI relative to the clean baseline set, and MI's detection AUROC (clean vs the set):")
            print(per_set.select("label", "input_set", pl.col("accuracy").round(3), pl.col("mi_rel").round(2), pl.col("auroc_mi").round(3)))
        if nat.height:
            print("\nNatural adversaries at the largest budget: success, mean latent distance ||z* - I(x)||, mean queries per point:")
            print(natural.distance_table(nat).select(
                "label", pl.col("latent_search").alias("search"), "budget", pl.col("success_rate").round(3), pl.col("latent_dist_mean").round(3), pl.col("queries_mean").round(1)
            ))
        if rec.height:
            print("\nReconstruction defense: accuracy on each input set as given and through G(I(.)):")
            print(natural.reconstruction_table(rec).select("label", "input_set", pl.col("accuracy").round(3), pl.col("recon_acc").round(3)))
        if dist.height:
            print("\nClass distances (the first trial's sample): within- and between-class means, classes closer to themselves than to every other class, and the per-class eps suggestions:")
            print(
                dist.filter(pl.col("trial_id") == dist.sort("label").item(0, "trial_id")).sort("norm", "per_class", "eps_quantile")
                .select("norm", "per_class", pl.col("within_mean").round(3), pl.col("between_mean").round(3), pl.col("within_smaller_rate").alias("closer_to_self"),
                        pl.col("eps_quantile").alias("q"), pl.col("eps").round(3).alias("eps_mean"), pl.col("eps_min").round(3), pl.col("eps_max").round(3))
            )
        if per_class.height:
            print("\nPer-class eps vs one uniform eps with the same mean (worst case over the attacks):")
            print(
                per_class.pivot("eps_rule", index=["label", "norm", "eps_quantile", "eps"], values="robust_acc").sort("label", "norm", "eps_quantile")
                .select("label", "norm", pl.col("eps_quantile").alias("q"), pl.col("eps").round(3).alias("mean eps"), pl.col("per-class").round(3), pl.col("uniform").round(3))
            )
        if crafted.height:
            print("\nCrafted images x0 + eps sign(x1): classified as x0's class, as x1's, mean confidence:")
            print(crafted.sort("label", "eps").select("label", "eps", pl.col("robust_acc").round(3).alias("as x0"), pl.col("target_rate").round(3).alias("as x1"), pl.col("adv_confidence_mean").round(3).alias("confidence")))
        if emb.height:
            print("\nEmbedding: 1-NN accuracy and within/between-class distances; embedding-space PGD accuracy; share of input-space PGD adversaries inside the ball:")
            print(emb.filter(pl.col("attack").is_null()).sort("label").select("label", pl.col("knn_acc").round(3), pl.col("within_mean").round(3), pl.col("between_mean").round(3)))
            print(
                emb.filter(pl.col("attack").is_not_null()).sort("label", "attack", "norm", "embed_eps")
                .select("label", "attack", "norm", "eps", "embed_eps", pl.col("robust_acc").round(3), pl.col("inside_rate").round(3), pl.col("embed_dist_mean").round(3))
            )
        if df.filter(pl.col("evaluator") == "embedding-transfer").height:
            print("\nEvery model in each triplet embedding: accuracy under embedding-space PGD, share of input-space PGD adversaries inside the ball:")
            print(epsilon.embedding_transfer_table(df))
        for title, _, rows in sections.tables(df):
            print(f"\n{title}:")
            print(rows)
    if rob.height:
        top = rob.sort("clean_acc", descending=True).row(0, named=True)
        print(f"best clean accuracy: {top['clean_acc']:.3f} ({top['label']})")
    pareto = df.filter(pl.col("search_pareto")).unique("trial_id", maintain_order=True)
    if pareto.height:
        print(f"Optuna Pareto trials: {', '.join(pareto['label'])}")
    trained = sum(1 for t in trials if t["from_store"] is False and not t.get("checkpoint") and t["this_run"])
    stored = sum(1 for t in trials if t["from_store"] and t["this_run"])
    loaded = sum(1 for t in trials if t.get("checkpoint") and t["this_run"])
    stopped = [t for t in trials if t["status"] == "STOPPED"]
    earlier = [t for t in trials if not t["this_run"]]
    print(f"\nmodels: {trained} trained, {stored} from the store" + (f", {loaded} from checkpoints (not trained here)" if loaded else ""))
    per_trial = evaluation_summary(trials)
    if per_trial:
        print("evaluation, per trial:")
        print("\n".join(per_trial))
    if earlier:
        print(f"not rerun (rows written before the interruption): {len(earlier)} trials: {', '.join(t['trial_id'] for t in earlier)}")
    if stopped:
        print(f"stopped early by the scheduler: {len(stopped)} trials (no rows)")
    print(f"rows: {table.num_rows} ({len(trials)} trials)")
    print(f"results: {results_path}")
    print(f"trials:  {results_uri}/trials/")
    print(f"manifest: {manifest_path}")


def main(argv=None, prog="python -m jobs.sweep") -> int:
    args = parse_args(argv, prog)
    try:
        spec, ds = prepare(args)
    except SpecError as e:
        print(e, file=sys.stderr)
        return 2
    if args.dry_run:
        p = plan(spec, ds)
        models = f"{p['models']} models ({p['models'] - p['in_store']} to train, {p['in_store']} in the store)" if "models" in p else "models sampled at run time"
        if p.get("checkpoints"):
            models = (f"{models}, " if p["models"] else "") + (f"{p['checkpoints']} checkpoints evaluated as they are" if p["checkpoints"] > 1 else "1 checkpoint evaluated as it is")
        upto = "at most " if spec.search.scheduler else ""  # a scheduler may stop trials before their rows
        user = [e.evaluator for e in spec.evaluate if e.n_rows() is None]
        unknown = f"rows depend on {', '.join(user)}" if user else "rows depend on the sampled models"
        rows = f"{upto}{p['rows']} rows" if p["rows"] is not None else unknown
        print(f"{spec.name}: {p['trials']} trials, {models}; {rows}")
        if "generative_in_store" in p:
            print(f"generative model: {'in the store' if p['generative_in_store'] else 'to train before the trials'}")
        if "acgan_in_store" in p:
            print(f"AC-GAN: {'in the store' if p['acgan_in_store'] else 'to train before the trials'} (and its judges, if not stored)")
        for name, present in p.get("train_sets", {}).items():
            print(f"training set {name}: {'in the store' if present else 'to build before the trials'}")
        print("\n".join(evaluation_plan(spec, ds, args.fresh)))
        print(f"results -> {spec.results_uri}   store -> {spec.store_uri}")
        return 0
    return run(spec, ds, args.spec, resume=args.resume, fresh=args.fresh)


if __name__ == "__main__":
    sys.exit(main())
