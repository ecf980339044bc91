"""Evaluation work by content hash, beside the model store: a rerun costs what changed.

Three kinds of entry live under ``<store>/evals/``, each written atomically (a killed run leaves
no entry, only a temporary file nothing reads) and keyed by everything that makes it: the
model (its store key, or a checkpoint's sha256 with its architecture), the data (the training
split's fingerprint and the evaluation split's), the trial seed, and the code (every source
file of the study package, the user's modules the spec imports, and torch's version):

* ``units/<key>.zip``: one evaluator entry against one model (its resolved settings in the
  key): the rows it returned and the artifacts it wrote. A later sweep of any spec with the
  same entry, model and data takes them as they are.
* ``facts/<key>.parquet``: for an attack whose outcome at a radius does not depend on the
  other radii of the ladder (study.evaluators.attack_store), every (point, eps) it
  attacked: fooled or not, the adversarial's sizes, the queries. A ladder with a new eps, or a
  cascade whose earlier attacks changed, attacks only the (point, eps) pairs no run attacked
  before, and the rows equal a fresh run's (the fresh ladder visits the same pairs in the same
  order and stops at the same success).
  The Square probe is assembled from its search's facts too.
* ``runs/<key>.npz``: an attack whose run depends on its whole ladder (FAB-T's stop at each
  point's smallest eps, C&W's one search), stored as one call: reused only when its inputs
  (ladder, points, cascade levels) are the same, else recomputed.

A file that does not parse is reported and recomputed; an I/O error reading one is raised.
``<store>/refs/`` records which entries each results folder's last sweep used, so
``advsweep store gc`` can drop those no results folder references.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import sys
import time
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from study import fsio

KINDS = {"units": ".zip", "facts": ".parquet", "runs": ".npz"}


@lru_cache(maxsize=None)
def code_version(user_paths: tuple[str, ...] = ()) -> str:
    """Every source file of the study package, the modules of the user's import paths, and
    torch's version: a change to any of them makes new keys (conservative by design)."""
    import torch

    here = Path(__file__).parent
    h = hashlib.sha256(torch.__version__.encode())
    for path in sorted(here.rglob("*.py")):
        h.update(str(path.relative_to(here)).encode())
        h.update(path.read_bytes())
    for module in sorted({p.split(":")[0] for p in user_paths}):
        found = importlib.util.find_spec(module)
        origin = found.origin if found else None
        h.update(module.encode())
        if origin and Path(origin).is_file():
            h.update(Path(origin).read_bytes())
    return h.hexdigest()[:16]


def settings(axes) -> dict:
    """An evaluator entry's settings as its unit key holds them: all but how it runs (``execution``)."""
    return axes.model_dump(mode="json", exclude=set(axes.execution))


def digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def tensor_digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def identity(spec, cfg, data, fit_fingerprint: str, checkpoint_sha256: str | None) -> dict:
    """What every evaluation entry of a trial depends on besides its own settings: the model
    (its store key; for a checkpoint, the weights' sha256 and the architecture), the data (the
    training split, the evaluation split, the classes), the trial seed, the study's generative
    models where it has them, and the code."""
    from study.store import model_key

    raw = cfg.model_dump(mode="json")
    if checkpoint_sha256 is not None:
        model = {"weights": checkpoint_sha256, "config": {k: v for k, v in raw.items() if k != "checkpoint"}}
    else:
        model = model_key(raw, fit_fingerprint)
    out = dict(model=model, data=[data.fingerprint, data.eval_fingerprint, data.n_classes], seed=cfg.seed, code=code_version(tuple(spec.import_paths())))
    if spec.needs_generative:
        from study.generative import generative_key

        out["generative"] = generative_key(spec.generative, data.fingerprint)
    if spec.needs_acgan:
        from study.acgan import acgan_key

        out["acgan"] = acgan_key(spec.acgan, data.fingerprint)
    return out


