"""The evaluation store: a rerun computes only what changed, and its rows equal a fresh run's.

Unit level: the robustness evaluator against a small MLP, once with no store (the fresh run),
once on a first ladder and then through the store on a ladder with two radii more. Sweep level:
a second sweep takes every entry from the store; an evaluation that dies leaves no entry and
the next sweep computes that entry only; a corrupt entry is recomputed; --fresh recomputes;
--dry-run says what will be computed; `advsweep store` lists, sizes and cleans.
"""

from __future__ import annotations

import json

import polars as pl
import pytest
import yaml
from conftest import assert_same_rows, mnist_trained
from torch import nn

from study import evalstore
from study.evaluators import EvalContext, robustness
from study.evaluators.robustness import Options as RobustnessEval

N_EVAL = 120
FIRST = [0, 0.1, 0.3]
SECOND = [0, 0.05, 0.1, 0.15, 0.3]  # two radii more


@pytest.fixture(scope="module")
def mlp():
    model, x, y = mnist_trained(lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10)), epochs=2, lr=2e-3, batch=64)
    return model, x[:N_EVAL], y[:N_EVAL]


def evaluate(mlp, cache, linf, **entry):
    model, x, y = mlp
    axes = RobustnessEval.model_validate({"evaluator": "robustness", "norms": {"linf": {"eps": linf}, "l2": {"eps": [0, 1.0]}}, **entry})
    ctx = EvalContext(model=model, x=x, y=y, seed=0, x_train=None, y_train=None, trial_id="t", results_uri="unused", cache=cache)
    return robustness.evaluate(ctx, axes)


def bound(tmp_path):
    return evalstore.Bound(evalstore.EvalStore(str(tmp_path)), {"model": "mlp", "data": "first 120", "seed": 0, "code": "test"})


# Attacks whose outcome at a radius is that of a run at that radius alone: their pairs are facts.
ALONE = [{"name": "fgsm"}, {"name": "pgd", "steps": 10}, {"name": "apgd-ce", "steps": 20}, {"name": "apgd-t", "steps": 20, "targets": 3, "ladder": "top-down"}, {"name": "square", "queries": 150}]


def test_a_longer_ladder_attacks_only_the_new_radii_and_gives_a_fresh_runs_rows(mlp, tmp_path):
    fresh = evaluate(mlp, None, SECOND, attacks=ALONE)
    cache = bound(tmp_path)
    evaluate(mlp, cache, FIRST, attacks=ALONE)
    first = dict(cache.stats)
    assert first["pairs_attacked"] > 0 and first["pairs_reused"] == 0 and first["runs_computed"] == 0
    facts_before = {k: set(cache.store.load_facts(k).column("eps").to_pylist()) for k in cache.used}

    again = bound(tmp_path)
    rows = evaluate(mlp, again, SECOND, attacks=ALONE)
    assert_same_rows(rows, fresh)
    # Every pair attacked this time is at a new radius; the old radii all came from the store.
    attacked = again.stats["pairs_attacked"]
    assert attacked > 0 and again.stats["pairs_reused"] > 0
    new_pairs = 0
    for k in again.used:
        table = again.store.load_facts(k).to_pylist()
        for eps in {r["eps"] for r in table} - facts_before.get(k, set()):
            assert eps in (0.05, 0.15), eps
        new_pairs += sum(1 for r in table if r["eps"] in (0.05, 0.15))
    assert attacked == new_pairs
    # A third run of either ladder attacks nothing.
    third = bound(tmp_path)
    assert_same_rows(evaluate(mlp, third, SECOND, attacks=ALONE), fresh)
    assert third.stats["pairs_attacked"] == 0 and third.stats["pairs_reused"] == again.stats["pairs_reused"] + attacked


