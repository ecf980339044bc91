"""The result rows: the one Arrow schema, atomic per-trial Parquet files, compaction.

Layout under a study's results URI:
    trials/<trial_id>.parquet   one file per trial, written atomically while the sweep runs
    study/<evaluator>.parquet   rows of study evaluators (transfer, embedding-transfer), written after the trials
    artifacts/<name>/<trial_id>.parquet   per-trial tables beside the rows (study.artifacts)
    results.parquet             every trial's rows, compacted at the end (deduplicated by row_key)
    manifest.json               spec, versions, git sha, times, trial states

``python -m study.results`` prints the schema as the Markdown table in docs/results-schema.md.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from study import fsio

SCHEMA_VERSION = "13"
_META_KEY = b"advsweep.schema_version"
# A trial file also keeps the trial's final Tune report, so a trial whose rows are already written
# (a resumed sweep, a retried worker) reports it again instead of computing the rows a second time.
_FINAL_KEY = b"advsweep.final_report"

# (name, type, group, meaning): the columns every evaluator shares. With each evaluator's own
# (study.registry: a module's COLUMNS), the single source of the schema and of its documentation.
COLUMNS = [
    ("study", pa.string(), "identity", "study name from the spec"),
    ("trial_id", pa.string(), "identity", "hash of the study and the resolved training config (deterministic)"),
    ("row_key", pa.string(), "identity", "hash of trial_id and the evaluation point; unique per row"),
    ("label", pa.string(), "identity", "short readable name of the training config, e.g. `cnn wd=0.001 adv=fgsm-linf-0.1`"),
    ("dataset", pa.string(), "training", "dataset name"),
    ("classes", pa.string(), "training", "class filter as written in the spec (e.g. `3,7`), null for all classes"),
    ("model", pa.string(), "training", "model registry name, or a model of the user's by import path (package.module:name; torchvision's as torchvision.models:resnet18)"),
    ("seed", pa.int64(), "training", "training seed"),
    ("epochs", pa.int64(), "training", "training epochs"),
    ("lr", pa.float64(), "training", "Adam learning rate"),
    ("lr_schedule", pa.string(), "training", "learning-rate schedule: constant, or cosine (decays to 0 over the training steps)"),
    ("batch_size", pa.int64(), "training", "training batch size"),
    ("weight_decay", pa.float64(), "training", "Adam's L2 coefficient on every parameter (gradient += weight_decay * w)"),
    ("l2", pa.float64(), "training", "lambda of the L2 penalty lambda * ||W||^2 on weights, biases excluded (the SVM's regularization)"),
    ("pieces", pa.int64(), "training", "maxout: affine pieces per unit (null: the model's default, or not a maxout model)"),
    ("dropout", pa.float64(), "training", "mc-cnn, mc-mlp: MC dropout rate, kept on at prediction (null: the model's default, or not an MC-dropout model)"),
    ("margin", pa.float64(), "training", "triplet: the triplet loss's margin (null: the model's default, or not a triplet model)"),
    ("triplet_loss", pa.string(), "training", "triplet: `margin` (max(0, |a - p|^2 - |a - n|^2 + margin)) or `ratio` (Hoffer & Ailon's distance ratio)"),
    ("hidden", pa.int64(), "training", "mlp, cnn and variants: units per dense hidden layer (null: the model's default)"),
    ("channels", pa.int64(), "training", "cnn, mc-cnn, triplet: the second conv stage's channels, the first has half (null: the model's default)"),
    ("model_args", pa.string(), "training", "a model of the user's (by import path): its keyword arguments from the spec, as JSON; null otherwise"),
    ("normalize", pa.string(), "training", "input normalisation inside the model, as JSON {mean, std}: the model sees (x - mean) / std, attacks work in [0, 1] pixel space; null for none"),
    ("members", pa.string(), "training", "a model ensemble (model `ensemble`): its members as the spec gives them (train.model values), as JSON; member i has seed seed + i unless it sets one; null otherwise"),
    ("checkpoint", pa.string(), "training", "pretrained weights evaluated as they are (path or URI, as the spec writes it): the model was not trained here, and the training columns (epochs, lr, ...) are null; null for a model trained by the study"),
    ("checkpoint_sha256", pa.string(), "training", "sha256 of the checkpoint file's bytes (16 hex digits): which weights the row measured"),
    ("adv_attack", pa.string(), "training", "adversarial-training attack (fgsm, pgd), null for standard training"),
    ("adv_norm", pa.string(), "training", "adversarial-training norm"),
    ("adv_eps", pa.float64(), "training", "adversarial-training radius"),
    ("adv_alpha", pa.float64(), "training", "weight of the clean loss: alpha J(x) + (1 - alpha) J(x_adv)"),
    ("train_set", pa.string(), "training", "the training set: null for the dataset's own split (D); `robust` (D_R) or `non-robust` (D_NR), rebuilt by representation matching to the robust or standard source model; `rand` (D_rand) or `det` (D_det), targeted L2 PGD on the standard source toward a random or the next class, relabelled with it; `shuffled` (D_shuf), the control for D_R: x plus another image's change in D_R (study.features)"),
    ("set_eps", pa.float64(), "training", "rand, det: L2 radius of the targeted perturbation"),
    ("set_step", pa.float64(), "training", "constructed set: L2 step length (absolute; matching's decays linearly to 0)"),
    ("set_steps", pa.int64(), "training", "constructed set: matching or targeted-PGD steps"),
    ("set_start", pa.string(), "training", "robust, non-robust, shuffled: where matching starts (`noise`: uniform noise; `other`: a random training image)"),
    ("set_key", pa.string(), "training", "store key of the constructed set (its config, source model, data, seed and code)"),
    ("set_n", pa.int64(), "training", "images in the constructed set"),
    ("set_target_rate", pa.float64(), "training", "rand, det: share of constructed images the standard source classifies as their new label"),
    ("set_rep_reduction", pa.float64(), "training", "robust, non-robust: 1 - mean ||g(x_r) - g(x)|| / mean ||g(x_0) - g(x)|| over the set (g: the source's penultimate layer; x_0: the start)"),
    ("set_l2_mean", pa.float64(), "training", "constructed set: mean ||x' - x||_2 between a constructed image and the image it rebuilds"),
    ("set_label_agreement", pa.float64(), "training", "constructed set: share of its labels equal to the original label (D_rand: about 1/C; D_det: 0)"),
    ("evaluator", pa.string(), "evaluation", "evaluator name (robustness, ...)"),
    ("attack", pa.string(), "evaluation", "attack name, or `worst`: robust only if the point survives every attack of the evaluator entry"),
    ("attack_options", pa.string(), "evaluation", "the attack with every setting, defaults included, e.g. `pgd(steps=20,step_size=0.125,restarts=1)`; for `worst`, every attack of the ensemble, `; `-separated"),
    ("ensemble", pa.string(), "evaluation", "robustness: the attacks of the evaluator entry in running order, e.g. `apgd-ce+apgd-t+fab-t+square` (their settings: the `worst` row's attack_options)"),
    ("cascade", pa.bool_(), "evaluation", "robustness: each attack only attacked the points every earlier one left robust (AutoAttack's way); its `robust_acc` is then the ensemble's after it, and `broken` what it added"),
    ("norm", pa.string(), "evaluation", "threat-model norm (linf, l2)"),
    ("eps", pa.float64(), "evaluation", "attack radius in that norm (inputs in [0, 1])"),
    ("steps", pa.int64(), "evaluation", "attack iterations (1 for FGSM)"),
    ("step_size", pa.float64(), "evaluation", "step size relative to eps"),
    ("restarts", pa.int64(), "evaluation", "random restarts (PGD, APGD, FAB, Square)"),
    ("targets", pa.int64(), "evaluation", "apgd-t, fab-t, fmn-t: how many of the most likely other classes are targeted, one run each"),
    ("queries_budget", pa.int64(), "evaluation", "square: queries per point and eps (the full budget; see attack_options for a probe)"),
    ("kappa", pa.float64(), "evaluation", "cw: confidence kappa, the logit margin by which a wrong class must win (`steps` are its Adam steps per c, `step_size` its learning rate)"),
    ("search_steps", pa.int64(), "evaluation", "cw: rounds of the binary search over c"),
    ("eot_samples", pa.int64(), "evaluation", "stochastic models: MC samples per attack query (expectation over transformation); null for deterministic models"),
    ("mc_samples", pa.int64(), "evaluation", "uncertainty: T, the MC-dropout samples per input the metrics are computed from"),
    ("latent_search", pa.string(), "evaluation", "natural adversaries: the latent-space search (iterative, hybrid)"),
    ("latent_samples", pa.int64(), "evaluation", "natural adversaries: N, latent samples (classifier queries) per search round"),
    ("latent_rounds", pa.int64(), "evaluation", "natural adversaries: the budget, at most this many search rounds per point (queries <= N * rounds)"),
    ("latent_dr", pa.float64(), "evaluation", "natural adversaries: dr, the iterative search's shell width, the hybrid search's resolution"),
    ("per_class", pa.int64(), "evaluation", "distances, per-class eps: images sampled per class"),
    ("eps_quantile", pa.float64(), "evaluation", "distances, per-class eps: q, eps_c = eps_fraction x the q-quantile of class c's distances to the nearest image of another class"),
    ("eps_fraction", pa.float64(), "evaluation", "distances, per-class eps: the fraction of that quantile"),
    ("eps_rule", pa.string(), "evaluation", "robustness with per-class eps: `per-class` (each point attacked at its class's eps) or `uniform` (every point at their mean, the row's `eps`); null for a plain eps grid"),
    ("embed_eps", pa.float64(), "evaluation", "embedding: the radius of the ball ||e(x') - e(x)||_2 <= embed_eps in the model's embedding space"),
    ("source_trial_id", pa.string(), "evaluation", "transfer: the trial whose model the adversarial examples were crafted on (the row's own trial is the target); embedding-transfer: the trial whose embedding measures them; features: the store key of the standard source model"),
    ("source_label", pa.string(), "evaluation", "transfer, embedding-transfer: that trial's label; features: `source <model>`"),
    ("n_eval", pa.int64(), "metric", "number of evaluation points"),
    ("clean_acc", pa.float64(), "metric", "accuracy on the clean evaluation points"),
    ("robust_acc", pa.float64(), "metric", "fraction of all points classified correctly after the attack"),
    ("success_rate", pa.float64(), "metric", "fraction of the originally correct points the attack fooled (in a cascade: the ensemble so far)"),
    ("adv_confidence_mean", pa.float64(), "metric", "mean confidence (the model's probability of the class it predicts) on the successful adversarial examples"),
    ("transfer_error", pa.float64(), "metric", "transfer, features: the target's error rate on the source's adversarial examples (every evaluation point)"),
    ("queries_mean", pa.float64(), "metric", "natural, square: mean classifier queries spent per searched point (found or not); unrestricted: mean search steps per point (found or not)"),
    ("queries_median", pa.float64(), "metric", "natural: median classifier queries per searched point"),
    ("recon_acc", pa.float64(), "metric", "reconstruction: accuracy on G(I(inputs)), the inputs projected through the inverter and generator (the reconstruction defense); natural: accuracy on the points' reconstructions G(I(x))"),
    ("within_mean", pa.float64(), "metric", "distances: mean pairwise distance within a class (i != j), averaged over classes; embedding: the same in the embedding"),
    ("between_mean", pa.float64(), "metric", "distances: mean pairwise distance between images of different classes, averaged over class pairs; embedding: the same in the embedding"),
    ("generative_key", pa.string(), "generative", "natural, reconstruction, natural input sets: content hash of the generative model (config, data, code) in the store"),
    ("gan_steps", pa.int64(), "generative", "generator steps the generative model was trained for"),
    ("train_s", pa.float64(), "cost", "seconds spent training the model (when it was first trained)"),
    ("from_store", pa.bool_(), "cost", "the model was loaded from the model store, not trained in this run"),
    ("eval_from_store", pa.bool_(), "cost", "the row's evaluation (its evaluator entry on this model and data) came from the evaluation store, computed by an earlier sweep (study.evalstore); its eval_s is that sweep's"),
    ("eval_s", pa.float64(), "cost", "seconds for this (attack, norm) eps grid; for `worst`, the sum over attacks"),
    ("device", pa.string(), "cost", "torch device the trial ran on"),
    ("node_id", pa.string(), "cost", "Ray node the trial ran on"),
    ("search_pareto", pa.bool_(), "search", "Optuna searches: the trial is in the Optuna study's Pareto set (best trials) when the sweep ended; null for other searches and before compaction"),
    ("advsweep_version", pa.string(), "provenance", "advsweep version"),
    ("git_sha", pa.string(), "provenance", "git commit of the code that ran (null outside a checkout)"),
    ("torch_version", pa.string(), "provenance", "torch version"),
    ("ray_version", pa.string(), "provenance", "ray version"),
    ("created_at", pa.timestamp("us", tz="UTC"), "provenance", "when the row was written"),
]
GROUPS = ("identity", "training", "evaluation", "metric", "generative", "cost", "search", "provenance")


@functools.lru_cache(maxsize=1)
def schema_columns() -> tuple:
    """The shared columns, every norm's perturbation sizes (study.norms) and every built-in
    evaluator's own columns, grouped (a group's own columns after its shared ones)."""
    from study import norms, registry

    sizes = [c for norm in norms.NORMS.values() for c in norm.size_columns()]
    return tuple(sorted([*COLUMNS, *sizes, *registry.builtin_columns()], key=lambda c: GROUPS.index(c[2])))


@functools.lru_cache(maxsize=1)
def schema() -> pa.Schema:
    return pa.schema([pa.field(n, t) for n, t, _, _ in schema_columns()], metadata={_META_KEY: SCHEMA_VERSION.encode()})


# The evaluation axes that, with trial_id, identify a row.
KEY_COLUMNS = (
    "evaluator", "attack", "attack_options", "ensemble", "cascade", "norm", "eps", "steps", "step_size", "restarts", "kappa", "search_steps", "eot_samples", "mc_samples",
    "latent_search", "latent_samples", "latent_rounds", "latent_dr", "per_class", "eps_quantile", "eps_fraction", "eps_rule", "embed_eps",
    "source_trial_id",
)


class SchemaVersionError(ValueError):
    pass


def user_columns(row: dict) -> list[str]:
    """The columns an evaluator of the user's adds beyond the schema (study.registry)."""
    names = set(schema().names)
    return [k for k in row if k not in names]


