"""Read a study's results folder (local path or pyarrow.fs URI) into polars.

A finished sweep has ``results.parquet``; a running one only ``trials/*.parquet``, written
atomically as each trial ends. ``load`` reads whichever is there, so the same notebook or report
works while the sweep is still going.
"""

from __future__ import annotations

import json
import os

import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from study import fsio, results
from study.names import adversarial_name

ADV_COLUMNS = ("adv_attack", "adv_norm", "adv_eps", "adv_alpha")
# The spec's training axes as result columns (`adversarial` stands for the four adv_* columns).
TRAINING_AXES = (
    "dataset", "classes", "model", "pieces", "dropout", "margin", "triplet_loss", "hidden", "channels", "seed", "epochs", "lr", "lr_schedule", "batch_size", "weight_decay", "l2", "adversarial",
    "train_set",
)


class ResultsError(ValueError):
    """A results folder analysis cannot read; the message is one line and starts with the folder."""


def load(uri: str | os.PathLike) -> pl.LazyFrame:
    """The result rows of a study (columns: docs/results-schema.md) plus ``adversarial``.

    ``adversarial`` is the spec's `adversarial` axis as one string, spelled as in ``label``:
    ``none``, or ``fgsm-linf-0.1`` (with ``-a<alpha>`` when alpha is not 0.5), so it can be a
    chart colour or a heatmap axis like any other training axis.

    The files are read when ``load`` is called: the frame is a snapshot, and a running sweep's
    later trials appear on the next ``load``. Without ``results.parquet``, every trial file in
    ``trials/`` is read: a sweep's own, since a fresh run clears the folder first (jobs.sweep).
    """
    where = os.fspath(uri)
    fs, base = fsio.resolve(where)
    compacted = fsio.join(base, "results.parquet")
    files = [compacted] if fsio.exists(fs, compacted) else _trial_files(fs, base)
    try:
        tables = [results.read_table(fs, f) for f in files]
    except results.SchemaVersionError as e:
        raise ResultsError(f"{where}: {e}") from None
    frame = pl.from_arrow(pa.concat_tables(tables)) if tables else None
    if frame is None or frame.is_empty():
        raise ResultsError(f"{where}: no results here (neither results.parquet nor trials/*.parquet with rows)")
    # A re-run rewrites a trial's file whole, so a row_key can only repeat across files.
    frame = frame.unique(subset="row_key", keep="first", maintain_order=True)
    return _with_adversarial(frame).lazy()


def read_manifest(uri: str | os.PathLike) -> dict | None:
    """The sweep's manifest.json (spec, versions, trial states), or None before the sweep ends."""
    fs, base = fsio.resolve(os.fspath(uri))
    path = fsio.join(base, "manifest.json")
    return json.loads(fsio.read_bytes(fs, path)) if fsio.exists(fs, path) else None


def read_artifact(uri: str | os.PathLike, name: str) -> pl.DataFrame | None:
    """Every trial's artifact ``name`` (study.artifacts) in one frame, or None when no trial wrote one."""
    fs, base = fsio.resolve(os.fspath(uri))
    infos = fs.get_file_info(pafs.FileSelector(fsio.join(base, "artifacts", name), allow_not_found=True))
    files = sorted(f.path for f in infos if f.extension == "parquet" and not f.base_name.startswith(".tmp-"))
    if not files:
        return None
    return pl.from_arrow(pa.concat_tables([pq.read_table(f, filesystem=fs) for f in files]))


def eager(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Analysis functions take either kind of polars frame; they compute on a DataFrame."""
    return frame.collect() if isinstance(frame, pl.LazyFrame) else frame


def _trial_files(fs: pafs.FileSystem, base: str) -> list[str]:
    infos = fs.get_file_info(pafs.FileSelector(fsio.join(base, "trials"), allow_not_found=True))
    # .tmp-* files are writes in progress (study.fsio.write_atomic), never complete results.
    return sorted(f.path for f in infos if f.extension == "parquet" and not f.base_name.startswith(".tmp-"))


def _with_adversarial(frame: pl.DataFrame) -> pl.DataFrame:
    combos = frame.select(ADV_COLUMNS).unique()
    names = pl.Series("adversarial", [adversarial_name(*c) for c in combos.iter_rows()], dtype=pl.String)
    return frame.join(combos.with_columns(names), on=list(ADV_COLUMNS), how="left", nulls_equal=True, maintain_order="left")
