"""The triplet model, PGD in its embedding's threat model, and the embedding evaluator."""

from __future__ import annotations

import pytest
import torch

from analysis.load import read_artifact
from study import models, objectives
from study.attacks.embedding import EmbeddingPGD
from study.evaluators import EvalContext, embedding
from study.spec import TrainConfig
from study.evaluators.embedding import Options as EmbeddingEval
from study.spec.constraints import NormAxes
from study.train import init_model, predict, train


def _blobs(n_per_class=40, n_classes=3, seed=0):
    """Three classes of 1 x 8 x 8 images: a bright square in a class-specific corner plus noise."""
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for k in range(n_classes):
        x = torch.rand(n_per_class, 1, 8, 8, generator=g) * 0.3
        x[:, :, 4 * (k // 2) : 4 * (k // 2) + 4, 4 * (k % 2) : 4 * (k % 2) + 4] += 0.6
        xs.append(x.clamp(0, 1))
        ys.append(torch.full((n_per_class,), k))
    return torch.cat(xs), torch.cat(ys)


@pytest.fixture(scope="module")
def trained_triplet():
    x, y = _blobs()
    xt, yt = _blobs(seed=1)
    cfg = TrainConfig(model="triplet", epochs=4, batch_size=32, seed=0)
    model = init_model(cfg, (1, 8, 8), 3)
    train(model, cfg, x, y, xt, yt)
    return model.eval(), x, y, xt, yt


@pytest.mark.parametrize("loss", ["margin", "ratio"])
def test_triplet_losses_by_hand(loss):
    model = models.build("triplet", (1, 8, 8), 3, margin=0.3, triplet_loss=loss)
    # Two anchors of class 0 (each the other's only positive) and one of class 1 (no positive).
    emb = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]), dim=1)
    y = torch.tensor([0, 0, 1])
    d_ap = (emb[0] - emb[1]).square().sum()  # both anchors of class 0: the one negative is emb[2]
    d_an = torch.stack([(emb[0] - emb[2]).square().sum(), (emb[1] - emb[2]).square().sum()])
    if loss == "margin":
        expected = torch.relu(d_ap - d_an + 0.3).mean()
    else:
        p = torch.stack([d_ap.sqrt().expand(2), d_an.sqrt()], 1).softmax(1)
        expected = (p[:, 0].square() + (p[:, 1] - 1).square()).mean()
    assert model.triplet_loss(emb, y).item() == pytest.approx(expected.item(), rel=1e-6)


def test_triplet_classifies_by_nearest_centroid(trained_triplet):
    model, x, y, xt, yt = trained_triplet
    e = model.embed(xt)
    nearest = torch.cdist(e, model.centroids).argmin(1)
    assert torch.equal(predict(model, xt), nearest)
    assert (nearest == yt).float().mean() > 0.9  # the blobs are easy
    assert torch.allclose(e.norm(dim=1), torch.ones(len(e)), atol=1e-5)
    # The centroids are the class means of the training embeddings, and stored with the weights.
    assert torch.allclose(model.centroids[1], model.embed(x[y == 1]).mean(0), atol=1e-5)
    assert "centroids" in model.state_dict()
    assert objectives.of(model) == "triplet"


@pytest.mark.parametrize("eps", [0.05, 0.3, 1.0])
def test_embedding_pgd_respects_its_constraint(trained_triplet, eps):
    model, _, _, xt, yt = trained_triplet
    res = EmbeddingPGD(steps=30, step_size=0.05, bisection_steps=12).run(model, model.embed, xt, yt, eps, max_rows=50)
    # Recomputed in one fresh batch: every point inside the ball and the box.
    dist = (model.embed(res.x_adv) - model.embed(xt)).norm(dim=1)
    assert dist.max().item() <= eps
    assert torch.allclose(dist, res.dist, atol=1e-5)
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert torch.equal(res.fooled, predict(model, res.x_adv) != yt)
    if eps == 0.05:
        # The constraint binds: the steps were pulled back onto the ball's edge, not left at x.
        assert (dist > 0.9 * eps).float().mean() > 0.5
        assert not res.fooled.any()


def test_embedding_pgd_succeeds_with_a_large_ball(trained_triplet):
    model, _, _, xt, yt = trained_triplet
    small = EmbeddingPGD(steps=30, step_size=0.05).run(model, model.embed, xt, yt, 0.3)
    large = EmbeddingPGD(steps=30, step_size=0.05).run(model, model.embed, xt, yt, 2.0)
    assert large.fooled.float().mean() > 0.5
    assert large.fooled.sum() >= small.fooled.sum()