class EvalStore:
    """The evaluation entries of a store (local folder or s3:// URI)."""

    def __init__(self, uri: str):
        self.uri = uri
        self.fs, self.base = fsio.resolve(uri)

    def path(self, kind: str, key: str) -> str:
        return fsio.join(self.base, "evals", kind, key + KINDS[kind])

    def has(self, kind: str, key: str) -> bool:
        return fsio.exists(self.fs, self.path(kind, key))

    def _read(self, kind: str, key: str) -> bytes | None:
        path = self.path(kind, key)
        if not fsio.exists(self.fs, path):
            return None
        try:
            return fsio.read_bytes(self.fs, path)
        except OSError as e:
            raise OSError(f"evaluation store: cannot read {path}: {e}") from e

    def _corrupt(self, kind: str, key: str, e: Exception) -> None:
        print(f"advsweep: corrupt evaluation store entry {self.path(kind, key)} ({type(e).__name__}: {e}); recomputing it", file=sys.stderr)

    # units: one evaluator entry's rows and artifacts
    def load_unit(self, key: str) -> tuple[list[dict], list[tuple[str, pa.Table]], list[str]] | None:
        """The entry's rows, its artifacts (name, table) in the order written, and the keys of
        the facts and runs it was computed from."""
        raw = self._read("units", key)
        if raw is None:
            return None
        try:
            with zipfile.ZipFile(io.BytesIO(raw)) as z:
                blob = json.loads(z.read("unit.json"))
                arts = [(name, pq.read_table(io.BytesIO(z.read(f"artifacts/{i}.parquet")))) for i, name in enumerate(blob["artifacts"])]
            rows, uses = blob["rows"], blob["uses"]
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise ValueError("its rows are not a list of rows")
        except Exception as e:  # truncated or not ours
            self._corrupt("units", key, e)
            return None
        return rows, arts, uses

    def save_unit(self, key: str, rows: list[dict], artifacts: list[tuple[str, pa.Table]], uses: list[str]) -> None:
        from study.results import parquet_bytes

        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("unit.json", json.dumps({"rows": [_plain(r) for r in rows], "artifacts": [name for name, _ in artifacts], "uses": sorted(uses)}))
            for i, (name, table) in enumerate(artifacts):
                z.writestr(f"artifacts/{i}.parquet", parquet_bytes(table))
        fsio.write_atomic(self.fs, self.path("units", key), buf.getvalue())

    # facts: (point, eps) outcomes of a standalone attack
    def load_facts(self, key: str) -> pa.Table | None:
        raw = self._read("facts", key)
        if raw is None:
            return None
        try:
            table = pq.read_table(io.BytesIO(raw))
            if table.schema.names != FACTS_SCHEMA.names:
                raise ValueError(f"columns {table.schema.names}")
        except Exception as e:
            self._corrupt("facts", key, e)
            return None
        return table

    def save_facts(self, key: str, table: pa.Table) -> None:
        from study.results import parquet_bytes

        fsio.write_atomic(self.fs, self.path("facts", key), parquet_bytes(table))

    # runs: one whole attack call
    def load_run(self, key: str) -> dict[str, np.ndarray] | None:
        raw = self._read("runs", key)
        if raw is None:
            return None
        try:
            with np.load(io.BytesIO(raw), allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except Exception as e:
            self._corrupt("runs", key, e)
            return None

    def save_run(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        fsio.write_atomic(self.fs, self.path("runs", key), buf.getvalue())

    # housekeeping
    def entries(self) -> list[dict]:
        """Every file of the store (models and evaluation entries), with its kind, key, size and time."""
        from pyarrow import fs as pafs

        out = []
        for folder, kind in (("models", "models"), *((f"evals/{k}", k) for k in KINDS)):
            root = fsio.join(self.base, folder)
            if self.fs.get_file_info(root).type != pafs.FileType.Directory:
                continue
            for info in self.fs.get_file_info(pafs.FileSelector(root)):
                name = info.path.rsplit("/", 1)[1]
                if info.type != pafs.FileType.File or name.startswith(".tmp-"):
                    continue
                mtime = info.mtime.timestamp() if info.mtime else None
                out.append({"kind": kind, "key": name.split(".")[0], "bytes": info.size, "mtime": mtime, "path": info.path})
        return out

    def write_ref(self, results_uri: str, keys: set[str]) -> None:
        """Which evaluation entries the last sweep into ``results_uri`` used."""
        blob = {"results": results_uri, "keys": sorted(keys), "written_at": time.time()}
        fsio.write_atomic(self.fs, fsio.join(self.base, "refs", digest(results_uri) + ".json"), json.dumps(blob).encode())

    def refs(self) -> list[dict]:
        from pyarrow import fs as pafs

        root = fsio.join(self.base, "refs")
        if self.fs.get_file_info(root).type != pafs.FileType.Directory:
            return []
        out = []
        for info in self.fs.get_file_info(pafs.FileSelector(root)):
            if info.type == pafs.FileType.File and info.path.endswith(".json"):
                out.append({**json.loads(fsio.read_bytes(self.fs, info.path)), "path": info.path})
        return out

    def gc(self, dry_run: bool = False) -> tuple[list[dict], list[str]]:
        """Drop the evaluation entries no live results folder references (one whose manifest
        exists and whose last sweep recorded them). Models stay. Returns (dropped, live folders)."""
        live, keep = [], set()
        for ref in self.refs():
            fs, base = fsio.resolve(ref["results"])
            if fsio.exists(fs, fsio.join(base, "manifest.json")):
                live.append(ref["results"])
                keep |= set(ref["keys"])
            elif not dry_run:
                self.fs.delete_file(ref["path"])  # its results folder is gone
        dropped = [e for e in self.entries() if e["kind"] in KINDS and e["key"] not in keep]
        if not dry_run:
            for e in dropped:
                self.fs.delete_file(e["path"])
        return dropped, live


FACTS_SCHEMA = pa.schema([
    ("point", pa.int64()),  # index in the evaluation split
    ("eps", pa.float64()),  # the radius as the spec gives it
    ("fooled", pa.bool_()),
    ("dist", pa.float64()),  # the adversarial's size in the threat norm (fooled only)
    ("l2", pa.float64()),
    ("linf", pa.float64()),
    ("confidence", pa.float64()),
    ("queries", pa.int64()),  # null for attacks that do not count them
    ("complete", pa.bool_()),  # false: a Square probe that found nothing (its first proposals failed)
])


def _plain(row: dict) -> dict:
    """A row as JSON can hold it exactly (numpy scalars as Python numbers)."""
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}


@dataclass
class Bound:
    """The store bound to one trial's model, data, seed and code: the keys of its entries, and
    counts of what this trial took from the store and what it computed."""

    store: EvalStore
    identity: dict  # model, data, seed, code
    fresh: bool = False  # --fresh: compute everything (and store it again)
    used: set = field(default_factory=set)
    stats: dict = field(default_factory=lambda: dict(units_reused=0, units_computed=0, pairs_reused=0, pairs_attacked=0, runs_reused=0, runs_computed=0))

    def key(self, kind: str, *parts) -> str:
        k = digest(kind, self.identity, *parts)
        self.used.add(k)
        return k

    def count(self, name: str, n: int = 1) -> None:
        self.stats[name] += n