def test_the_default_cascade_through_the_store_equals_a_fresh_run(mlp, tmp_path):
    """APGD-CE, APGD-T and the Square probe (its search's facts) reuse their pairs across
    ladders and cascades; FMN and FMN-T, stored as whole runs, run again on the new ladder (their
    inputs changed): the rows are a fresh run's."""
    fresh = evaluate(mlp, None, SECOND)
    cache = bound(tmp_path)
    assert_same_rows(evaluate(mlp, cache, FIRST), evaluate(mlp, None, FIRST))
    again = bound(tmp_path)
    assert_same_rows(evaluate(mlp, again, SECOND), fresh)
    assert again.stats["pairs_reused"] > again.stats["pairs_attacked"] > 0 and again.stats["runs_computed"] == 2
    same = bound(tmp_path)
    assert_same_rows(evaluate(mlp, same, SECOND), fresh)
    assert same.stats["pairs_attacked"] == 0 and same.stats["pairs_reused"] > 0


@pytest.mark.parametrize("linf", [[0, 0.0002, 0.0005], [0, 0.1, 0.2]], ids=["probe finds nothing", "probe escalates"])
def test_a_square_probe_from_the_store_equals_a_fresh_probe(mlp, tmp_path, linf):
    """Square with a probe: at radii where the probe breaks nothing the run ends there (a probe
    that failed is kept as such); where it breaks enough points the full ladder runs. Through
    the store, after a plain Square and after a shorter probe, the rows are a fresh run's."""
    probe = [{"name": "square", "queries": 300, "probe": 60}]
    for before in ([{"name": "square", "queries": 300}], [{"name": "square", "queries": 300, "probe": 20}]):
        path = tmp_path / str(len(before[0]))
        evaluate(mlp, bound(path), linf[:2], attacks=before)
        cache = bound(path)
        rows = evaluate(mlp, cache, linf, attacks=probe)
        assert_same_rows(rows, evaluate(mlp, None, linf, attacks=probe))
        assert cache.stats["pairs_reused"] > 0
    broken = [r["broken"] for r in rows if r["norm"] == "linf" and r["eps"] > 0]
    assert (max(broken) == 0) == (linf[-1] < 0.01)


def test_fresh_ignores_the_store_and_a_corrupt_entry_is_recomputed(mlp, tmp_path, capsys):
    cache = bound(tmp_path)
    rows = evaluate(mlp, cache, FIRST, attacks=ALONE[:2])
    fresh = evalstore.Bound(cache.store, cache.identity, fresh=True)
    assert_same_rows(evaluate(mlp, fresh, FIRST, attacks=ALONE[:2]), rows)
    assert fresh.stats["pairs_reused"] == 0 and fresh.stats["pairs_attacked"] == cache.stats["pairs_attacked"]
    (path,) = [p for p in (tmp_path / "evals" / "facts").iterdir() if p.name.startswith(sorted(cache.used)[0])]
    path.write_bytes(path.read_bytes()[:50])
    again = bound(tmp_path)
    assert_same_rows(evaluate(mlp, again, FIRST, attacks=ALONE[:2]), rows)
    assert "corrupt evaluation store entry" in capsys.readouterr().err
    assert 0 < again.stats["pairs_attacked"] < cache.stats["pairs_attacked"]
    # A unit that does not parse is not used (recomputed by the trial), with one line naming it.
    store = cache.store
    store.save_unit("u", [{"robust_acc": 0.5}], [], [])
    assert store.load_unit("u") == ([{"robust_acc": 0.5}], [], [])
    (tmp_path / "evals" / "units" / "u.zip").write_bytes(b"PK truncated")
    assert store.load_unit("u") is None
    assert f"corrupt evaluation store entry {tmp_path}/evals/units/u.zip" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Sweeps

FAILING = '''
import os


def margin(ctx, flag: str = "", n_points: int = 20):
    """The mean logit margin of the first points; raises while the file ``flag`` exists."""
    if os.path.exists(flag):
        raise RuntimeError("killed mid-evaluation")
    z = ctx.model(ctx.x[:n_points])
    top2 = z.topk(2, dim=1).values
    return [{"margin_mean": float((top2[:, 0] - top2[:, 1]).mean())}]
'''


