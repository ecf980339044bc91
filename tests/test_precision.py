"""The robustness evaluator's ``precision``: the model's arithmetic under autocast, its rows
told apart from float32 rows, never mixed with float32 work in the evaluation store."""

from __future__ import annotations

import pytest
import torch
from conftest import mnist_trained
from torch import nn

from study import evalstore, precision
from study.evaluators import EvalContext, robustness
from study.evaluators.robustness import Options as RobustnessEval
from study.spec import parse_spec

NORMS = {"linf": {"eps": [0, 0.05, 0.1]}, "l2": {"eps": [1.0]}}


@pytest.fixture(scope="module")
def cnn():
    make = lambda: nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 14 * 14, 10))
    model, x, y = mnist_trained(make, epochs=1, lr=2e-3, batch=64)
    return model, x[:100], y[:100]


def run(cnn, prec, cache=None, **options):
    model, x, y = cnn
    axes = RobustnessEval.model_validate({"evaluator": "robustness", "attacks": [{"name": "apgd-ce", "steps": 10}], "norms": NORMS, "precision": prec, **options})
    ctx = EvalContext(model=model, x=x, y=y, seed=0, x_train=None, y_train=None, trial_id="t", results_uri="unused", cache=cache)
    return {(r["attack"], r["norm"], r["eps"]): r for r in robustness.evaluate(ctx, axes)}


def test_bf16_queries_run_in_bf16_and_return_float32_logits(cnn):
    model, x, _ = cnn
    seen = []
    handle = model[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    try:
        out = precision.queried(model, "bf16")(x[:4])
    finally:
        handle.remove()
    assert seen == [torch.bfloat16] and out.dtype == torch.float32
    assert precision.queried(model, "float32") is model


def test_bf16_rows_are_their_own_and_close_to_float32(cnn, tmp_path):
    # Through the evaluation store: bf16 attacks its own pairs, it takes nothing float32 found.
    cache = evalstore.Bound(evalstore.EvalStore(str(tmp_path)), {"model": "cnn", "data": "first 100", "seed": 0, "code": "test"})
    full = run(cnn, "float32", cache)
    attacked = cache.stats["pairs_attacked"]
    half = run(cnn, "bf16", cache)
    assert cache.stats["pairs_attacked"] >= 2 * attacked - 10 and attacked > 50
    assert all("precision" not in r for r in full.values()) and all(r["precision"] == "bf16" for r in half.values())
    for key, row in full.items():
        # bf16 moves logits in their last bits: a few points of 100 on the edge of an eps, no more
        assert abs(half[key]["robust_acc"] - row["robust_acc"]) <= 0.03, key
    assert full["worst", "linf", 0.1]["robust_acc"] < full["worst", "linf", 0.05]["robust_acc"]  # the attack works


def test_one_spec_may_evaluate_both_precisions():
    entry = {"evaluator": "robustness", "attacks": ["fgsm"], "norms": {"linf": {"eps": [0.1]}}}
    spec = {"name": "p", "data": {"dataset": "mnist-5k"}, "train": {"model": "cnn"}, "evaluate": [entry, {**entry, "precision": "bf16"}]}
    parse_spec(spec)
    with pytest.raises(ValueError, match="would repeat"):
        parse_spec({**spec, "evaluate": [entry, {**entry, "precision": "float32"}]})


def test_channels_last_runs_the_convolutions_in_nhwc_and_changes_no_row(cnn, tmp_path):
    """How it runs, not what it computes: the first convolution gets NHWC inputs and weights, the
    rows equal the plain run's (counts exactly, sizes to float rounding) and its settings leave
    the evaluation-store key as it is."""
    model, x, _ = cnn
    seen = []
    handle = model[0].register_forward_hook(lambda m, i, o: seen.append((i[0].is_contiguous(memory_format=torch.channels_last), m.weight.is_contiguous(memory_format=torch.channels_last))))
    try:
        precision.queried(model, "float32", channels_last=True)(x[:4])
    finally:
        handle.remove()
        model.to(memory_format=torch.contiguous_format)
    assert seen == [(True, True)]
    plain, nhwc = run(cnn, "float32"), run(cnn, "float32", channels_last=True)
    model.to(memory_format=torch.contiguous_format)
    assert plain.keys() == nhwc.keys()
    for key, row in plain.items():
        assert nhwc[key]["broken"] == row["broken"] and nhwc[key]["robust_acc"] == row["robust_acc"], key
        assert "channels_last" not in nhwc[key]
    entry = lambda **o: RobustnessEval.model_validate({"evaluator": "robustness", "norms": NORMS, **o})  # noqa: E731
    assert evalstore.settings(entry(channels_last=True)) == evalstore.settings(entry())