@functools.lru_cache(maxsize=1)
def _own_axes() -> frozenset[str]:
    """The `evaluation` columns built-in evaluators declare beyond the shared key columns."""
    from study import registry

    return frozenset(n for n, _, group, _ in registry.builtin_columns() if group == "evaluation") - set(KEY_COLUMNS)


def row_key(trial_id: str, row: dict) -> str:
    """Hash of the trial and the row's evaluation point: the key columns, an evaluator's own
    `evaluation` columns, and any column a user's evaluator adds that is not a float (its
    axes; floats are its measurements)."""
    point = [trial_id, *(row.get(c) for c in KEY_COLUMNS)]
    own = _own_axes()
    users = set(user_columns(row))
    axes = sorted((k, row[k]) for k in row if k in own or (k in users and not isinstance(row[k], float)))
    point += [axes] if axes else []
    return hashlib.sha256(json.dumps(point, default=str).encode()).hexdigest()[:16]


def to_table(rows: list[dict]) -> pa.Table:
    """Rows as an Arrow table of the schema, plus the columns a user's evaluator added (typed
    from their values, after the schema's); a built-in evaluator's unknown column is a bug."""
    extra = list(dict.fromkeys(c for r in rows for c in user_columns(r)))
    builtin = {str(r.get("evaluator")) for r in rows if user_columns(r) and ":" not in str(r.get("evaluator"))}
    if builtin:
        raise ValueError(f"rows of {sorted(builtin)} have columns the schema lacks: {sorted(extra)}")
    if not extra:
        return pa.Table.from_pylist(rows, schema=schema())
    inferred = pa.Table.from_pylist([{c: r.get(c) for c in extra} for r in rows]).schema
    full = pa.schema([*schema(), *(inferred.field(c) for c in extra)], metadata=schema().metadata)
    return pa.Table.from_pylist(rows, schema=full)


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def trial_path(results_uri: str, trial_id: str) -> tuple:
    fs, base = fsio.resolve(results_uri)
    return fs, fsio.join(base, "trials", f"{trial_id}.parquet")


