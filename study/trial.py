"""One Ray Tune trial = one trained model (its training axes), evaluated on every evaluation axis.

The dataset arrives from Ray's object store (``tune.with_parameters``), never re-read from
disk; the model comes from the store when an identical one was trained before.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import torch
from ray import tune

from study import (acgan, artifacts, checkpoints, evalstore, evaluators,
                   features, fsio, generative, imports, models, planning, results)
from study.data import Dataset
from study.names import adversarial_name
from study.seeds import stream_seed
from study.spec import StudySpec, TrainConfig
from study.spec.training import ensemble_name
from study.evalstore import EvalStore
from study.evaluators.shards import ModelSource
from study.store import ModelStore, model_key
from study.train import init_model, train


@dataclass
class StudyContext:
    """What every trial of a sweep shares besides the data (small; pickled once per trial)."""

    spec: StudySpec
    results_uri: str  # absolute for local paths: Tune runs trials in their own working folders
    store_uri: str
    provenance: dict = field(default_factory=dict)
    workdir: str = field(default_factory=os.getcwd)  # the driver's: relative checkpoint paths start here
    code_folders: list = field(default_factory=list)  # where the driver found the user's modules (study.imports)
    fresh: bool = False  # --fresh: compute every evaluation, taking nothing from the evaluation store

    def checkpoint_uri(self, path: str) -> str:
        """A relative checkpoint path from the driver's folder; on a cluster node without that
        folder, from the trial's own (``ray job submit --working-dir`` puts a copy there)."""
        if "://" in path or os.path.isabs(path):
            return path
        driver = os.path.join(self.workdir, path)
        return driver if os.path.exists(driver) or not os.path.exists(path) else os.path.abspath(path)