def write_spec(tmp_path, linf, flag):
    spec = {
        "name": "evalstore", "data": {"dataset": "digits"}, "seed": 0, "resources": {"cpu": 1},
        "train": {"model": {"grid": ["logreg", "mlp"]}, "epochs": 2},
        "evaluate": [
            {"evaluator": "robustness", "attacks": ["fgsm", {"name": "pgd", "steps": 10}], "norms": {"linf": {"eps": linf}}},
            {"evaluator": "evalstore_metrics:margin", "flag": str(flag)},
        ],
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def sweep(capsys, *args):
    from jobs.sweep import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def trials(results):
    return {t["label"]: t for t in json.loads((results / "manifest.json").read_text())["trials"]}


@pytest.mark.slow  # six small sweeps: about 80 s
def test_sweeps_reuse_entries_recompute_what_died_and_the_store_is_housekept(ray_session, tmp_path, capsys):
    from jobs import store as store_cmd
    from tests.user_modules import temporary_module

    flag, results, store = tmp_path / "die", tmp_path / "results", tmp_path / "store"
    with temporary_module(tmp_path, "evalstore_metrics", FAILING):
        spec = write_spec(tmp_path, [0, 0.1, 0.2], flag)
        # First sweep: the metric dies mid-evaluation in every trial, after the robustness entry.
        flag.write_text("")
        code, out = sweep(capsys, spec, "--results", results)
        assert code == 1
        units = list((store / "evals" / "units").glob("*.zip"))
        assert len(units) == 2  # one robustness entry per model; nothing of the metric's
        assert not list((store / "evals" / "units").glob(".tmp-*"))
        flag.unlink()

        code, out = sweep(capsys, spec, "--results", results)
        assert code == 0, out
        first = pl.read_parquet(results / "results.parquet")
        for t in trials(results).values():
            assert t["evaluation"]["units_reused"] == 1 and t["evaluation"]["units_computed"] == 1  # only the metric ran
        assert "1 entries from the store, 1 computed" in out
        assert first.filter(pl.col("evaluator") == "robustness")["eval_from_store"].all()
        assert not first.filter(pl.col("evaluator") != "robustness")["eval_from_store"].any()

        # Nothing changed: every entry from the store, rows equal.
        code, out = sweep(capsys, spec, "--results", results)
        assert code == 0
        second = pl.read_parquet(results / "results.parquet")
        for t in trials(results).values():
            assert t["evaluation"] == {**t["evaluation"], "units_reused": 2, "units_computed": 0}
        measured = ["row_key", "robust_acc", "success_rate", "broken", "l2_mean", "linf_mean", "margin_mean", "eval_s"]
        assert first.select(measured).sort("row_key").equals(second.select(measured).sort("row_key"))

        # One eps more: the plan says what will be attacked; the sweep attacks only that.
        longer = write_spec(tmp_path, [0, 0.1, 0.15, 0.2], flag)
        code, out = sweep(capsys, longer, "--results", results, "--dry-run")
        assert code == 0
        assert out.count("robustness[0] to compute (fgsm linf: attacks eps 0.15 (the others from the store); pgd linf: attacks eps 0.15") == 2
        assert out.count("evalstore_metrics:margin[1] from the store") == 2
        code, out = sweep(capsys, longer, "--results", results)
        assert code == 0
        stats = [t["evaluation"] for t in trials(results).values()]
        assert all(s["units_reused"] == 1 and s["units_computed"] == 1 and s["pairs_attacked"] > 0 for s in stats)
        facts = [pl.read_parquet(p) for p in (store / "evals" / "facts").glob("*.parquet")]
        assert sum(s["pairs_attacked"] for s in stats) == sum(f.filter(pl.col("eps") == 0.15).height for f in facts)
        longer_rows = pl.read_parquet(results / "results.parquet")
        code, _ = sweep(capsys, longer, "--results", tmp_path / "fresh", "--fresh")
        assert code == 0
        assert all(t["evaluation"]["units_reused"] == 0 for t in trials(tmp_path / "fresh").values())
        cols = ["row_key", "robust_acc", "success_rate", "broken"]
        assert longer_rows.select(cols).sort("row_key").equals(pl.read_parquet(tmp_path / "fresh" / "results.parquet").select(cols).sort("row_key"))

        # A corrupt entry is recomputed, with one line saying so.
        (ref,) = [r for r in map(json.loads, (p.read_text() for p in (store / "refs").glob("*.json"))) if r["results"] == str(results)]
        unit = next(p for p in sorted((store / "evals" / "units").glob("*.zip")) if p.stem in ref["keys"])
        unit.write_bytes(b"PK not a zip")
        code, out = sweep(capsys, longer, "--results", results)
        assert code == 0  # the trial's log says "corrupt evaluation store entry <path>"
        assert sum(t["evaluation"]["units_computed"] for t in trials(results).values()) == 1

    # Housekeeping: both results folders use what the store holds; without the fresh folder's
    # manifest, gc drops nothing the other still uses; without either, every evaluation entry.
    assert store_cmd.main(["du", str(store)]) == 0
    assert "models       2 entries" in capsys.readouterr().out
    assert store_cmd.main(["ls", str(store)]) == 0
    listed = capsys.readouterr().out
    assert listed.count("units") == len(list((store / "evals" / "units").glob("*.zip"))) > 0
    assert store_cmd.main(["gc", str(store)]) == 0
    kept = capsys.readouterr().out
    assert kept.startswith("dropped ") and "kept those of 2 results folders" in kept
    n_units = len(list((store / "evals" / "units").glob("*.zip")))
    (results / "manifest.json").unlink()
    (tmp_path / "fresh" / "manifest.json").unlink()
    assert store_cmd.main(["gc", str(store), "--dry-run"]) == 0
    assert f"would drop" in capsys.readouterr().out and len(list((store / "evals" / "units").glob("*.zip"))) == n_units
    assert store_cmd.main(["gc", str(store)]) == 0
    assert not list((store / "evals").rglob("*.*")) and len(list((store / "models").glob("*.pt"))) == 2
    assert store_cmd.main(["du", str(tmp_path / "absent")]) == 2


def test_more_mc_samples_and_another_eps_draw_only_what_is_new(tmp_path):
    """The uncertainty evaluator: each input set is crafted and sampled under its own seeds, so
    through the store a larger T_max draws only the samples beyond those stored and a new eps
    crafts only its set; the rows equal a fresh run's."""
    from study.evaluators import uncertainty
    from study.spec import TrainConfig
    from study.train import init_model

    model, x, y = mnist_trained(lambda: init_model(TrainConfig(model="mc-mlp", seed=0), (1, 28, 28), 10), epochs=1, lr=2e-3, batch=64)
    x, y = x[:160], y[:160]

    def run(cache, mc_samples, eps):
        axes = uncertainty.Options.model_validate({"evaluator": "uncertainty", "mc_samples": mc_samples, "baseline": 60, "eot_samples": 2,
                                                   "inputs": [{"attack": {"name": "pgd", "steps": 3}, "eps": eps}]})
        ctx = EvalContext(model=model, x=x, y=y, seed=0, x_train=None, y_train=None, trial_id="t", results_uri=str(tmp_path / "res"), cache=cache)
        return uncertainty.evaluate(ctx, axes)

    key = lambda r: (r["attack"], r["eps"], r["mc_samples"])
    first = bound(tmp_path)
    run(first, [1, 5], [0.1])
    assert first.stats["runs_computed"] == 4  # baseline, clean, the set's samples and its points
    again = bound(tmp_path)
    rows = run(again, [1, 5, 20], [0.1, 0.2])
    fresh = run(None, [1, 5, 20], [0.1, 0.2])
    assert sorted(map(key, rows)) == sorted(map(key, fresh))
    fresh = {key(r): r for r in fresh}
    for row in rows:
        assert {k: v for k, v in row.items() if k != "eval_s"} == {k: v for k, v in fresh[key(row)].items() if k != "eval_s"}, key(row)
    # More samples for the three sets stored; the eps 0.1 points reused; the 0.2 set new (points and samples).
    assert again.stats == {**again.stats, "runs_computed": 5, "runs_reused": 1}
