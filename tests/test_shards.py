"""Sharded evaluation (study.evaluators.shards): one model's robustness entry split over Ray
tasks gives the rows of one unsharded run.

Fast tier, on the session's embedded Ray (2 CPUs): an MLP trained here and put in a model store
(the tasks load it from there, as on a cluster), 150 test points, a probing Square (escalating
in Linf and not in L2) and an attack after it; 1 shard against 2 and 5. The cluster path (4 shards over two nodes,
a killed shard worker) is tests/test_cluster_job.py's.
"""

from __future__ import annotations

import polars as pl
import pytest
import torch
import torch
from conftest import assert_same_rows, mnist_trained

from study import evalstore
from study.evaluators import EvalContext, robustness
from study.evaluators.robustness import Options as RobustnessEval
from study.evaluators.shards import ModelSource, Shards
from study.spec import TrainConfig
from study.store import ModelStore
from study.train import init_model

N_EVAL = 150
CFG = TrainConfig(model="mlp", hidden=64, epochs=1, seed=0)
SQUARE = {"name": "square", "queries": 300, "probe": 30, "escalate": 0.1}
# Square's probe escalates at Linf (it breaks most points at 0.3) and not at L2 (7 of 130 at
# 0.3, under the 10% it asks); APGD-CE then attacks what the search left.
ATTACKS = [SQUARE, {"name": "apgd-ce", "steps": 10}]
NORMS = {"linf": {"eps": [0, 0.05, 0.1, 0.3]}, "l2": {"eps": [0.1, 0.3]}}


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    model, x, y = mnist_trained(lambda: init_model(CFG, (1, 28, 28), 10), epochs=1, lr=2e-3, batch=64)
    store = str(tmp_path_factory.mktemp("store"))
    ModelStore(store).save("mlp-key", model, {"train_s": 0.0})
    source = ModelSource(CFG.model_dump(mode="json"), (1, 28, 28), 10, store, "mlp-key", None, ".")
    return model, x[:N_EVAL], y[:N_EVAL], source, store


def run(stored, tmp_path, shards=None, cache=None, attacks=ATTACKS, cascade=True):
    model, x, y, source, _ = stored
    entry = {"evaluator": "robustness", "attacks": attacks, "cascade": cascade, "norms": NORMS}
    if shards is not None:
        entry["shards"] = shards
    ctx = EvalContext(model=model, x=x, y=y, seed=0, x_train=None, y_train=None, trial_id="t", results_uri=str(tmp_path), cache=cache, model_source=source)
    return robustness.evaluate(ctx, RobustnessEval.model_validate(entry))


@pytest.fixture(scope="module")
def unsharded(stored, tmp_path_factory):
    return run(stored, tmp_path_factory.mktemp("one"))


def shard_log(tmp_path) -> pl.DataFrame:
    return pl.read_parquet(tmp_path / "artifacts" / "robustness_shards" / "t.parquet")


def test_the_probe_escalates_in_one_norm_only(stored, unsharded, tmp_path):
    """The premise: unsharded, the probing Square equals the full search at Linf (escalated)
    and falls short of it at L2 (not), so the sharded runs below decide both ways."""
    full = run(stored, tmp_path, attacks=[{**SQUARE, "probe": None}, ATTACKS[1]])
    broken = lambda rows, norm: [r["broken"] for r in rows if r["attack"] == "square" and r["norm"] == norm]
    assert broken(unsharded, "linf") == broken(full, "linf") and sum(broken(full, "linf")) > 100
    assert sum(broken(unsharded, "l2")) < sum(broken(full, "l2"))


@pytest.mark.parametrize("n", [2, 5])
def test_sharded_rows_equal_unsharded(ray_session, stored, unsharded, tmp_path, n):
    rows = run(stored, tmp_path, shards=n)
    assert_same_rows(rows, unsharded)
    done = shard_log(tmp_path).filter(pl.col("outcome") == "done")
    attacked = round(unsharded[0]["n_eval"] * unsharded[0]["clean_acc"])
    # Rounds: the probe; the escalated search (Linf only); APGD-CE. Each covers every point once.
    assert done["round"].unique().sort().to_list() == [1, 2, 3]
    for _, part in done.group_by("round"):
        assert sorted(part["shard"].to_list()) == list(range(n)) and part["points"].sum() == attacked
    assert (done["attempt"] == 1).all() and set(done["runner"]) <= {"trial", "task"}


def test_shards_resume_from_the_store(ray_session, stored, unsharded, tmp_path):
    """Each finished shard is an evaluation-store run: a second run computes none of them again."""
    cache = evalstore.Bound(evalstore.EvalStore(str(tmp_path / "store")), {"model": "mlp", "data": "first 150", "seed": 0, "code": "test"})
    assert_same_rows(run(stored, tmp_path, shards=3, cache=cache), unsharded)
    assert cache.stats["runs_computed"] == 9 and cache.stats["runs_reused"] == 0  # 3 shards x 3 rounds
    again = evalstore.Bound(cache.store, cache.identity)
    assert_same_rows(run(stored, tmp_path, shards=3, cache=again), unsharded)
    assert again.stats["runs_reused"] == 9 and again.stats["runs_computed"] == 0
    assert (shard_log(tmp_path)["outcome"] == "from store").all()


