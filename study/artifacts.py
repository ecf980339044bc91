"""Per-trial artifacts: tables an evaluator keeps beside the result rows, not in them.

Some evaluations produce more than one row of numbers per evaluation point: the 2-D projection
of hundreds of images onto a tilting plane, the pixels of a perturbation. They are written as
``artifacts/<name>/<trial_id>.parquet`` under the study's results URI, atomically and before
the trial's rows (which mark the trial done), so a resumed sweep never sees half of them.
``analysis.load.read_artifact`` reads one name over every trial.
"""

from __future__ import annotations

import pyarrow as pa

from study import fsio
from study.results import parquet_bytes


def write(results_uri: str, name: str, trial_id: str, columns: dict | pa.Table) -> str:
    """Write one trial's artifact ``name`` (columns: name -> list or array, or a table; a
    trial_id column is added)."""
    table = columns if isinstance(columns, pa.Table) else pa.table(columns)
    table = table.append_column("trial_id", pa.array([trial_id] * table.num_rows, type=pa.string()))
    fs, base = fsio.resolve(results_uri)
    path = fsio.join(base, "artifacts", name, f"{trial_id}.parquet")
    fsio.write_atomic(fs, path, parquet_bytes(table))
    return path
