"""Malformed study specs: `python -m jobs.sweep` must reject each one before anything runs.

Every case starts from a valid base spec (a small copy of search_spaces/quickstart.yaml),
breaks one thing, and checks: exit status 2, exactly one line on stderr that starts with the
spec file's path and names the offending field, and nothing written (no results folder, no
model store beside it).
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jobs import sweep

REPO = Path(__file__).resolve().parents[1]

BASE = {
    "name": "quickstart",
    "data": {"dataset": "mnist-5k", "n_eval": 1000},
    "train": {
        "model": {"grid": ["cnn", "logreg"]},
        "epochs": 8,
        "lr": 2.0e-3,
        "weight_decay": {"grid": [0.0, 1.0e-3]},
        "adversarial": {"grid": [None, {"attack": "fgsm", "norm": "linf", "eps": 0.1, "alpha": 0.5}]},
    },
    "evaluate": [
        {
            "evaluator": "robustness",
            "attacks": ["fgsm", {"name": "bim", "steps": 10}, {"name": "pgd", "steps": 10}],
            "norms": {
                "linf": {"eps": [0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]},
                "l2": {"eps": [0, 0.5, 1, 1.5, 2, 3]},
            },
        }
    ],
    "search": {"kind": "grid"},
    "resources": {"cpu": 1, "gpu": 0},
    "results": "results/quickstart",
    "seed": 0,
}


def _edit(fn):
    """A spec: the base with one edit applied (fn mutates a deep copy and may return a replacement)."""

    def make(tmp_path):
        spec = copy.deepcopy(BASE)
        out = fn(spec, tmp_path)
        return spec if out is None else out

    return make


def _set(path, value):
    def fn(spec, tmp_path):
        node = spec
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return _edit(fn)


def _delete(path):
    def fn(spec, tmp_path):
        node = spec
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return _edit(fn)


def _ev(key, value):
    return _set(("evaluate", 0, key), value)


def _empty_root(spec, tmp_path):
    root = tmp_path / "empty_root"
    root.mkdir()
    spec["data"] = {"dataset": "mnist", "root": str(root)}


def _corrupt_root(spec, tmp_path):
    """All four MNIST raw files present but empty (a truncated copy): unreadable input, not a crash."""
    raw = tmp_path / "corrupt_root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(b"")
    spec["data"] = {"dataset": "mnist", "root": str(tmp_path / "corrupt_root")}


def _bnn(path, value):
    """The base spec on an MC-dropout CNN with an uncertainty evaluator, then one edit."""

    def fn(spec, tmp_path):
        spec["train"] = {"model": "mc-cnn", "dropout": 0.25, "epochs": 1}
        spec["evaluate"] = [{"evaluator": "uncertainty", "inputs": [{"attack": "fgsm", "eps": [0.3]}]}]
        node = spec
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return _edit(fn)


@_edit
def _two_classes_dlr(spec, tmp_path):
    spec["data"] = {"dataset": "mnist-5k", "classes": [3, 7]}
    spec["evaluate"][0]["attacks"] = ["apgd-ce", "apgd-dlr"]


# (id, how to make the spec, text the error line must contain after the file path)
CASES = [
    ("unknown-attack", _ev("attacks", ["fgsm", "bim", "pgd", "deepfool"]), "evaluate[0].attacks[3]"),
    ("attacks-not-a-list", _ev("attacks", "fgsm"), "evaluate[0].attacks"),
    ("attacks-empty", _ev("attacks", []), "evaluate[0].attacks"),
    ("attacks-duplicate", _ev("attacks", ["fgsm", "pgd", "fgsm"]), "evaluate[0].attacks"),
    ("norm-l3", _set(("evaluate", 0, "norms", "l3"), {"eps": [0, 1]}), "evaluate[0].norms.l3"),
    ("norms-empty", _ev("norms", {}), "evaluate[0].norms"),
    ("eps-negative", _set(("evaluate", 0, "norms", "linf", "eps"), [0, 0.05, -0.1]), "evaluate[0].norms.linf.eps[2]"),
    ("eps-linf-above-1", _set(("evaluate", 0, "norms", "linf", "eps"), [0, 0.5, 1.5]), "evaluate[0].norms.linf.eps[2]"),
    ("eps-duplicate", _set(("evaluate", 0, "norms", "l2", "eps"), [0, 0.5, 1, 0.5]), "evaluate[0].norms.l2.eps"),
    ("eps-empty", _set(("evaluate", 0, "norms", "l2", "eps"), []), "evaluate[0].norms.l2.eps"),
    ("eps-string", _set(("evaluate", 0, "norms", "l2", "eps"), [0, "big"]), "evaluate[0].norms.l2.eps[1]"),
    ("steps-beside-the-attacks", _ev("steps", 10), "evaluate[0].steps"),
    ("steps-zero", _ev("attacks", ["fgsm", {"name": "pgd", "steps": 0}]), "evaluate[0].attacks[1].steps"),
    ("restarts-string", _ev("attacks", [{"name": "pgd", "restarts": "many"}]), "evaluate[0].attacks[0].restarts"),
    ("option-the-attack-lacks", _ev("attacks", [{"name": "fgsm", "steps": 10}]), "evaluate[0].attacks[0].steps"),
    ("attack-without-name", _ev("attacks", [{"steps": 10}]), "evaluate[0].attacks[0].name"),
    ("unknown-preset", _ev("attacks", "autoattack-plus"), "evaluate[0].attacks"),
    ("apgd-t-targets-zero", _ev("attacks", [{"name": "apgd-t", "targets": 0}]), "evaluate[0].attacks[0].targets"),
    ("square-p-init-above-1", _ev("attacks", [{"name": "square", "p_init": 1.5}]), "evaluate[0].attacks[0].p_init"),
    ("cascade-not-a-bool", _ev("cascade", "maybe"), "evaluate[0].cascade"),
    ("rows-collide", _set(("evaluate",), [
        {"evaluator": "robustness", "attacks": ["fgsm", "pgd"], "norms": {"linf": {"eps": [0.1, 0.2]}}},
        {"evaluator": "robustness", "attacks": ["fgsm", "pgd"], "norms": {"linf": {"eps": [0.2, 0.3]}}},
    ]), "evaluate[1]"),
    ("second-rubbish-entry", _set(("evaluate",), [{"evaluator": "rubbish"}, {"evaluator": "rubbish", "samples": 10}]), "evaluate[1]"),
    ("repeats-with-a-seed-grid", _edit(lambda spec, tmp_path: {**spec, "train": {**spec["train"], "seed": {"grid": [0, 1]}}, "search": {"kind": "grid", "num_samples": 2}}), "search.num_samples"),
    ("eval-unknown-field", _ev("iterations", 5), "evaluate[0].iterations"),
    ("unknown-evaluator", _ev("evaluator", "certified"), "evaluate[0]"),
    ("missing-evaluator", _delete(("evaluate", 0, "evaluator")), "evaluate[0]"),
    ("missing-evaluate", _delete(("evaluate",)), "evaluate"),
    ("evaluate-empty", _set(("evaluate",), []), "evaluate"),
    ("empty-grid", _set(("train", "weight_decay"), {"grid": []}), "train.weight_decay.grid"),
    ("grid-not-a-list", _set(("train", "weight_decay"), {"grid": 0.1}), "train.weight_decay.grid"),
    ("epochs-string", _set(("train", "epochs"), "five"), "train.epochs"),
    ("epochs-zero", _set(("train", "epochs"), 0), "train.epochs"),
    ("epochs-bool", _set(("train", "epochs"), True), "train.epochs"),
    ("eps-bool", _set(("evaluate", 0, "norms", "linf", "eps"), [0, True]), "evaluate[0].norms.linf.eps[1]"),
    ("lr-grid-negative", _set(("train", "lr"), {"grid": [1e-3, -1e-3]}), "train.lr.grid[1]"),
    ("unknown-model", _set(("train", "model"), "resnet50"), "train.model"),
    ("unknown-model-in-grid", _set(("train", "model"), {"grid": ["cnn", "resnet50"]}), "train.model.grid[1]"),
    ("missing-model", _delete(("train", "model")), "train.model"),
    ("unknown-training-axis", _set(("train", "momentum"), 0.9), "train.momentum"),
    ("train-not-a-mapping", _set(("train",), ["cnn"]), "train"),
    ("adv-eps-negative", _set(("train", "adversarial", "grid", 1, "eps"), -0.1), "train.adversarial.grid[1].eps"),
    ("adv-eps-linf-above-1", _set(("train", "adversarial", "grid", 1, "eps"), 1.5), "train.adversarial.grid[1].eps"),
    ("adv-attack-bim", _set(("train", "adversarial", "grid", 1, "attack"), "bim"), "train.adversarial.grid[1].attack"),
    ("loguniform-low-zero", _set(("train", "weight_decay"), {"loguniform": [0.0, 1e-2]}), "train.weight_decay.loguniform[0]"),
    ("loguniform-low-negative", _set(("train", "lr"), {"loguniform": [-1e-3, 1e-2]}), "train.lr.loguniform[0]"),
    ("uniform-low-above-high", _set(("train", "lr"), {"uniform": [1e-2, 1e-3]}), "train.lr.uniform"),
    ("unknown-dataset", _set(("data", "dataset"), "cifar100"), "data.dataset"),
    ("classes-one-label", _set(("data", "classes"), [3]), "data.classes"),
    ("classes-duplicate", _set(("data", "classes"), [3, 3]), "data.classes"),
    ("classes-out-of-range", _set(("data", "classes"), [3, 10]), "data.classes[1]"),
    ("n-eval-zero", _set(("data", "n_eval"), 0), "data.n_eval"),
    ("mnist-empty-root", _edit(_empty_root), "data.root"),
    ("mnist-corrupt-root", _edit(_corrupt_root), "data.root"),
    ("n-eval-above-test-set", _set(("data", "n_eval"), 5000), "data.n_eval"),
    ("gpu-negative", _set(("resources", "gpu"), -1), "resources.gpu"),
    ("gpu-fractional-above-1", _set(("resources", "gpu"), 1.5), "resources.gpu"),
    ("cpu-zero", _set(("resources", "cpu"), 0), "resources.cpu"),
    ("unknown-search-metric", _set(("search", "metric"), "robust_acc@pgd-linf-0.5"), "search.metric"),
    ("search-kind", _set(("search", "kind"), "bayes"), "search.kind"),
    ("search-mode", _set(("search", "mode"), "maximize"), "search.mode"),
    ("search-mode-in-list", _set(("search",), {"kind": "optuna", "metric": ["clean_acc", "robust_acc@pgd-linf-0.1"], "mode": ["max", "up"]}), "search.mode[1]"),
    ("pareto-needs-optuna", _set(("search",), {"kind": "grid", "metric": ["clean_acc", "robust_acc@pgd-linf-0.1"], "mode": ["max", "max"]}), "search.metric"),
    ("pareto-unknown-metric", _set(("search",), {"kind": "optuna", "metric": ["clean_acc", "robust_acc@pgd-linf-0.7"], "mode": ["max", "max"]}), "search.metric[1]"),
    ("pareto-modes-count", _set(("search",), {"kind": "optuna", "metric": ["clean_acc", "robust_acc@pgd-linf-0.1"], "mode": ["max", "max", "min"]}), "search.mode"),
    ("pareto-single-mode", _set(("search",), {"kind": "optuna", "metric": ["clean_acc", "robust_acc@pgd-linf-0.1"], "mode": "max"}), "search.mode"),
    ("optuna-nothing-to-search", _edit(lambda spec, tmp_path: {**spec, "train": {"model": "cnn"}, "search": {"kind": "optuna"}}), "search.kind"),
    ("scheduler-unknown", _set(("search", "scheduler"), "hyperband"), "search.scheduler.kind"),
    ("scheduler-metric", _set(("search", "scheduler"), {"kind": "asha", "metric": "robust_acc@pgd-linf-0.1"}), "search.scheduler.metric"),
    ("scheduler-reduction-factor", _set(("search", "scheduler"), {"kind": "asha", "reduction_factor": 1}), "search.scheduler.reduction_factor"),
    ("max-concurrent-zero", _set(("search", "max_concurrent"), 0), "search.max_concurrent"),
    ("max-failures-negative", _set(("search", "max_failures"), -1), "search.max_failures"),
    ("device-cuda-without-gpu", _set(("resources", "device"), "cuda"), "resources.device"),
    ("device-unknown", _set(("resources", "device"), "tpu"), "resources.device"),
    ("svm-without-two-classes", _set(("train", "model"), "linear-svm"), "train.model"),
    ("pieces-for-a-model-without-pieces", _set(("train", "pieces"), {"grid": [2, 3]}), "train.pieces"),
    ("pieces-zero", _set(("train", "pieces"), 0), "train.pieces"),
    ("l2-negative", _set(("train", "l2"), {"grid": [0.1, -1.0]}), "train.l2.grid[1]"),
    ("lr-schedule-unknown", _set(("train", "lr_schedule"), "step"), "train.lr_schedule"),
    ("geometry-unknown-norm", _set(("evaluate",), [{"evaluator": "geometry", "norms": ["l2", "l1"]}]), "evaluate[0].norms[1]"),
    ("geometry-bisection-steps", _set(("evaluate",), [{"evaluator": "geometry", "bisection": {"steps": 0}}]), "evaluate[0].bisection.steps"),
    ("rubbish-samples-zero", _set(("evaluate",), [{"evaluator": "rubbish", "samples": 0}]), "evaluate[0].samples"),
    ("transfer-eps-negative", _set(("evaluate",), [{"evaluator": "transfer", "eps": [0.1, -0.25]}]), "evaluate[0].eps[1]"),
    ("transfer-unknown-attack", _set(("evaluate",), [{"evaluator": "transfer", "attack": "jsma", "eps": [0.1]}]), "evaluate[0].attack"),
    ("dropout-for-a-model-without-dropout", _set(("train", "dropout"), 0.5), "train.dropout"),
    ("dropout-one", _bnn(("train", "dropout"), {"grid": [0.5, 1.0]}), "train.dropout.grid[1]"),
    ("uncertainty-on-a-deterministic-model", _set(("evaluate",), [{"evaluator": "uncertainty"}]), "evaluate[0]"),
    ("uncertainty-mc-samples-zero", _bnn(("evaluate", 0, "mc_samples"), [1, 0]), "evaluate[0].mc_samples[1]"),
    ("uncertainty-mc-samples-duplicate", _bnn(("evaluate", 0, "mc_samples"), [1, 5, 5]), "evaluate[0].mc_samples"),
    ("uncertainty-eot-zero", _bnn(("evaluate", 0, "eot_samples"), 0), "evaluate[0].eot_samples"),
    ("uncertainty-cw-with-eps", _bnn(("evaluate", 0, "inputs"), [{"attack": "cw", "eps": [1.0]}]), "evaluate[0].inputs[0].eps"),
    ("uncertainty-cw-linf", _bnn(("evaluate", 0, "inputs"), [{"attack": "cw", "norm": "linf"}]), "evaluate[0].inputs[0].norm"),
    ("uncertainty-fgsm-without-eps", _bnn(("evaluate", 0, "inputs"), [{"attack": "fgsm"}]), "evaluate[0].inputs[0].eps"),
    ("uncertainty-unknown-attack", _bnn(("evaluate", 0, "inputs"), [{"attack": "deepfool", "eps": [1]}]), "evaluate[0].inputs[0].attack"),
    ("uncertainty-natural-with-eps", _bnn(("evaluate", 0, "inputs"), [{"attack": "natural", "eps": [1]}]), "evaluate[0].inputs[0].eps"),
    ("uncertainty-natural-with-norm", _bnn(("evaluate", 0, "inputs"), [{"attack": "natural", "norm": "l2"}]), "evaluate[0].inputs[0].norm"),
    ("uncertainty-search-on-fgsm", _bnn(("evaluate", 0, "inputs"), [{"attack": "fgsm", "eps": [0.1], "search": {"samples": 8}}]), "evaluate[0].inputs[0].search"),
    ("natural-unknown-search", _set(("evaluate",), [{"evaluator": "natural", "search": ["iterative", "greedy"]}]), "evaluate[0].search[1]"),
    ("natural-rounds-zero", _set(("evaluate",), [{"evaluator": "natural", "rounds": [1, 0]}]), "evaluate[0].rounds[1]"),
    ("natural-dr-not-below-h0", _set(("evaluate",), [{"evaluator": "natural", "dr": [0.1, 20]}]), "evaluate[0].dr[1]"),
    ("natural-search-h0-below-dr", _set(("evaluate",), [{"evaluator": "reconstruction", "inputs": [{"attack": "natural", "search": {"dr": 2, "h0": 1}}]}]), "evaluate[0].inputs[0].search.h0"),
    ("reconstruction-unknown-option", _set(("evaluate",), [{"evaluator": "reconstruction", "defense": "gan"}]), "evaluate[0].defense"),
    ("generative-unused", _set(("generative",), {"steps": 100}), "generative"),
    ("generative-steps-zero", _edit(lambda spec, tmp_path: {**spec, "evaluate": [{"evaluator": "natural"}], "generative": {"steps": 0}}), "generative.steps"),
    ("generative-unknown-arch", _edit(lambda spec, tmp_path: {**spec, "evaluate": [{"evaluator": "natural"}], "generative": {"arch": "vae"}}), "generative.arch"),
    ("generative-untrained-inverter", _edit(lambda spec, tmp_path: {**spec, "evaluate": [{"evaluator": "natural"}], "generative": {"inverter_steps": 0}}), "generative.inverter_steps"),
    ("generative-conv-not-mnist-shaped", _edit(lambda spec, tmp_path: {**spec, "data": {"dataset": "digits"}, "evaluate": [{"evaluator": "natural"}], "generative": {"arch": "conv"}}), "generative.arch: the conv generative networks take 28 x 28 images; the data's are 8 x 8"),
    ("uncertainty-cw-options-on-pgd", _bnn(("evaluate", 0, "inputs"), [{"attack": "pgd", "eps": [0.1], "cw": {"confidence": 1}}]), "evaluate[0].inputs[0].cw"),
    ("uncertainty-apgd-t", _bnn(("evaluate", 0, "inputs"), [{"attack": "apgd-t", "eps": [0.1]}]), "evaluate[0].inputs[0].attack"),
    ("uncertainty-baseline-too-large", _bnn(("evaluate", 0, "baseline"), 1000), "evaluate[0].baseline"),
    ("cw-confidence-negative", _ev("attacks", [{"name": "cw", "confidence": -1}]), "evaluate[0].attacks[0].confidence"),
    ("cw-unknown-option", _ev("attacks", [{"name": "cw", "iterations": 10}]), "evaluate[0].attacks[0].iterations"),
    ("cw-options-beside-the-attacks", _ev("cw", {"confidence": 1}), "evaluate[0].cw"),
    ("apgd-dlr-on-two-classes", _two_classes_dlr, "evaluate[0]"),
    ("default-attacks-on-three-classes", _edit(lambda spec, tmp_path: {**spec, "data": {"dataset": "mnist-5k", "classes": [1, 3, 7]}, "evaluate": [{"evaluator": "robustness", "norms": {"linf": {"eps": [0.1]}}}]}), "apgd-t needs at least 4 classes"),
    ("transfer-no-eps", _set(("evaluate",), [{"evaluator": "transfer"}]), "evaluate[0].eps"),
    ("variant-param-the-model-lacks", _set(("train", "model"), {"grid": ["cnn", {"name": "logreg", "margin": 0.5}]}), "train.model.grid[1]"),
    ("variant-without-name", _set(("train", "model"), {"grid": [{"margin": 0.5}]}), "train.model.grid[0]"),
    ("variant-param-also-an-axis", _edit(lambda spec, tmp_path: {**spec, "train": {"model": {"grid": [{"name": "triplet", "margin": 0.5}]}, "margin": 0.2}}), "train.margin"),
    ("triplet-adversarially-trained", _set(("train", "model"), {"grid": ["cnn", "triplet"]}), "train.adversarial"),
    ("triplet-unknown-loss", _set(("train", "triplet_loss"), "contrastive"), "train.triplet_loss"),
    ("embedding-without-an-embedding-model", _set(("evaluate",), [{"evaluator": "embedding"}]), "evaluate[0]"),
    ("embedding-input-linf-above-1", _set(("evaluate",), [{"evaluator": "embedding", "input_attacks": {"linf": {"eps": [1.5]}}}]), "evaluate[0].input_attacks.linf.eps[0]"),
    ("distances-unknown-norm", _set(("evaluate",), [{"evaluator": "distances", "norms": ["l2", "l3"]}]), "evaluate[0].norms[1]"),
    ("distances-quantile-above-1", _set(("evaluate",), [{"evaluator": "distances", "quantiles": [0.5, 1.5]}]), "evaluate[0].quantiles[1]"),
    ("distances-per-class-one", _set(("evaluate",), [{"evaluator": "distances", "per_class": [1]}]), "evaluate[0].per_class[0]"),
    ("crafted-eps-above-1", _set(("evaluate",), [{"evaluator": "crafted", "eps": [0.3, 2]}]), "evaluate[0].eps[1]"),
    ("per-class-eps-with-cw", _set(("evaluate",), [{"evaluator": "robustness", "attacks": ["pgd", "cw"], "norms": {"l2": {"eps": [1]}}, "per_class_eps": {}}]), "evaluate[0]"),
    ("per-class-eps-fraction-zero", _ev("per_class_eps", {"fraction": 0}), "evaluate[0].per_class_eps.fraction"),
    ("unknown-top-level-field", _set(("epochz",), 3), "epochz"),
    ("missing-name", _delete(("name",)), "name"),
    ("bad-name", _set(("name",), "my study/1"), "name"),
    ("seed-string", _set(("seed",), "zero"), "seed"),
    ("not-a-mapping", _edit(lambda spec, tmp_path: [spec]), "mapping"),
    ("scalar-spec", _edit(lambda spec, tmp_path: "quickstart"), "mapping"),
]

RAW_CASES = [
    # (id, file bytes or None for no file, text the error line must contain after the file path)
    ("invalid-yaml", b"name: quickstart\ntrain: {model: cnn\nevaluate: [\n", "invalid YAML"),
    ("invalid-yaml-tab", b"name: quickstart\n\tdata: x\n", "invalid YAML"),
    # PyYAML's ReaderError has no `problem`; its str() spans two lines.
    ("yaml-control-character", b"name: quick\x07start\ntrain: {model: cnn}\n", "invalid YAML"),
    # Latin-1, not UTF-8: bad input like any other, not a UnicodeDecodeError traceback.
    ("not-utf8", b"name: caf\xe9\ntrain: {model: cnn}\n", ""),
    ("empty-file", b"", "mapping"),
    ("missing-file", None, "file not found"),
]


def _run_bad(tmp_path, capsys, path: Path):
    before = set(tmp_path.iterdir())
    results = tmp_path / "results"
    rc = sweep.main([str(path), "--results", str(results)])
    out, err = capsys.readouterr()
    assert rc == 2, (rc, out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), f"stderr is not exactly one line: {err!r}"
    line = lines[0]
    assert line.startswith(f"{path}: "), line
    assert not results.exists(), "a rejected spec created its results folder"
    assert set(tmp_path.iterdir()) == before, f"a rejected spec wrote into {tmp_path}: {set(tmp_path.iterdir()) - before}"
    assert out == "", out
    return line[len(f"{path}: "):]


@pytest.mark.parametrize("make, field", [pytest.param(m, f, id=i) for i, m, f in CASES])
def test_malformed_spec_is_rejected(tmp_path, capsys, make, field):
    spec = make(tmp_path)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    rest = _run_bad(tmp_path, capsys, path)
    assert field in rest, f"error does not name {field!r}: {rest!r}"
    if "." in field or "[" in field:
        # A field path is reported as the first thing after the file name.
        assert rest.startswith(field), rest


@pytest.mark.parametrize("text, expect", [pytest.param(t, e, id=i) for i, t, e in RAW_CASES])
def test_unreadable_spec_is_rejected(tmp_path, capsys, text, expect):
    path = tmp_path / "bad.yaml"
    if text is not None:
        path.write_bytes(text)
    rest = _run_bad(tmp_path, capsys, path)
    assert expect in rest, rest


def test_error_path_is_the_field_not_a_neighbour(tmp_path, capsys):
    """Only the broken eps is named: index 2 of the linf list, not the l2 list or index 1."""
    spec = copy.deepcopy(BASE)
    spec["evaluate"][0]["norms"]["linf"]["eps"] = [0, 0.1, -0.2, 0.3]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    rest = _run_bad(tmp_path, capsys, path)
    assert rest.startswith("evaluate[0].norms.linf.eps[2]: "), rest
    assert ">= 0" in rest, rest


def test_subprocess_exit_status_and_one_line(tmp_path):
    spec = copy.deepcopy(BASE)
    spec["evaluate"][0]["attacks"] = ["fgsm", "deepfool"]
    path = tmp_path / "BAD.yaml"
    path.write_text(yaml.safe_dump(spec))
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.sweep", str(path), "--results", str(tmp_path / "results")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"{path}: evaluate[0].attacks[1]"), lines[0]
    assert proc.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["BAD.yaml"]


def test_valid_spec_dry_run(tmp_path, capsys):
    path = tmp_path / "quickstart.yaml"
    path.write_text(yaml.safe_dump(BASE, sort_keys=False))
    results = tmp_path / "results"
    rc = sweep.main([str(path), "--results", str(results), "--dry-run"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert err == ""
    assert "8 trials" in out, out
    assert "416 rows" in out, out
    assert "416 rows" in out and "results ->" in out, out
    assert str(results) in out
    # A dry run writes nothing: no results folder, no model store beside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quickstart.yaml"]


def test_repo_quickstart_dry_run(tmp_path, capsys):
    """The shipped quickstart.yaml itself is valid and plans 8 trials / 624 rows: the default
    evaluation's five attacks and `worst` at 13 (norm, eps) points."""
    rc = sweep.main([str(REPO / "search_spaces" / "quickstart.yaml"), "--results", str(tmp_path / "results"), "--dry-run"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "quickstart: 8 trials" in out and "624 rows" in out, out
    assert list(tmp_path.iterdir()) == []