def write_trial(results_uri: str, trial_id: str, rows: list[dict], final: dict | None = None) -> str:
    fs, path = trial_path(results_uri, trial_id)
    table = to_table(rows)
    if final is not None:
        table = table.replace_schema_metadata({**table.schema.metadata, _FINAL_KEY: json.dumps(final).encode()})
    fsio.write_atomic(fs, path, parquet_bytes(table))
    return path


def written_trial(results_uri: str, trial_id: str) -> dict | None:
    """The final report of a trial whose rows this results folder already holds, in this schema
    version; None when they must be computed (no file, another version, unreadable)."""
    fs, path = trial_path(results_uri, trial_id)
    if not fsio.exists(fs, path):
        return None
    try:
        with fs.open_input_file(path) as f:
            meta = pq.read_schema(f).metadata or {}
        if meta.get(_META_KEY, b"").decode() != SCHEMA_VERSION or _FINAL_KEY not in meta:
            return None
        return json.loads(meta[_FINAL_KEY])
    except (pa.ArrowInvalid, ValueError):
        return None  # a damaged file is recomputed and overwritten whole


def write_study_rows(results_uri: str, evaluator: str, rows: list[dict]) -> str:
    """Rows of a study evaluator (one that runs after the trials, over all their models)."""
    fs, base = fsio.resolve(results_uri)
    path = fsio.join(base, "study", f"{evaluator}.parquet")
    fsio.write_atomic(fs, path, parquet_bytes(to_table(rows)))
    return path


