"""Carlini-Wagner L2 (study.attacks.cw) on real models: it finds the smallest perturbations.

The invariants every attack shares (ball, box, fooled rows misclassified, model flags) are the
property tests of test_attacks.py, which sample cw with the other attacks.
"""

from __future__ import annotations

import math

import torch

from study import attacks, data, geometry, models
from study.attacks.cw import CarliniWagnerL2
from study.norms import L2, Linf
from study.rng import PointRNG
from study.spec import DataSpec, TrainConfig
from study.train import init_model, predict, train


def _correct(model, x, y, n):
    ok = predict(model, x) == y
    return x[ok][:n], y[ok][:n]


def test_cw_finds_smaller_l2_perturbations_than_pgd_on_the_points_both_fool(standard_cnn):
    model, x, y = standard_cnn
    x, y = _correct(model, x, y, 150)
    x_best, found = attacks.make("cw").closest(model, x, y, max_rows=256)
    dist = L2.measure(x_best - x)
    assert found.float().mean() >= 0.97
    with torch.no_grad():
        assert (model(x_best[found]).argmax(1) != y[found]).all()
    for eps in (1.0, 1.5, 2.0):
        res = attacks.make("pgd", steps=40).run(model, x, y, torch.full((len(y),), eps), L2, rng=PointRNG.for_points(0, len(y)))
        pgd_dist = L2.measure(res.x_adv - x)
        both = res.fooled & found
        # On the same points: C&W's adversarials are closer than PGD's.
        assert dist[both].mean() < 0.85 * pgd_dist[both].mean(), (eps, dist[both].mean(), pgd_dist[both].mean())
        # Within the same radius C&W fools about as many points as PGD (which stops at its first
        # adversarial, so its success at eps is already a near-minimal search).
        assert (found & (dist <= eps)).float().mean() >= res.fooled.float().mean() - 0.03


def test_cw_approaches_the_exact_minimum_of_a_linear_model():
    """Logistic regression on 3 vs 7: the smallest L2 perturbation inside [0, 1] has a closed
    form (study.geometry.min_perturbation_box). C&W cannot beat it and should come close."""
    ds = data.load(DataSpec(dataset="mnist-5k", classes=[3, 7]))
    cfg = TrainConfig(model="logreg", epochs=5, lr=1e-2, seed=0)
    model = init_model(cfg, ds.input_shape, ds.n_classes)
    x, y, xt, yt = map(torch.from_numpy, (ds.x_train, ds.y_train, ds.x_test, ds.y_test))
    train(model, cfg, x, y, xt, yt)
    xt, yt = _correct(model, xt, yt, 60)
    x_best, found = attacks.make("cw").closest(model, xt, yt)
    assert found.all()
    w, b = models.binary_linear(model)
    exact, _ = geometry.min_perturbation_box(w, b, xt, "l2")
    cw = L2.measure(x_best - xt).double()
    assert (cw >= exact * (1 - 1e-3)).all(), "C&W beat the exact minimum: its adversarials are not what it says"
    assert (cw / exact).median() < 1.05, (cw / exact).median()


def test_confidence_buys_a_margin():
    """With kappa > 0 every kept adversarial beats the true logit by kappa, and is farther away."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()
    x = torch.rand(40, 1, 6, 6)
    y = predict(model, x)
    plain, found0 = attacks.make("cw", steps=200, initial_c=1.0).closest(model, x, y)
    margin, found2 = attacks.make("cw", steps=200, confidence=0.2, initial_c=1.0).closest(model, x, y)
    assert found0.all() and found2.float().mean() > 0.9
    with torch.no_grad():
        z = model(margin[found2])
    true = z.gather(1, y[found2, None]).squeeze(1)
    other = z.scatter(1, y[found2, None], -math.inf).amax(1)
    assert (other - true > 0.2 - 1e-5).all()
    both = found0 & found2
    assert (L2.measure(margin - x)[both] > L2.measure(plain - x)[both]).all()


def test_against_an_eps_grid_counts_a_point_from_its_size_on():
    x = torch.zeros(3, 1, 2, 2)
    x_best = x.clone()
    x_best[0, 0, 0, 0] = 0.5  # L2 0.5, Linf 0.5
    x_best[1] = 0.25  # L2 0.5, Linf 0.25
    found = torch.tensor([True, True, False])
    eps = torch.tensor([0.3, 0.5, 1.0]).expand(3, 3)
    res = CarliniWagnerL2.against(x, x_best, found, eps, L2)
    assert res.fooled.tolist() == [[False, True, True], [False, True, True], [False, False, False]]
    res = CarliniWagnerL2.against(x, x_best, found, eps, Linf)
    assert res.fooled.tolist() == [[False, True, True], [True, True, True], [False, False, False]]
    # A point whose adversarial is beyond the largest eps gets its projection onto that ball.
    res = CarliniWagnerL2.against(x, x_best, found, torch.tensor([0.1, 0.1, 0.1]), L2)
    assert torch.allclose(L2.measure(res.x_adv[:2] - x[:2]), torch.tensor([0.1, 0.1]))
