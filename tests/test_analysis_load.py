"""analysis.load: finished and running sweeps, local paths and URIs, clear errors."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.load import ResultsError, adversarial_name, load, read_manifest
from study import results


def rows(trial: str, adv: dict | None = None, eps=(0.0, 0.1)) -> list[dict]:
    adv = adv or {}
    out = []
    for e in eps:
        r = dict(study="s", trial_id=trial, label=trial, model="cnn", evaluator="robustness", attack="pgd", norm="linf", eps=e, clean_acc=0.9, robust_acc=0.9 - e, **adv)
        r["row_key"] = results.row_key(trial, r)
        out.append(r)
    return out


FGSM = dict(adv_attack="fgsm", adv_norm="linf", adv_eps=0.1, adv_alpha=0.5)


def test_running_sweep_reads_trial_files(tmp_path):
    uri = str(tmp_path / "res")
    results.write_trial(uri, "t1", rows("t1"))
    results.write_trial(uri, "t2", rows("t2", FGSM))
    (tmp_path / "res" / "trials" / ".tmp-abc-t3.parquet").write_bytes(b"half written")
    df = load(uri).collect()
    assert sorted(df.get_column("trial_id").to_list()) == ["t1", "t1", "t2", "t2"]
    assert dict(df.select("trial_id", "adversarial").unique().iter_rows()) == {"t1": "none", "t2": "fgsm-linf-0.1"}
    assert read_manifest(uri) is None


def test_finished_sweep_reads_results_parquet_only(tmp_path):
    uri = str(tmp_path / "res")
    results.write_trial(uri, "t1", rows("t1"))
    results.compact(uri)
    results.write_trial(uri, "t9", rows("t9"))  # left by another spec: not in the compacted results
    results.write_manifest(uri, {"study": "s", "trials": []})
    assert load(uri).collect().get_column("trial_id").unique().to_list() == ["t1"]
    assert read_manifest(uri)["study"] == "s"


def test_pyarrow_filesystem_uri(tmp_path):
    results.write_trial(str(tmp_path / "res"), "t1", rows("t1"))
    assert load((tmp_path / "res").as_uri()).collect().height == 2


@pytest.mark.parametrize("make", [lambda p: None, lambda p: (p / "trials").mkdir(parents=True)], ids=["missing", "empty"])
def test_folder_without_results_fails_clearly(tmp_path, make):
    folder = tmp_path / "nothing"
    make(folder)
    with pytest.raises(ResultsError, match=r"nothing: no results here") as err:
        load(folder)
    assert isinstance(err.value, ValueError) and "\n" not in str(err.value)


def test_other_schema_version_fails_clearly(tmp_path):
    folder = tmp_path / "old"
    (folder / "trials").mkdir(parents=True)
    pq.write_table(pa.table({"x": [1]}).replace_schema_metadata({b"advsweep.schema_version": b"0"}), folder / "trials" / "t.parquet")
    with pytest.raises(ResultsError, match=r"^\S*old: .*version '0'") as err:
        load(str(folder))
    assert "\n" not in str(err.value)


def test_adversarial_name_matches_labels():
    assert adversarial_name(None, None, None, None) == "none"
    assert adversarial_name("pgd", "l2", 1.0, 0.5) == "pgd-l2-1"
    assert adversarial_name("fgsm", "linf", 0.1, 0.3) == "fgsm-linf-0.1-a0.3"
