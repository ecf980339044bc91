"""The model registry and the training objectives, on hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from study import models, objectives
from study.spec import TrainConfig
from study.train import init_model, train, weight_penalty


def test_hinge_loss_by_hand():
    # f = logit_1 - logit_0: 2, -0.5, 0.25 for labels 1, 1, 0 -> max(0, 1 - y f) = 0, 1.5, 1.25
    logits = torch.tensor([[0.0, 2.0], [0.0, -0.5], [0.0, 0.25]])
    assert objectives.hinge(logits, torch.tensor([1, 1, 0])).item() == pytest.approx((0 + 1.5 + 1.25) / 3)


def test_one_vs_rest_loss_and_probabilities_by_hand():
    model = models.build("rbf", (1, 1, 2), 2)
    logits = torch.log(torch.tensor([[0.8, 0.1]]))
    expected = -(math.log(0.8) + math.log(1 - 0.1))  # class 0 is the true one
    assert objectives.LOSSES[objectives.of(model)](logits, torch.tensor([0])).item() == pytest.approx(expected, rel=1e-5)
    # Independent per class: they need not sum to 1, and far from every prototype all are small.
    assert torch.allclose(objectives.probabilities(model, logits), torch.tensor([[0.8, 0.1]]))


def test_rbf_logits_are_negative_weighted_squared_distances():
    model = models.build("rbf", (1, 2, 3), 4)
    x = torch.rand(5, 1, 2, 3)
    beta = model.log_precision.exp()
    brute = -(beta[None] * (x.flatten(1)[:, None, :] - model.centres[None]).square()).sum(2)
    assert torch.allclose(model(x), brute, atol=1e-5)
    assert (model(x) <= 1e-6).all()


def test_linear_svm_logits_and_binary_linear_form():
    model = models.build("linear-svm", (1, 2, 2), 2)
    x = torch.rand(6, 1, 2, 2)
    w, b = models.binary_linear(model)
    f = x.flatten(1) @ w + b
    logits = model(x)
    assert torch.allclose(logits[:, 1] - logits[:, 0], f, atol=1e-6)
    assert model.objective == "hinge"
    logreg = models.build("logreg", (1, 2, 2), 2)
    w, b = models.binary_linear(logreg)
    assert torch.allclose(logreg(x)[:, 1] - logreg(x)[:, 0], x.flatten(1) @ w + b, atol=1e-6)
    assert models.binary_linear(models.build("logreg", (1, 2, 2), 3)) is None
    assert models.binary_linear(models.build("maxout", (1, 2, 2), 2)) is None


def test_maxout_takes_the_max_of_its_pieces():
    layer = models.Maxout(3, units=2, pieces=4)
    x = torch.rand(5, 3)
    pieces = layer.linear(x).view(5, 2, 4)
    assert torch.equal(layer(x), pieces.amax(2))
    net = models.build("maxout", (1, 4, 4), 10, pieces=3)
    assert net(torch.rand(2, 1, 4, 4)).shape == (2, 10)
    assert net[1].linear.out_features == 240 * 3


def test_width_axes_size_the_cnn_and_mlp():
    net = models.build("cnn", (1, 28, 28), 10, channels=32, hidden=1024)
    convs = [m for m in net if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32] and net[-1].in_features == 1024 and net[-3].in_features == 32 * 7 * 7
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    default = models.build("cnn", (1, 28, 28), 10)
    assert [m.out_channels for m in default if isinstance(m, nn.Conv2d)] == [8, 16] and default[-1].in_features == 128
    assert models.build("mlp", (1, 4, 4), 10, hidden=7)[1].out_features == 7
    assert {"hidden", "channels"} <= models.MODELS["mc-cnn"].params() and models.MODELS["mlp"].params() == {"hidden"}


def test_build_refuses_what_a_model_cannot_take():
    with pytest.raises(ValueError, match="takes no pieces"):
        models.build("logreg", (1, 4, 4), 10, pieces=3)
    with pytest.raises(ValueError, match="takes no channels"):
        models.build("mlp", (1, 4, 4), 10, channels=8)
    with pytest.raises(ValueError, match="two classes"):
        models.build("linear-svm", (1, 4, 4), 10)


def test_weight_penalty_covers_weights_not_biases_or_prototypes():
    net = nn.Sequential(nn.Flatten(), nn.Linear(3, 2))
    with torch.no_grad():
        net[1].weight.fill_(2.0)
        net[1].bias.fill_(100.0)
    assert weight_penalty(net).item() == pytest.approx(6 * 4.0)
    assert weight_penalty(models.build("rbf", (1, 2, 2), 3)) == 0


def test_l2_shrinks_the_svm_and_cosine_schedule_converges():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 1, 1, 10, generator=g)
    y = (x.flatten(1) @ torch.linspace(-1, 1, 10) > 0).long()
    sizes = []
    for lam in (1e-4, 1.0):
        cfg = TrainConfig(model="linear-svm", epochs=50, lr=3e-2, batch_size=20, lr_schedule="cosine", l2=lam, seed=0)
        model = init_model(cfg, (1, 1, 10), 2)
        out = train(model, cfg, x, y, x, y)
        sizes.append(models.binary_linear(model)[0].norm().item())
        if lam == 1e-4:
            assert out["clean_acc"] >= 0.95
    assert sizes[1] < sizes[0] / 5
