"""End to end on the real data: YAML -> Ray Tune trials -> Parquet, and the numbers the spine promises."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from study.results import SCHEMA_VERSION, schema
from study import planning
from study.spec import load_spec


def robust(df: pl.DataFrame, adv: bool, attack: str, norm: str, eps: float) -> float:
    sel = df.filter(
        (pl.col("adv_attack").is_null() != adv) & (pl.col("attack") == attack) & (pl.col("norm") == norm) & (pl.col("eps") == eps)
    )
    assert sel.height == 1, sel
    return sel["robust_acc"][0]


def test_results_have_one_row_per_trial_and_evaluation_point(numbers_sweep):
    spec = load_spec(numbers_sweep.spec)
    df = numbers_sweep.frame()
    assert df.height == planning.expected_rows(spec) == 2 * (5 + 3) * (2 + 1)  # trials x eps points x (attacks + worst)
    assert df["row_key"].n_unique() == df.height
    assert df["trial_id"].n_unique() == 2
    trial_files = sorted((numbers_sweep.results / "trials").glob("*.parquet"))
    assert len(trial_files) == 2
    assert sum(pl.read_parquet(f).height for f in trial_files) == df.height


def test_parquet_carries_schema_and_version(numbers_sweep):
    import pyarrow.parquet as pq

    table = pq.read_table(numbers_sweep.results / "results.parquet")
    assert table.schema.remove_metadata() == schema().remove_metadata()
    assert table.schema.metadata[b"advsweep.schema_version"].decode() == SCHEMA_VERSION


def test_manifest_records_trials_and_versions(numbers_sweep):
    manifest = json.loads((numbers_sweep.results / "manifest.json").read_text())
    assert manifest["study"] == "numbers" and manifest["rows"] == 48
    assert {t["status"] for t in manifest["trials"]} == {"TERMINATED"}
    assert manifest["torch_version"] and manifest["ray_version"] and manifest["spec"]["name"] == "numbers"


def test_standard_cnn_is_accurate_and_broken_by_pgd(numbers_sweep):
    df = numbers_sweep.frame()
    assert robust(df, False, "pgd", "linf", 0.0) >= 0.95  # clean accuracy
    assert robust(df, False, "pgd", "linf", 0.3) <= 0.05


def test_fgsm_training_buys_robustness_at_its_eps(numbers_sweep):
    df = numbers_sweep.frame()
    for attack in ("fgsm", "pgd"):
        assert robust(df, True, attack, "linf", 0.1) >= robust(df, False, attack, "linf", 0.1) + 0.10


def test_robust_accuracy_never_increases_with_eps(numbers_sweep):
    df = numbers_sweep.frame()
    for (_, _, _), g in df.group_by(["trial_id", "attack", "norm"]):
        accs = g.sort("eps")["robust_acc"].to_list()
        assert all(b <= a for a, b in zip(accs, accs[1:])), accs


def test_pgd_at_least_as_strong_as_fgsm_and_worst_is_the_minimum(numbers_sweep):
    df = numbers_sweep.frame()
    wide = df.pivot(on="attack", index=["trial_id", "norm", "eps"], values="robust_acc")
    assert (wide["pgd"] <= wide["fgsm"]).all()
    assert (wide["worst"] <= wide["pgd"]).all() and (wide["worst"] <= wide["fgsm"]).all()


def test_perturbations_stay_within_eps(numbers_sweep):
    df = numbers_sweep.frame().filter(pl.col("attack") != "worst")
    linf = df.filter(pl.col("norm") == "linf", pl.col("linf_mean").is_not_null())
    assert (linf["linf_mean"] <= linf["eps"] + 1e-6).all()
    l2 = df.filter(pl.col("norm") == "l2", pl.col("l2_mean").is_not_null())
    assert (l2["l2_mean"] <= l2["eps"] + 1e-5).all()


def test_second_run_trains_nothing_and_gives_identical_metrics(store_sweep, capsys):
    before = store_sweep.frame()
    code, out = store_sweep.run(capsys)
    assert code == 0
    assert "models: 0 trained, 2 from the store" in out
    after = store_sweep.frame()
    assert after["from_store"].all()
    cols = ["row_key", "clean_acc", "robust_acc", "success_rate", "l2_mean", "linf_mean"]
    assert before.select(cols).sort("row_key").equals(after.select(cols).sort("row_key"))


def test_goodfellow_logreg_fgsm_error(goodfellow_sweep):
    df = goodfellow_sweep.frame()
    at = df.filter(pl.col("eps") == 0.25, pl.col("attack") == "fgsm")
    assert at.height == 2 and (at["classes"] == "3,7").all()
    assert (at["clean_acc"] >= 0.95).all()  # 3 vs 7 is easy for a linear model ...
    assert (1 - at["robust_acc"] >= 0.90).all()  # ... and FGSM at eps .25 breaks it anyway


SHIPPED = sorted(p.name for p in (Path(__file__).resolve().parents[1] / "search_spaces").glob("*.yaml"))


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_specs_validate(name):
    from conftest import ROOT

    spec = load_spec(ROOT / "search_spaces" / name)
    assert planning.n_trials(spec) >= 1
    assert planning.expected_rows(spec) is None or planning.expected_rows(spec) > planning.n_trials(spec)


def test_corrupt_stored_model_is_retrained_not_used(store_sweep, capsys):
    before = store_sweep.frame()
    stored = sorted((store_sweep.results.parent / "store" / "models").glob("*.pt"))
    assert len(stored) == 2
    stored[0].write_bytes(stored[0].read_bytes()[:1000])  # a truncated checkpoint
    code, out = store_sweep.run(capsys)
    assert code == 0
    assert "models: 1 trained, 1 from the store" in out
    cols = ["row_key", "robust_acc"]
    assert before.select(cols).sort("row_key").equals(store_sweep.frame().select(cols).sort("row_key"))


def test_random_search_samples_training_axes(ray_session, tmp_path, capsys):
    from conftest import SPECS, Sweep

    sweep = Sweep(SPECS / "random.yaml", tmp_path / "results")
    code, out = sweep.run(capsys)
    assert code == 0
    df = sweep.frame()
    trials = df.unique("trial_id")
    assert trials.height == 4 and df.height == 4 * 2 * 2
    assert trials["weight_decay"].is_between(1e-5, 1e-2).all() and trials["weight_decay"].n_unique() == 4
    assert set(trials["model"]) <= {"logreg", "mlp"} and trials["epochs"].is_between(1, 3).all()


def _spec(tmp_path, name, evaluate, **extra):
    import yaml

    spec = {"name": name, "data": {"dataset": "digits"}, "train": {"model": {"grid": ["logreg", "mlp"]}, "epochs": 2}, "evaluate": evaluate, "resources": {"cpu": 1}, **extra}
    path = tmp_path / f"{name}-{len(list(tmp_path.glob('*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_two_robustness_entries_keep_every_row(ray_session, tmp_path, capsys):
    """FGSM and PGD in two entries at two eps: 8 rows per model. Their `worst` rows used to
    share keys (no attack settings in the key), so compaction kept 6 without a word; two C&W
    entries differing only in initial_c collided the same way."""
    from jobs.sweep import main

    eps = {"linf": {"eps": [0.1, 0.2]}}
    path = _spec(tmp_path, "entries", [
        {"evaluator": "robustness", "attacks": ["fgsm"], "norms": eps},
        {"evaluator": "robustness", "attacks": [{"name": "pgd", "steps": 5}], "norms": eps},
        {"evaluator": "robustness", "attacks": [{"name": "cw", "steps": 10, "search_steps": 2, "initial_c": 0.1}], "norms": {"l2": {"eps": [1.0]}}},
        {"evaluator": "robustness", "attacks": [{"name": "cw", "steps": 10, "search_steps": 2, "initial_c": 10.0}], "norms": {"l2": {"eps": [1.0]}}},
    ])
    capsys.readouterr()
    assert main([str(path), "--results", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out
    df = pl.read_parquet(tmp_path / "results" / "results.parquet")
    assert df.height == 2 * (8 + 4) and df["row_key"].n_unique() == df.height
    assert "rows: 24 (2 trials)" in out
    worst = df.filter(pl.col("attack") == "worst", pl.col("norm") == "linf")
    assert sorted(worst["ensemble"].unique().to_list()) == ["fgsm", "pgd"]
    assert df.filter(pl.col("attack") == "cw")["attack_options"].n_unique() == 2


def test_a_results_folder_belongs_to_one_study(ray_session, tmp_path, capsys):
    """Another study's folder is refused (one line, exit 2, nothing touched) unless --overwrite;
    a new run of the same study drops what the last run left (its study evaluators' rows, trial
    files of configs it no longer has), so neither results.parquet nor a report made while it
    runs mixes the two."""
    from jobs.sweep import main

    results = tmp_path / "results"
    first = _spec(tmp_path, "alpha", [{"evaluator": "robustness", "attacks": ["fgsm"], "norms": {"linf": {"eps": [0.1]}}}, {"evaluator": "transfer", "eps": [0.1]}])
    assert main([str(first), "--results", str(results)]) == 0
    before = sorted(p.name for p in results.rglob("*.parquet"))
    assert "transfer.parquet" in before

    other = _spec(tmp_path, "beta", [{"evaluator": "rubbish", "samples": 50}])
    capsys.readouterr()
    assert main([str(other), "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds study 'alpha'" in err and "--overwrite" in err
    assert sorted(p.name for p in results.rglob("*.parquet")) == before

    # The same study again, without its transfer evaluator and with one model fewer.
    again = _spec(tmp_path, "alpha", [{"evaluator": "robustness", "attacks": ["fgsm"], "norms": {"linf": {"eps": [0.1]}}}], train={"model": "mlp", "epochs": 2})
    assert main([str(again), "--results", str(results)]) == 0
    df = pl.read_parquet(results / "results.parquet")
    assert set(df["evaluator"]) == {"robustness"} and set(df["model"]) == {"mlp"}
    assert not (results / "study").exists() and len(list((results / "trials").glob("*.parquet"))) == 1

    assert main([str(other), "--results", str(results), "--overwrite"]) == 0
    df = pl.read_parquet(results / "results.parquet")
    assert set(df["study"]) == {"beta"} and set(df["evaluator"]) == {"rubbish"}