def test_embedding_evaluator(trained_triplet, tmp_path):
    model, x, y, xt, yt = trained_triplet
    ctx = EvalContext(model=model, x=xt, y=yt, seed=0, x_train=x, y_train=y, trial_id="t", results_uri=str(tmp_path))
    axes = EmbeddingEval(evaluator="embedding", eps=[0.2, 1.0], steps=10, step_size=0.05, input_attacks={"linf": NormAxes(eps=[0.3])}, input_steps=10, per_class=10, n_points=60)
    rows = embedding.evaluate(ctx, axes)
    assert len(rows) == axes.n_rows(False) == 1 + 2 * 2
    summary = rows[0]
    e, et = model.embed(x), model.embed(xt)
    assert summary["knn_acc"] == pytest.approx((y[torch.cdist(et, e).argmin(1)] == yt).float().mean().item())
    assert summary["within_mean"] < summary["between_mean"]
    pgd = [r for r in rows if r.get("attack") == "pgd"]
    adv = read_artifact(str(tmp_path), "embedding_adversaries")
    fooled = adv.filter(adv["attack"] == "pgd", adv["fooled"])
    for r in pgd:
        inside = (fooled["embed_dist"] <= r["embed_eps"]).mean() if fooled.height else None
        assert r["inside_rate"] == pytest.approx(inside)
        assert r["linf_mean"] <= 0.3 + 1e-6
    assert pgd[0]["inside_rate"] <= pgd[1]["inside_rate"]  # a larger ball holds more of them
    epgd = adv.filter(adv["attack"] == "embedding-pgd")
    for eps in (0.2, 1.0):
        assert epgd.filter(epgd["embed_eps"] == eps)["embed_dist"].max() <= eps
    hist = read_artifact(str(tmp_path), "embedding_distances")
    n = 3 * 10
    assert hist["count"].sum() == n * (n - 1) // 2  # every unordered pair of the sample, once
    # A trial whose model has no embedding skips the entry (study.trial; the ensemble tests run it).
    assert not axes.some_model_needs() <= models.entry("logreg").capabilities
    assert axes.some_model_needs() <= models.entry("triplet").capabilities


def test_embedding_transfer_measures_every_model_in_every_embedding(trained_triplet):
    from study.evaluators import Member, StudyEvalContext
    from study.evaluators.embedding import TransferOptions as EmbeddingTransferEval

    model, x, y, xt, yt = trained_triplet
    cfg = TrainConfig(model="logreg", epochs=3, batch_size=32, seed=0)
    logreg = init_model(cfg, (1, 8, 8), 3)
    train(logreg, cfg, x, y, xt, yt)
    members = [Member("t", "triplet", model), Member("l", "logreg", logreg.eval())]
    axes = EmbeddingTransferEval(evaluator="embedding-transfer", eps=[0.3, 1.5], steps=10, step_size=0.05, input_attacks={"linf": NormAxes(eps=[0.3])}, input_steps=10, n_points=60)
    rows = embedding.transfer(StudyEvalContext(members, xt, yt, seed=0, results_uri="", standard_source=None), axes)
    # One embedding (the logreg has none) x two attacked models.
    assert len(rows) == 2 * axes.pair_rows() == 2 * 2 * 2
    assert {r["source_trial_id"] for r in rows} == {"t"} and {r["trial_id"] for r in rows} == {"t", "l"}
    for target in ("t", "l"):
        own = [r for r in rows if r["trial_id"] == target]
        pgd = sorted((r for r in own if r["attack"] == "pgd"), key=lambda r: r["embed_eps"])
        assert pgd[0]["inside_rate"] <= pgd[1]["inside_rate"]
        constrained = sorted((r for r in own if r["attack"] == "embedding-pgd"), key=lambda r: r["embed_eps"])
        assert constrained[0]["robust_acc"] >= constrained[1]["robust_acc"]
        assert all(r.get("embed_dist_mean", 0) <= r["embed_eps"] for r in constrained)
    clean = (predict(logreg, xt[:60]) == yt[:60]).float().mean().item()
    assert all(r["clean_acc"] == pytest.approx(clean) for r in rows if r["trial_id"] == "l")