def test_each_attack_alone_shards_too(ray_session, stored, tmp_path):
    """Without the cascade every point is probed; the escalation still counts over all shards."""
    attacks = [{"name": "fgsm"}, SQUARE]
    one = run(stored, tmp_path / "one", attacks=attacks, cascade=False)
    assert_same_rows(run(stored, tmp_path / "three", shards=3, attacks=attacks, cascade=False), one)


def test_shards_option():
    assert Shards.model_validate(4).count == 4
    assert Shards.model_validate("auto").count == "auto"
    assert Shards.model_validate({"count": 2, "gpu": 0.25}).gpu == 0.25
    with pytest.raises(ValueError):
        Shards.model_validate(0)
    with pytest.raises(ValueError):
        RobustnessEval.model_validate({"evaluator": "robustness", "norms": {"linf": {"eps": [0.1]}}, "shards": {"count": 2, "nodes": 3}})
    assert Shards(count=8).resolve(5) == 5  # never more shards than points


def test_a_shard_worker_loads_the_model_and_computes_its_part(ray_session, stored, unsharded):
    """The task path on its own: a Ray task takes the shards of the queue, builds the model from
    the store once, and yields each shard's outcomes (the trial takes none here)."""
    import ray

    from study.evaluators import shards

    model, x, y, source, _ = stored
    axes = RobustnessEval.model_validate({"evaluator": "robustness", "attacks": ATTACKS, "norms": NORMS})
    correct = robustness.predict(model, x) == y
    points = correct.nonzero().squeeze(1)
    parts = list(torch.arange(len(points)).tensor_split(3))
    rnd = shards._Round(source, axes, 0, x[points], y[points], points, parts, [1], None, {}, ["l2"], [None] * 3, None, 1, 0.0)
    _, board_actor, worker, _ = shards._ray()
    board = board_actor.remote([2, 0])
    done = [ray.get(ref) for ref in worker.remote(board, 0, ray.put(rnd))]
    assert [s for s, _, _ in done] == [2, 0] and ray.get(board.given_out.remote()) == {0: [2, 0]}
    for s, out, rec in done:
        assert rec["runner"] == "task" and rec["node_id"] == ray.get_runtime_context().get_node_id()
        here = rnd.compute(s, model, torch.device("cpu"))
        assert torch.equal(out["l2"][0][0], here["l2"][0][0]) and out["l2"][0][0].shape == (len(parts[s]), 2)
    assert list(worker.remote(board, 1, ray.put(rnd))) == []  # the queue is empty


def test_the_robustbench_spec_dry_runs(tmp_path):
    """search_spaces/robustbench-cifar10.yaml validates and plans, its data and checkpoint
    replaced by CIFAR-shaped stand-ins (this machine downloads nothing): 10,000 images of
    3 x 32 x 32 and random ResNet-18 weights at the checkpoint path it names."""
    import subprocess
    import sys

    import numpy as np
    import yaml
    from conftest import ROOT

    spec = yaml.safe_load((ROOT / "search_spaces" / "robustbench-cifar10.yaml").read_text())
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "cifar.npz", x_test=rng.integers(0, 256, (10000, 32, 32, 3), dtype=np.uint8), y_test=rng.integers(0, 10, 10000))
    spec["data"] = {"dataset": "npz", "path": str(tmp_path / "cifar.npz"), "n_eval": spec["data"]["n_eval"]}
    weights = tmp_path / spec["train"]["checkpoint"]
    weights.parent.mkdir(parents=True)
    torch.save(init_model(TrainConfig(model=spec["train"]["model"], seed=0), (3, 32, 32), 10).state_dict(), weights)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    out = subprocess.run([sys.executable, "-m", "jobs.sweep", str(tmp_path / "spec.yaml"), "--results", str(tmp_path / "results"), "--dry-run"],
                         cwd=tmp_path, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "robustbench-cifar10: 1 trials, 1 checkpoint evaluated as it is; 20 rows" in out.stdout, out.stdout
    assert "points in auto shards (the trial plus one per free GPU; 2 CPU + 1 GPU per shard task)" in out.stdout, out.stdout
    entry = RobustnessEval.model_validate(spec["evaluate"][0])
    assert entry.attack_list()[2].name == "fab-t" and entry.attack_list()[3].build().queries == 5000  # the standard version


def test_unsharded_evaluation_needs_no_ray():
    """The GPU image (benchmarks/gpu_check.sh) has no Ray: the evaluator imports without it."""
    import subprocess
    import sys

    code = "import sys; import study.evaluators.robustness; assert 'ray' not in sys.modules, 'ray imported'"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0
