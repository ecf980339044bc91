"""The crafted-images evaluator (study.evaluators.crafted): x0 + eps * sign(x1) stays inside the
Linf ball exactly (float rounding included), and the rows and artifacts agree with the model's
predictions on the images recomputed outside the evaluator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.load import read_artifact
from study import models
from study.evaluators import EvalContext, crafted
from study.evaluators.robustness import confidence
from study.results import to_table
from study.evaluators.crafted import Options as CraftedEval
from study.train import predict


def _pixels(dtype=torch.float32):
    """x0: every multiple of 1/1000 in [0, 1] and values where x0 + eps rounds upward in float32
    (0.7 + 0.3, 0.1 + 0.3, 0.5 + 0.1, ...); x1: ink (> 0) on every other pixel."""
    x0 = torch.cat([torch.linspace(0, 1, 1001), torch.tensor([0.7, 0.9, 0.1, 0.5, 0.4, 0.6, 0.05, 0.15])]).to(dtype)
    x1 = torch.zeros_like(x0)
    x1[::2] = torch.rand(len(x0[::2]), generator=torch.Generator().manual_seed(0)).to(dtype) * 0.9 + 0.05
    return x0, x1


def test_without_the_nudge_rounding_leaves_the_ball():
    # 0.7 + 0.3 and 0.1 + 0.3 round upward in float32: measured in float64 from the stored
    # float32 values, the naive crafted pixel is 1.2e-8 and 4.5e-9 farther than 0.3 from x0,
    # whether the sum is taken in float32 or in float64 and then rounded to float32.
    x0, ink, eps = torch.tensor([0.7, 0.1], dtype=torch.float32), torch.ones(2), 0.3
    naive32 = (x0 + eps * torch.sign(ink)).clamp(0, 1)
    naive64 = (x0.double() + eps * torch.sign(ink).double()).clamp(0, 1).float()
    for naive in (naive32, naive64):
        assert ((naive.double() - x0.double()).abs() > eps).all()
    x = crafted.craft(x0, ink, eps)
    assert ((x.double() - x0.double()).abs() <= eps).all()
    assert torch.equal(x, torch.nextafter(naive64, x0))  # one step back toward x0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("eps", [0.1, 0.2, 0.3])
def test_craft_stays_inside_the_linf_ball_exactly(eps, dtype):
    x0, x1 = _pixels(dtype)
    x = crafted.craft(x0, x1, eps)
    assert x.dtype == dtype
    x64, x0_64 = x.double(), x0.double()
    assert (x64 - x0_64).abs().max().item() <= eps
    assert ((x >= 0) & (x <= 1)).all()
    blank = x1 == 0
    assert torch.equal(x[blank], x0[blank])
    # Where x1 has ink: min(1, x0 + eps), rounded to the dtype, or one step below it (the nudge).
    ink = ~blank
    want = torch.minimum(torch.ones_like(x0_64), x0_64 + eps)[ink].to(dtype)
    assert ((x[ink] == want) | (x[ink] == torch.nextafter(want, x0[ink]))).all()
    assert (x[ink] >= x0[ink]).all()
    assert (x64[ink] - want.double()).abs().max() <= torch.finfo(dtype).eps
    if dtype == torch.float32 and eps == 0.3:
        assert (x[ink] != want).any()  # the nudge was needed here


def test_craft_broadcasts_every_x0_against_every_x1():
    g = torch.Generator().manual_seed(1)
    x0, x1 = torch.rand(3, 1, 4, 4, generator=g), (torch.rand(5, 1, 4, 4, generator=g) > 0.5).float()
    x = crafted.craft(x0[:, None], x1[None], 0.2)
    assert x.shape == (3, 5, 1, 4, 4)
    for i in range(3):
        for j in range(5):
            assert torch.equal(x[i, j], crafted.craft(x0[i], x1[j], 0.2))


def _ctx(tmp_path, counts=(4, 5, 3), per_class_train=6):
    g = torch.Generator().manual_seed(2)
    n = sum(counts)
    # Digit-like images: blank background, some ink.
    x = torch.rand(n, 1, 8, 8, generator=g) * (torch.rand(n, 1, 8, 8, generator=g) > 0.6)
    y = torch.cat([torch.full((k,), c) for c, k in enumerate(counts)])
    order = torch.randperm(n, generator=g)  # classes interleaved in the evaluation split
    x, y = x[order], y[order]
    x_train = torch.rand(3 * per_class_train, 1, 8, 8, generator=g)
    y_train = torch.arange(3).repeat(per_class_train)
    torch.manual_seed(0)
    model = models.build("logreg", (1, 8, 8), 3)
    return EvalContext(model=model, x=x, y=y, seed=0, x_train=x_train, y_train=y_train, trial_id="t0", results_uri=str(tmp_path))


def test_evaluate_rows_and_artifacts(tmp_path):
    ctx = _ctx(tmp_path)
    axes = CraftedEval(evaluator="crafted", eps=[0.1, 0.3], per_class=3)
    rows = crafted.evaluate(ctx, axes)
    to_table(rows)
    assert len(rows) == axes.n_rows(False) == 2
    n_classes, per_class = 3, 3
    firsts = {c: (ctx.y == c).nonzero().squeeze(1)[:per_class] for c in range(n_classes)}
    table = read_artifact(ctx.results_uri, "crafted")
    for row, eps in zip(rows, axes.eps):
        assert row["evaluator"] == "crafted" and row["attack"] is None and row["norm"] == "linf"
        assert row["eps"] == eps and row["per_class"] == per_class and row["clean_acc"] == ctx.clean_acc
        assert row["n_eval"] == per_class**2 * n_classes * (n_classes - 1)
        assert row["robust_acc"] + row["target_rate"] <= 1
        t = table.filter(table["eps"] == eps)
        assert len(t) == row["n_eval"]
        # Recompute every crafted image from its points, and the model's answers on it.
        x0 = ctx.x[t["point_a"].to_list()]
        x1 = ctx.x[t["point_b"].to_list()]
        for c in range(n_classes):
            assert set(t.filter(t["class_a"] == c)["point_a"].to_list()) == set(firsts[c].tolist())
        assert (ctx.y[t["point_a"].to_list()] == torch.tensor(t["class_a"].to_list())).all()
        assert (ctx.y[t["point_b"].to_list()] == torch.tensor(t["class_b"].to_list())).all()
        assert all(firsts[a][i] == p for a, i, p in zip(t["class_a"], t["i"], t["point_a"]))
        assert all(firsts[b][j] == p for b, j, p in zip(t["class_b"], t["j"], t["point_b"]))
        assert (t["class_a"] != t["class_b"]).all()
        assert len(set(zip(t["class_a"], t["class_b"], t["i"], t["j"]))) == len(t)  # every pair once
        x = crafted.craft(x0, x1, eps)
        pred = predict(ctx.model, x)
        assert pred.tolist() == t["pred"].to_list()
        np.testing.assert_allclose(t["confidence"].to_numpy(), confidence(ctx.model, x).numpy(), rtol=1e-6)
        a, b = torch.tensor(t["class_a"].to_list()), torch.tensor(t["class_b"].to_list())
        assert row["robust_acc"] == pytest.approx((pred == a).double().mean().item())
        assert row["target_rate"] == pytest.approx((pred == b).double().mean().item())
        assert row["adv_confidence_mean"] == pytest.approx(t["confidence"].mean(), rel=1e-6)
        delta = (x - x0).flatten(1)
        assert row["linf_mean"] == pytest.approx(delta.abs().amax(1).mean().item(), rel=1e-6)
        assert row["l2_mean"] == pytest.approx(delta.norm(dim=1).mean().item(), rel=1e-6)
        assert (delta.double().abs().amax(1) <= eps).all()

    images = read_artifact(ctx.results_uri, "crafted_images")
    x0_rows = images.filter(images["kind"] == "x0")
    assert len(x0_rows) == n_classes and x0_rows["eps"].null_count() == n_classes
    assert x0_rows["class_a"].to_list() == x0_rows["class_b"].to_list() == list(range(n_classes))
    first = ctx.x[[firsts[c][0].item() for c in range(n_classes)]]
    assert torch.equal(torch.tensor(x0_rows["pixels"].to_list()), first.flatten(1))
    assert x0_rows["pred"].to_list() == predict(ctx.model, first).tolist()
    for eps in axes.eps:
        rows_eps = images.filter((images["kind"] == "crafted") & (images["eps"] == eps))
        assert len(rows_eps) == n_classes * (n_classes - 1)
        a, b = rows_eps["class_a"].to_list(), rows_eps["class_b"].to_list()
        x = crafted.craft(first[a], first[b], eps)
        assert torch.equal(torch.tensor(rows_eps["pixels"].to_list()), x.flatten(1))
        t = table.filter((table["eps"] == eps) & (table["i"] == 0) & (table["j"] == 0)).sort("class_a", "class_b")
        assert rows_eps.sort("class_a", "class_b")["pred"].to_list() == t["pred"].to_list()
        assert rows_eps.sort("class_a", "class_b")["confidence"].to_list() == t["confidence"].to_list()
    assert set(images["channels"]) == {1} and set(images["height"]) == set(images["width"]) == {8}


def test_a_class_with_fewer_images_crafts_what_it_has(tmp_path, monkeypatch):
    ctx = _ctx(tmp_path, counts=(2, 1, 4))
    monkeypatch.setattr(crafted, "BATCH", 5)  # several batches per source class
    rows = crafted.evaluate(ctx, CraftedEval(evaluator="crafted", eps=[0.2], per_class=3))
    k = {0: 2, 1: 1, 2: 3}
    assert rows[0]["n_eval"] == sum(k[a] * k[b] for a in k for b in k if a != b)
    table = read_artifact(ctx.results_uri, "crafted")
    x = crafted.craft(ctx.x[table["point_a"].to_list()], ctx.x[table["point_b"].to_list()], 0.2)
    assert predict(ctx.model, x).tolist() == table["pred"].to_list()


def test_evaluate_needs_two_classes(tmp_path):
    ctx = _ctx(tmp_path)
    ctx.y = torch.zeros_like(ctx.y)
    with pytest.raises(ValueError, match="two classes"):
        crafted.evaluate(ctx, CraftedEval(evaluator="crafted"))
