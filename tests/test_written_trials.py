"""A trial whose rows are already written reports them again and computes nothing: a sweep resumed
after the driver died between a trial's write and Tune's next state save, or a worker lost right
after the write, must not evaluate that trial twice."""

from __future__ import annotations

import polars as pl
import pytest

from study import data, results
from study.spec import parse_spec
from study.trial import StudyContext, run_trial

SPEC = parse_spec({
    "name": "written", "data": {"dataset": "digits"},
    "train": {"model": "mlp", "epochs": 1},
    "evaluate": [{"evaluator": "robustness", "attacks": ["fgsm"], "norms": {"linf": {"eps": [0, 0.1]}}}],
    "resources": {"cpu": 1},
})


@pytest.fixture(scope="module")
def ds():
    return data.load(SPEC.data)


def run(tmp_path, ds):
    reports = []
    config = {name: axis.values[0] for name, axis in SPEC.train.items()}
    run_trial(config, ds, StudyContext(SPEC, str(tmp_path / "results"), str(tmp_path / "store")), report=reports.append)
    (trial,) = (tmp_path / "results" / "trials").glob("*.parquet")
    return reports[-1], trial


def numbers(trial):
    return pl.read_parquet(trial).sort("row_key").select("row_key", "clean_acc", "robust_acc")


def test_written_rows_are_reported_not_recomputed(tmp_path, ds, capsys):
    first, trial = run(tmp_path, ds)
    assert "wrote 4 rows" in capsys.readouterr().out
    rows, mtime = pl.read_parquet(trial), trial.stat().st_mtime_ns

    again, _ = run(tmp_path, ds)
    out = capsys.readouterr().out
    assert "rows kept from an earlier run" in out and "training" not in out and "from the store" not in out
    assert again == {**first, "kept": True}
    assert trial.stat().st_mtime_ns == mtime  # not rewritten
    assert pl.read_parquet(trial).equals(rows)


def test_a_damaged_or_other_version_trial_file_is_recomputed(tmp_path, ds, capsys, monkeypatch):
    first, trial = run(tmp_path, ds)
    rows = numbers(trial)
    trial.write_bytes(trial.read_bytes()[:100])  # cut short, as a copy interrupted outside advsweep
    assert results.written_trial(str(tmp_path / "results"), trial.stem) is None
    capsys.readouterr()
    again, _ = run(tmp_path, ds)
    assert "kept" not in again and "from the store" in capsys.readouterr().out
    assert numbers(trial).equals(rows)

    monkeypatch.setattr(results, "SCHEMA_VERSION", results.SCHEMA_VERSION + "-next")
    assert results.written_trial(str(tmp_path / "results"), trial.stem) is None


def test_compacted_results_carry_no_trial_report(tmp_path, ds):
    run(tmp_path, ds)
    path, table = results.compact(str(tmp_path / "results"))
    assert set(table.schema.metadata) == {b"advsweep.schema_version"}