def trial_id(study: str, cfg: TrainConfig) -> str:
    blob = json.dumps([study, cfg.model_dump(mode="json")], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def label(cfg: TrainConfig, swept: list[str]) -> str:
    """A short readable name built from the axes the study sweeps."""
    parts = [cfg.model if cfg.members is None else ensemble_name(cfg.members)]
    for name in swept:
        if name == "model":
            continue
        value = getattr(cfg, name) if name in TrainConfig.model_fields else cfg.model_args.get(name)
        if name == "checkpoint" and value is not None:
            parts.append(os.path.basename(value))
            continue
        if name == "normalize":
            continue
        if value is None and name in models.MODEL_PARAMS:
            continue  # a hyperparameter of another model of the study
        if name == "adversarial":
            value = adversarial_name(value.attack, value.norm, value.eps, value.alpha) if value else "none"
            name = "adv"
        elif name == "train_set":
            parts.append(features.name(value))
            continue
        elif name == "weight_decay":
            name = "wd"
        parts.append(f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}")
    return " ".join(parts)


def training_columns(cfg: TrainConfig, spec: StudySpec) -> dict:
    adv = cfg.adversarial
    columns = dict(
        dataset=spec.data.label,
        classes=",".join(map(str, spec.data.classes)) if spec.data.classes else None,
        model=cfg.model,
        seed=cfg.seed,
        epochs=cfg.epochs,
        lr=cfg.lr,
        lr_schedule=cfg.lr_schedule,
        batch_size=cfg.batch_size,
        weight_decay=cfg.weight_decay,
        l2=cfg.l2,
        pieces=cfg.pieces,
        dropout=cfg.dropout,
        margin=cfg.margin,
        triplet_loss=cfg.triplet_loss,
        hidden=cfg.hidden,
        channels=cfg.channels,
        adv_attack=adv.attack if adv else None,
        adv_norm=adv.norm if adv else None,
        adv_eps=adv.eps if adv else None,
        adv_alpha=adv.alpha if adv else None,
        train_set=cfg.train_set.kind if cfg.train_set else None,
        set_eps=cfg.train_set.eps if cfg.train_set else None,
        set_step=cfg.train_set.step if cfg.train_set else None,
        set_steps=cfg.train_set.steps if cfg.train_set else None,
        set_start=cfg.train_set.start if cfg.train_set else None,
        model_args=json.dumps(cfg.model_args, sort_keys=True) if cfg.model_args else None,
        normalize=json.dumps(cfg.normalize.model_dump(), sort_keys=True) if cfg.normalize else None,
        members=json.dumps(cfg.members) if cfg.members is not None else None,
        checkpoint=cfg.checkpoint,
    )
    if cfg.checkpoint is not None:  # evaluated as it is: no training setting applies
        columns.update({k: None for k in ("epochs", "lr", "lr_schedule", "batch_size", "weight_decay", "l2")})
    return columns


def set_columns(key: str, meta: dict) -> dict:
    """A constructed training set's identity and statistics, as row columns."""
    return dict(
        set_key=key,
        set_n=meta["n"],
        set_target_rate=meta["target_rate"],
        set_rep_reduction=meta["rep_reduction"],
        set_l2_mean=meta["l2_mean"],
        set_label_agreement=meta["label_agreement"],
    )


def _tensor(a: np.ndarray, device: torch.device) -> torch.Tensor:
    with warnings.catch_warnings():  # object-store arrays are read-only; nothing here writes them
        warnings.simplefilter("ignore", UserWarning)
        t = torch.from_numpy(a)
    if device.type == "cuda":
        # Page-locked memory lets the copy run as DMA; the data is copied to the GPU once per trial.
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def select_device(setting: str, gpus: float) -> torch.device:
    """`resources.device`: auto is CUDA when the trial was given a GPU and CUDA works, else CPU."""
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("resources.device is cuda but this trial sees no CUDA device")
    if setting == "cuda" or (setting == "auto" and gpus > 0 and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def run_trial(config: dict, data: Dataset, study: StudyContext, report=tune.report) -> None:
    """The Tune function trainable. ``report`` is swappable so the same work can run without Tune
    (benchmarks/sweep_overhead.py measures Tune's per-trial cost that way)."""
    spec = study.spec
    imports.add_folders(study.code_folders)
    torch.set_num_threads(max(1, int(spec.resources.cpu)))
    cfg = TrainConfig.model_validate(planning.resolve(spec, planning.decode(spec, config)))
    tid = trial_id(spec.name, cfg)
    device = select_device(spec.resources.device, spec.resources.gpu)
    x, y = _tensor(data.x_train, device), _tensor(data.y_train, device)
    x_eval, y_eval = _tensor(data.x_test, device), _tensor(data.y_test, device)
    name = label(cfg, spec.label_axes())
    written = results.written_trial(study.results_uri, tid)
    if written is not None:
        # Its rows were written before a driver crash or a worker loss: report them, compute nothing.
        print(f"advsweep trial {tid} ({name}): rows kept from an earlier run", flush=True)
        report({**written, "kept": True})
        return

    store = ModelStore(study.store_uri)
    x_fit, y_fit, fingerprint, set_meta = x, y, data.fingerprint, {}
    if cfg.train_set is not None:
        key = features.set_key(spec, cfg.train_set, data.fingerprint)
        found = features.stored(key, tuple(x.shape), store, device)
        if found is None:
            raise RuntimeError(f"training set {features.name(cfg.train_set)} ({key}) is not in the store {study.store_uri}; jobs.sweep builds it before the trials")
        x_fit, y_fit, meta = found
        fingerprint, set_meta = key, set_columns(key, meta)
    # One line per trial phase: the driver log then says which trials ran (e.g. after --resume).
    announce = lambda source: print(f"advsweep trial {tid} ({name}): {source} on {device}", flush=True)
    on_epoch = lambda epoch, m: report({**m, "advsweep_trial_id": tid, "label": name})
    model, meta, from_store = trained_model(cfg, data, fingerprint, store, (x_fit, y_fit), (x_eval, y_eval), announce, on_epoch, study)

    rows = []
    gen_model, gen_meta = generative.trained(spec.generative, x, data.fingerprint, store, progress=False) if spec.needs_generative else (None, None)
    ac_model = acgan.trained(spec.acgan, x, y, data.n_classes, data.fingerprint, store, progress=False)[0] if spec.needs_acgan else None
    cache = evalstore.Bound(EvalStore(study.store_uri), evalstore.identity(spec, cfg, data, fingerprint, meta.get("checkpoint_sha256")), fresh=study.fresh)
    ctx = evaluators.EvalContext(
        model=model, x=x_eval, y=y_eval, seed=cfg.seed, x_train=x, y_train=y, trial_id=tid, results_uri=study.results_uri, generative=gen_model,
        n_classes=data.n_classes, acgan=ac_model, stored_model=lambda judge: stored_model(judge, data, store, device), cache=cache,
        model_source=ModelSource(
            cfg.model_dump(mode="json"), tuple(data.input_shape), data.n_classes, study.store_uri,
            None if cfg.checkpoint is not None else model_key(cfg.model_dump(mode="json"), fingerprint), cfg.checkpoint, study.workdir, tuple(study.code_folders),
        ),
    )
    eval_start = time.perf_counter()
    # A stochastic model's dropout masks come from torch's global generator: each piece of work
    # starts it from the trial's seed, so numbers do not depend on what ran before in the worker.
    with seeded(device, cfg.seed, "clean"):
        ctx.correct
    capabilities = models.entry(cfg.model).capabilities
    for axes in spec.evaluate:
        if axes.scope != "trial" or not axes.some_model_needs() <= capabilities:
            continue  # a study evaluator, or one for models of another kind (planning counts no rows for them)
        with seeded(device, cfg.seed, "evaluate", json.dumps(axes.model_dump(mode="json"), sort_keys=True)):
            rows += evaluated(ctx, axes, cache)
    eval_s = time.perf_counter() - eval_start
    if gen_meta:
        for row in rows:
            if row["evaluator"] in ("natural", "reconstruction") or row.get("attack") == "natural":
                row.update(generative_key=gen_meta["key"], gan_steps=spec.generative.steps)
    _fill(rows, study, cfg, tid, name, meta["train_s"], from_store, device)
    for row in rows:
        row.update(set_meta, checkpoint_sha256=meta.get("checkpoint_sha256"))
    check_rows(rows, planning.rows_per_trial(spec, cfg.model_dump(mode="json")), f"trial {tid} ({name})")
    final = {
        "advsweep_trial_id": tid,  # Tune fills its own `trial_id` into every result
        "label": name,
        "epoch": cfg.epochs,  # the scheduler's clock (see jobs.search.scheduler)
        "from_store": from_store,
        "checkpoint": cfg.checkpoint,
        "train_s": meta["train_s"],
        "eval_s": eval_s,
        "rows": len(rows),
        "clean_acc": ctx.clean_acc,
        **cache.stats,
        "eval_keys": ",".join(sorted(cache.used)),
    }
    final.update({f"robust_acc@{r['attack']}-{r['norm']}-{r['eps']:g}": r["robust_acc"] for r in rows if r["evaluator"] == "robustness" and r.get("eps_rule") is None})
    results.write_trial(study.results_uri, tid, rows, final)
    print(f"advsweep trial {tid} ({name}): wrote {len(rows)} rows", flush=True)
    report(final)


def evaluated(ctx: evaluators.EvalContext, axes, cache: evalstore.Bound) -> list[dict]:
    """One evaluator entry's rows against the trial's model: from the evaluation store when an
    earlier sweep computed the same entry on the same model and data with the same code (its
    artifacts written again here), else computed and stored, atomically, once it has finished."""
    key = cache.key("units", evalstore.settings(axes))
    found = None if cache.fresh else cache.store.load_unit(key)
    if found is not None:
        rows, arts, uses = found
        cache.used |= set(uses)
        for name, table in arts:
            artifacts.write(ctx.results_uri, name, ctx.trial_id, table)
        cache.count("units_reused")
        return [{**r, "eval_from_store": True} for r in rows]
    before = set(cache.used)
    ctx.captured = []
    try:
        rows = evaluators.run(ctx, axes)
        arts = ctx.captured
    finally:
        ctx.captured = None
    cache.store.save_unit(key, rows, arts, cache.used - before - {key})
    cache.count("units_computed")
    return [{**r, "eval_from_store": False} for r in rows]


@contextlib.contextmanager
def seeded(device, seed: int, *stream):
    """torch's global generators (CPU, and the trial's GPU) seeded for one piece of work, and
    restored afterwards."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(stream_seed(seed, *stream))
        yield


def check_rows(rows: list[dict], expected: int | None, where: str) -> None:
    """Every row has its own key and none is missing (None: an evaluator of the user's does not
    say how many it writes): a collision would make compaction drop a row without a word."""
    keys = [r["row_key"] for r in rows]
    if len(set(keys)) != len(keys):
        dup = next(r for r in rows if keys.count(r["row_key"]) > 1)
        point = ", ".join(f"{c}={dup.get(c)}" for c in ("evaluator", "attack", "norm", "eps") if dup.get(c) is not None)
        raise RuntimeError(f"{where}: {len(keys) - len(set(keys))} rows share a row key with another row ({point}); the spec must tell them apart")
    if expected is not None and len(rows) != expected:
        raise RuntimeError(f"{where}: computed {len(rows)} rows where the spec plans {expected}")


def _fill(rows: list[dict], study: StudyContext, cfg: TrainConfig, tid: str, name: str, train_s, from_store: bool, device) -> None:
    """Complete evaluator rows with the trial's identity, training axes, cost and provenance."""
    common = dict(
        study=study.spec.name,
        trial_id=tid,
        label=name,
        **training_columns(cfg, study.spec),
        train_s=train_s,
        from_store=from_store,
        device=str(device),
        node_id=_node_id(),
        created_at=datetime.now(timezone.utc),
        **study.provenance,
    )
    for row in rows:
        row.update(common)
        row["row_key"] = results.row_key(tid, row)


def prepare_generative(study: StudyContext, data: Dataset) -> dict:
    """Before the trials: the study's generative model from the store, or trained and stored now,
    once per dataset and config; its sample grid (G(z), z ~ N(0, I)) and reconstruction grid
    (test images above G(I(x))) go to generative/ under the results. Returns its metadata."""
    imports.add_folders(study.code_folders)
    spec = study.spec
    torch.set_num_threads(max(1, int(spec.resources.cpu)))
    device = select_device(spec.resources.device, spec.resources.gpu)
    model, meta = generative.trained(spec.generative, _tensor(data.x_train, device), data.fingerprint, ModelStore(study.store_uri))
    x = _tensor(data.x_test[:32], device)
    z = torch.randn(64, model.latent_dim, generator=torch.Generator().manual_seed(spec.generative.seed)).to(device)
    recon = model.reconstruct(x)
    grids = {
        "samples.png": generative.image_grid(model.generate(z), cols=8),
        "reconstructions.png": generative.image_grid(torch.cat([torch.stack([x[i : i + 8], recon[i : i + 8]]).flatten(0, 1) for i in range(0, len(x), 8)]), cols=8),
    }
    fs, base = fsio.resolve(study.results_uri)
    for name, png in grids.items():
        fsio.write_atomic(fs, fsio.join(base, "generative", name), png)
    return meta


def trained_model(cfg: TrainConfig, data: Dataset, fingerprint: str, store: ModelStore, fit, held_out, announce=None, on_epoch=None, study: StudyContext | None = None):
    """The model of ``cfg`` trained on ``fit`` = (x, y) (whose identity is ``fingerprint``):
    from the store, or trained now and stored; or, with a checkpoint, its weights as they are
    (never trained or stored here). Returns (model, metadata, from_store)."""
    model = init_model(cfg, data.input_shape, data.n_classes).to(held_out[0].device)
    if cfg.checkpoint is not None:
        uri = study.checkpoint_uri(cfg.checkpoint) if study else cfg.checkpoint
        if announce:
            announce(f"checkpoint {cfg.checkpoint}")
        return model, {"train_s": None, "checkpoint_sha256": checkpoints.load_into(model, uri)}, False
    key = model_key(cfg.model_dump(mode="json"), fingerprint)
    meta = store.load(key, model)
    from_store = meta is not None
    if announce:
        announce("model from the store" if from_store else "training")
    if not from_store:
        if cfg.members is not None:
            meta = _ensemble(model, cfg, data, fingerprint, store, fit, held_out, announce, study)
        else:
            meta = {"train_s": train(model, cfg, *fit, *held_out, on_epoch=on_epoch)["train_s"]}
        store.save(key, model, meta)
    return model, meta, from_store


def _ensemble(model, cfg: TrainConfig, data, fingerprint, store, fit, held_out, announce, study) -> dict:
    """An ensemble's members, each from the store (a trial of the same config, or an earlier
    ensemble, trained it) or trained now on its own and stored under its own key; their
    weights go into ``model``. Returns the ensemble's metadata (train_s: the members trained here)."""
    train_s, stored = 0.0, 0
    for i, member_cfg in enumerate(cfg.member_configs()):
        say = (lambda source, i=i: announce(f"member {i}: {source}")) if announce else None
        member, meta, from_store = trained_model(member_cfg, data, fingerprint, store, fit, held_out, say, study=study)
        model.members[i].load_state_dict(member.state_dict())
        train_s += 0.0 if from_store else meta["train_s"]
        stored += from_store
    return {"train_s": train_s, "members_from_store": stored}


def stored_model(cfg: TrainConfig, data: Dataset, store: ModelStore, device) -> torch.nn.Module:
    """A model the study trained before the trials (a judge), from the store, in eval mode."""
    model = init_model(cfg, data.input_shape, data.n_classes).to(device)
    key = model_key(cfg.model_dump(mode="json"), data.fingerprint)
    if store.load(key, model) is None:
        raise RuntimeError(f"model {key} ({label(cfg, [])}) is not in the store {store.uri}; jobs.sweep trains it before the trials")
    return model.eval()


def prepare_acgan(study: StudyContext, data: Dataset) -> dict:
    """Before the trials: the study's AC-GAN and every judge an evaluator names, from the store
    or trained and stored now; the AC-GAN's class grid goes to generative/acgan-samples.png.
    Returns the AC-GAN's metadata."""
    imports.add_folders(study.code_folders)
    spec = study.spec
    torch.set_num_threads(max(1, int(spec.resources.cpu)))
    device = select_device(spec.resources.device, spec.resources.gpu)
    store = ModelStore(study.store_uri)
    tensors = tuple(_tensor(a, device) for a in (data.x_train, data.y_train, data.x_test, data.y_test))
    model, meta = acgan.trained(spec.acgan, tensors[0], tensors[1], data.n_classes, data.fingerprint, store)
    fs, base = fsio.resolve(study.results_uri)
    fsio.write_atomic(fs, fsio.join(base, "generative", "acgan-samples.png"), acgan.class_grid(model, 8, spec.acgan.seed))
    for judge in (j for e in spec.evaluate for j in e.judges()):
        announce = lambda source, judge=judge: print(f"judge ({label(judge, [])}{', ' + adversarial_name(judge.adversarial.attack, judge.adversarial.norm, judge.adversarial.eps, judge.adversarial.alpha) if judge.adversarial else ''}): {source}", flush=True)
        trained_model(judge, data, data.fingerprint, store, tensors[:2], tensors[2:], announce, study=study)
    return meta


def _source(spec: StudySpec, which: str, data: Dataset, store: ModelStore, tensors) -> torch.nn.Module:
    cfg = getattr(spec.features, which)
    x, y, x_eval, y_eval = tensors
    announce = lambda source: print(f"features: {which} source ({label(cfg, [])}{', ' + adversarial_name(cfg.adversarial.attack, cfg.adversarial.norm, cfg.adversarial.eps, cfg.adversarial.alpha) if cfg.adversarial else ''}): {source}", flush=True)
    model, _, _ = trained_model(cfg, data, data.fingerprint, store, (x, y), (x_eval, y_eval), announce)
    return model.eval()


def prepare_features(study: StudyContext, data: Dataset) -> list[dict]:
    """Before the trials: the ``features:`` source models (from the store or trained), and every
    training set the grid names, built once (from the store on a repeat); each set's sample grid
    goes to features/<key>.png and the list of sets to features/sets.json. Returns that list."""
    imports.add_folders(study.code_folders)
    spec = study.spec
    torch.set_num_threads(max(1, int(spec.resources.cpu)))
    device = select_device(spec.resources.device, spec.resources.gpu)
    store = ModelStore(study.store_uri)
    tensors = tuple(_tensor(a, device) for a in (data.x_train, data.y_train, data.x_test, data.y_test))
    x, y = tensors[:2]
    sources = {}
    fs, base = fsio.resolve(study.results_uri)
    entries = []
    for train_set in spec.train_sets():
        which = features.source_name(train_set.kind)
        if which not in sources:
            sources[which] = _source(spec, which, data, store, tensors)
        key = features.set_key(spec, train_set, data.fingerprint)
        matched = None
        if train_set.kind == "shuffled":
            of = features.matched_set(train_set)
            matched = features.built(of, features.set_key(spec, of, data.fingerprint), sources[which], x, y, data.n_classes, spec.seed, store)[0]
        xs, ys, meta = features.built(train_set, key, sources[which], x, y, data.n_classes, spec.seed, store, matched=matched)
        fsio.write_atomic(fs, fsio.join(base, "features", f"{key}.png"), features.sample_grid(x, xs, ys, y))
        entries.append({"name": features.name(train_set), **train_set.model_dump(mode="json"), "key": key, "source": which, **meta})
        print(f"features: {entries[-1]['name']} ({key}): {'from the store' if meta['from_store'] else 'built in %.0f s' % meta['build_s']}", flush=True)
    if any(e.evaluator == "features" for e in spec.evaluate) and "standard" not in sources:
        _source(spec, "standard", data, store, tensors)
    fsio.write_atomic(fs, fsio.join(base, "features", "sets.json"), json.dumps(entries, indent=2).encode())
    return entries


def run_study_evaluators(study: StudyContext, data: Dataset, configs: list[dict]) -> int:
    """After the trials: the study evaluators (``scope = "study"``: transfer, embedding-transfer,
    features, gaussian, or one of yours) over the models of the finished trials (``configs``:
    their resolved training configs), loaded from the store. Writes study/<evaluator>.parquet
    under the results; returns the number of rows."""
    imports.add_folders(study.code_folders)
    spec = study.spec
    torch.set_num_threads(max(1, int(spec.resources.cpu)))
    device = select_device(spec.resources.device, spec.resources.gpu)
    swept = spec.label_axes()
    store = ModelStore(study.store_uri)
    members, trained = [], {}
    for raw in configs:
        cfg = TrainConfig.model_validate(raw)
        model = init_model(cfg, data.input_shape, data.n_classes).to(device)
        if cfg.checkpoint is not None:
            meta = {"train_s": None, "checkpoint_sha256": checkpoints.load_into(model, study.checkpoint_uri(cfg.checkpoint))}
        else:
            meta = store.load(model_key(cfg.model_dump(mode="json"), features.fit_fingerprint(spec, cfg.train_set, data.fingerprint)), model)
        if meta is None:
            raise RuntimeError(f"study evaluators: the model of trial {trial_id(spec.name, cfg)} is not in the store {study.store_uri}")
        member = evaluators.Member(trial_id(spec.name, cfg), label(cfg, swept), model.eval())
        members.append(member)
        trained[member.trial_id] = (cfg, member.label, meta)

    def standard_source() -> evaluators.Member:
        cfg = spec.features.standard
        model = init_model(cfg, data.input_shape, data.n_classes).to(device)
        key = model_key(cfg.model_dump(mode="json"), data.fingerprint)
        if store.load(key, model) is None:
            raise RuntimeError(f"features: the standard source model {key} is not in the store {study.store_uri}")
        return evaluators.Member(key, f"source {label(cfg, [])}", model.eval())

    ctx = evaluators.StudyEvalContext(members, _tensor(data.x_test, device), _tensor(data.y_test, device), spec.seed, study.results_uri, standard_source)
    by_evaluator = {}
    for axes in spec.evaluate:
        if axes.scope == "study":
            by_evaluator.setdefault(axes.evaluator, []).extend(evaluators.run(ctx, axes))
    for name, rows in by_evaluator.items():
        for tid, (cfg, trial_label, meta) in trained.items():
            mine = [r for r in rows if r["trial_id"] == tid]
            _fill(mine, study, cfg, tid, trial_label, meta["train_s"], cfg.checkpoint is None, device)
            for r in mine:
                r["checkpoint_sha256"] = meta.get("checkpoint_sha256")
    planned = planning.study_rows(spec, configs)
    check_rows([r for rows in by_evaluator.values() for r in rows], planned, "study evaluators")
    for name, rows in by_evaluator.items():
        if rows:
            results.write_study_rows(study.results_uri, name, rows)
    return sum(len(rows) for rows in by_evaluator.values())


def _node_id() -> str | None:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
