"""Result rows: one schema, deterministic keys, atomic per-trial files, compaction, docs in sync."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from study import results


def rows(trial, eps_values, acc=0.5):
    out = []
    for eps in eps_values:
        r = dict(study="s", trial_id=trial, evaluator="robustness", attack="pgd", norm="linf", eps=eps, steps=10, step_size=0.25, restarts=1, robust_acc=acc)
        r["row_key"] = results.row_key(trial, r)
        out.append(r)
    return out


def test_row_keys_are_deterministic_and_distinct():
    a, b = rows("t1", [0.1, 0.2]), rows("t1", [0.1, 0.2])
    assert [r["row_key"] for r in a] == [r["row_key"] for r in b]
    assert a[0]["row_key"] != a[1]["row_key"] != rows("t2", [0.2])[0]["row_key"]


def test_unknown_columns_are_refused():
    with pytest.raises(ValueError, match="robust_accuracy"):
        results.to_table([{"robust_accuracy": 1.0}])


def test_write_and_compact(tmp_path):
    uri = str(tmp_path / "res")
    results.write_trial(uri, "t1", rows("t1", [0.1, 0.2]))
    results.write_trial(uri, "t2", rows("t2", [0.1]))
    results.write_trial(uri, "t1", rows("t1", [0.1, 0.2], acc=0.25))  # a re-run replaces the file whole
    (tmp_path / "res" / "trials" / ".tmp-dead-t3.parquet").write_bytes(b"half written")  # a crash leftover
    path, compacted = results.compact(uri)
    table = pq.read_table(path)
    assert compacted.num_rows == table.num_rows == 3
    assert sorted(table.column("robust_acc").to_pylist()) == [0.25, 0.25, 0.5]
    assert table.schema.metadata[b"advsweep.schema_version"] == results.SCHEMA_VERSION.encode()


def test_reading_another_schema_version_fails_clearly(tmp_path):
    import pyarrow as pa

    path = tmp_path / "old.parquet"
    pq.write_table(pa.table({"x": [1]}).replace_schema_metadata({b"advsweep.schema_version": b"0"}), path)
    import pyarrow.fs as pafs

    with pytest.raises(results.SchemaVersionError, match="version '0'"):
        results.read_table(pafs.LocalFileSystem(), str(path))


def test_docs_table_matches_schema():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "results-schema.md").read_text()
    assert results.schema_markdown() in doc


def test_compact_can_keep_only_this_sweeps_trials(tmp_path):
    uri = str(tmp_path / "res")
    results.write_trial(uri, "old", rows("old", [0.1]))
    results.write_trial(uri, "new", rows("new", [0.1, 0.2]))
    path, compacted = results.compact(uri, ["new"])
    assert compacted.num_rows == 2 and set(pq.read_table(path).column("trial_id").to_pylist()) == {"new"}


def test_row_keys_do_not_change_across_versions():
    # The key of this row as the code before evaluator-owned columns computed it: keys decide
    # what compaction keeps and what a resumed sweep finds, so a refactor must not move them.
    # Shared columns outside KEY_COLUMNS (targets, queries_budget, source_label) never join it.
    row = dict(
        evaluator="robustness", attack="apgd-t", attack_options="apgd-t(steps=100,targets=9)", ensemble="apgd-ce+apgd-t", cascade=True, norm="linf", eps=0.1,
        steps=100, step_size=2.0, restarts=1, targets=9, queries_budget=None, eot_samples=1, source_label=None, robust_acc=0.5, n_eval=100,
    )
    assert results.row_key("abc123", row) == "872c3a11aedd205a"
    # An evaluator's own evaluation column (calibration's bin count) tells its rows apart.
    cal = dict(evaluator="calibration", calibration_bins=10, ece=0.1)
    assert results.row_key("abc123", cal) != results.row_key("abc123", {**cal, "calibration_bins": 15})