def read_table(fs, path: str) -> pa.Table:
    table = pq.read_table(path, filesystem=fs)
    version = (table.schema.metadata or {}).get(_META_KEY, b"").decode()
    if version != SCHEMA_VERSION:
        raise SchemaVersionError(f"{path}: results schema version {version or 'missing'!r}, this advsweep reads {SCHEMA_VERSION!r}")
    return table.replace_schema_metadata({_META_KEY: version.encode()})  # not a trial's own report


def compact(results_uri: str, trial_ids: list[str] | None = None, pareto: set[str] | None = None, study_rows: tuple[str, ...] = ()) -> tuple[str, pa.Table]:
    """Merge trials/*.parquet into results.parquet (one row per row_key). Returns (path, table).

    With ``trial_ids``, only those trials' files: a sweep compacts exactly the trials its spec
    defines, not files an earlier, different spec left in the same folder. ``study_rows`` names
    the study evaluators whose study/<name>.parquet joins them. With ``pareto`` (an Optuna
    search's Pareto trial ids), ``search_pareto`` is filled: true for those, false else."""
    fs, base = fsio.resolve(results_uri)
    infos = fs.get_file_info(pafs.FileSelector(fsio.join(base, "trials"), allow_not_found=True))
    files = sorted(
        f.path
        for f in infos
        if f.extension == "parquet" and not f.base_name.startswith(".tmp-") and (trial_ids is None or f.base_name[: -len(".parquet")] in trial_ids)
    )
    files += [p for p in (fsio.join(base, "study", f"{name}.parquet") for name in study_rows) if fsio.exists(fs, p)]
    tables = [read_table(fs, f) for f in files]
    # Trials of a user's evaluator add its columns: the others get nulls there.
    table = pa.concat_tables(tables, promote_options="default") if tables else schema().empty_table()
    # A re-run rewrites a trial's file whole, so a key can only repeat across files: keep one.
    seen, first = set(), []
    for i, key in enumerate(table.column("row_key").to_pylist()):
        if key not in seen:
            seen.add(key)
            first.append(i)
    table = table.take(pa.array(first, type=pa.int64())).sort_by([("trial_id", "ascending"), ("evaluator", "ascending"), ("norm", "ascending"), ("attack", "ascending"), ("eps", "ascending")])
    if pareto is not None:
        marks = pa.array([t in pareto for t in table.column("trial_id").to_pylist()], type=pa.bool_())
        table = table.set_column(table.schema.get_field_index("search_pareto"), "search_pareto", marks)
    path = fsio.join(base, "results.parquet")
    table = table.replace_schema_metadata(schema().metadata)
    fsio.write_atomic(fs, path, parquet_bytes(table))
    return path, table


def write_manifest(results_uri: str, manifest: dict) -> str:
    fs, base = fsio.resolve(results_uri)
    path = fsio.join(base, "manifest.json")
    fsio.write_atomic(fs, path, json.dumps(manifest, indent=2, default=str).encode())
    return path


def schema_markdown() -> str:
    lines = ["| column | type | group | meaning |", "|---|---|---|---|"]
    escaped = [(n, t, g, d.replace("|", "\\|")) for n, t, g, d in schema_columns()]  # a pipe would end the cell
    lines += [f"| {n} | {t} | {g} | {d} |" for n, t, g, d in escaped]
    return "\n".join(lines)


if __name__ == "__main__":
    print(schema_markdown())
