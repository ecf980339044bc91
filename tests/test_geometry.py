"""Tests for study.geometry on tiny problems whose answers are worked out by hand, and the PGD
bisection against the exact minimal perturbations of a linear model."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from study import geometry as G
from study.norms import get
from study.train import predict


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def f(w, b, x):
    return x.flatten(1) @ w + b


# --------------------------------------------------------------------------------------------
# Tilting


def test_centroids_are_flattened_class_means():
    x = t([0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]).reshape(4, 1, 1, 2)
    c0, c1 = G.centroids(x, torch.tensor([0, 0, 1, 1]))
    assert torch.equal(c0, t(1.0, 0.0)) and torch.equal(c1, t(1.0, 2.0))


@pytest.mark.parametrize(
    "w, angle",
    [((2.0, 0.0, 0.0), 0.0), ((0.0, 3.0, 0.0), 90.0), ((1.0, 1.0, 0.0), 45.0), ((1.0, 0.0, -1.0), 45.0), ((-1.0, 0.0, 0.0), 180.0)],
)
def test_tilting_angle(w, angle):
    assert G.tilting_angle(t(*w), t(0.5, 0.0, 0.0)) == pytest.approx(angle, abs=1e-9)


def test_predicted_d_adv():
    # ||c1 - c0|| = ||(3, 4)|| = 5; 0.5 * 5 * cos 60 = 1.25; untilted: 2.5 (half the gap).
    c0, c1 = t(1.0, 1.0), t(4.0, 5.0)
    assert G.predicted_d_adv(c0, c1, 60.0) == pytest.approx(1.25)
    assert G.predicted_d_adv(c0, c1, 0.0) == pytest.approx(2.5)


def test_tilting_plane_hand_case():
    # z_hat = e1, m = (1, 0, 0); w = (1, 0, 1): n = e3, so wz = wn = 1; offset = w.m + b = 0.
    w, b = t(1.0, 0.0, 1.0), -1.0
    x = t([3.0, 5.0, 2.0], [0.0, 7.0, 1.0])  # the second point is on the boundary
    uv, line = G.tilting_plane(w, b, t(0.0, 0.0, 0.0), t(2.0, 0.0, 0.0), x)
    assert torch.allclose(uv, t([2.0, 2.0], [-1.0, 1.0]))
    assert line == pytest.approx({"wz": 1.0, "wn": 1.0, "offset": 0.0})
    u, v = uv[1]
    assert line["wz"] * u + line["wn"] * v + line["offset"] == pytest.approx(0.0)


def test_tilting_plane_line_is_f_exactly():
    g = torch.Generator().manual_seed(0)
    w, x = torch.randn(12, generator=g), torch.rand(50, 1, 3, 4, generator=g)
    c0, c1 = torch.rand(12, generator=g), torch.rand(12, generator=g)
    uv, line = G.tilting_plane(w, 0.3, c0, c1, x)
    assert line["wn"] > 0
    on_line = line["wz"] * uv[:, 0] + line["wn"] * uv[:, 1] + line["offset"]
    assert torch.allclose(on_line, f(w, 0.3, x), atol=1e-5)


def test_tilting_plane_needs_w_off_the_centroid_axis():
    with pytest.raises(ValueError, match="parallel"):
        G.tilting_plane(t(2.0, 0.0), 0.0, t(0.0, 0.0), t(1.0, 0.0), t([0.5, 0.5]))


# --------------------------------------------------------------------------------------------
# Minimal perturbations of a linear model


def test_free_min_perturbation():
    # f(x) = 3 - 4 - 1 = -2: L2 2 / ||(3, -4)||_2 = 0.4, Linf 2 / ||(3, -4)||_1 = 2 / 7.
    w, b, x = t(3.0, -4.0), -1.0, t([1.0, 1.0])
    assert G.min_perturbation_free(w, b, x, "l2").item() == pytest.approx(0.4)
    assert G.min_perturbation_free(w, b, x, "linf").item() == pytest.approx(2 / 7)


def test_box_equals_free_where_the_box_does_not_bind():
    # f = -0.4 at (0.5, 0.5): both pixels rise by 0.2, well inside the box.
    w, b, x = t(1.0, 1.0), -1.4, t([0.5, 0.5])
    for norm, dist in (("linf", 0.2), ("l2", 0.2 * math.sqrt(2))):
        box, delta = G.min_perturbation_box(w, b, x, norm)
        assert box.item() == pytest.approx(dist) and G.min_perturbation_free(w, b, x, norm).item() == pytest.approx(dist)
        assert torch.allclose(delta, t([0.2, 0.2]))


def test_box_binds():
    # f = 1.4 - 1.8 = -0.4 at (0.9, 0.5); pixel 0 can rise only 0.1, so pixel 1 makes up the
    # rest: Linf 0.1 + eps = 0.4 -> eps = 0.3 (free: 0.2); L2 the same move (0.1, 0.3), norm
    # sqrt(0.1) (free: 0.4 / sqrt 2).
    w, b, x = t(1.0, 1.0), -1.8, t([0.9, 0.5])
    for norm, dist, free in (("linf", 0.3, 0.2), ("l2", math.sqrt(0.1), 0.4 / math.sqrt(2))):
        box, delta = G.min_perturbation_box(w, b, x, norm)
        assert box.item() == pytest.approx(dist)
        assert G.min_perturbation_free(w, b, x, norm).item() == pytest.approx(free)
        assert torch.allclose(delta, t([0.1, 0.3]))


def test_box_linf_sorts_the_rooms():
    # f = 3.85 - 5 = -1.15. Rooms toward the boundary (down where w < 0): 0.2, 0.7, 0.4, 0.05.
    # g(eps) = sum |w_i| min(eps, room_i) is 0.35 at 0.05, 0.95 at 0.2, 1.55 at 0.4, so
    # 0.15 + 0.2 + 3 eps = 1.15 -> eps = 0.8 / 3.
    w, b, x = t(1.0, 2.0, -1.0, 3.0), -5.0, t([0.8, 0.3, 0.4, 0.95])
    box, delta = G.min_perturbation_box(w, b, x, "linf")
    assert box.item() == pytest.approx(0.8 / 3)
    e = 0.8 / 3
    assert torch.allclose(delta, t([0.2, e, -e, 0.05]))


def test_box_l2_sorts_the_knees():
    # Same problem, delta_i = clip(t w_i): knees room_i / |w_i| = 0.2, 0.35, 0.4, 1/60. Past
    # 1/60 pixel 3 is saturated (0.15 of f), the rest give t * (1 + 4 + 1) = 1 -> t = 1/6:
    # delta = (1/6, 1/3, -1/6, 0.05), ||delta||^2 = 6/36 + 0.05^2.
    w, b, x = t(1.0, 2.0, -1.0, 3.0), -5.0, t([0.8, 0.3, 0.4, 0.95])
    box, delta = G.min_perturbation_box(w, b, x, "l2")
    assert box.item() == pytest.approx(math.sqrt(1 / 6 + 0.05**2))
    assert torch.allclose(delta, t([1 / 6, 1 / 3, -1 / 6, 0.05]))


def test_box_pushes_down_when_f_is_positive():
    # f = 0.1 - 1.4 + 1.8 = 0.5: pixel 0 (w = 1) can fall 0.1, pixel 1 (w = -2) can rise 0.3.
    # Linf: 0.1 + 2 eps = 0.5 -> eps = 0.2. L2: delta = (-min(t, 0.1), min(2 t, 0.3)) reduces f
    # by 0.1 + 0.4 at t = 0.1. Both: delta = (-0.1, 0.2).
    w, b, x = t(1.0, -2.0), 1.8, t([0.1, 0.7])
    box, delta = G.min_perturbation_box(w, b, x, "linf")
    assert box.item() == pytest.approx(0.2) and torch.allclose(delta, t([-0.1, 0.2]))
    box, delta = G.min_perturbation_box(w, b, x, "l2")
    assert box.item() == pytest.approx(math.sqrt(0.01 + 0.04)) and torch.allclose(delta, t([-0.1, 0.2]))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_box_unreachable_on_boundary_and_zero_weights(norm):
    w = t(1.0, 1.0, 0.0)
    # f = -0.7 with at most 0.2 to gain: unreachable, inf and the largest move.
    box, delta = G.min_perturbation_box(w, -2.5, t([0.9, 0.9, 0.3]), norm)
    assert box.isinf().all() and torch.allclose(delta, t([0.1, 0.1, 0.0]))
    # Rows on the boundary (f = 0) stay; a pixel with w = 0 never moves.
    box, delta = G.min_perturbation_box(w, -1.5, t([1.0, 0.5, 0.3], [0.2, 0.1, 0.7]), norm)
    assert box[0] == 0 and (delta[0] == 0).all()
    assert box[1] > 0 and box[1].isfinite() and delta[1, 2] == 0


@pytest.mark.parametrize("tiny_weights", [False, True])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_box_lands_on_the_boundary_inside_the_box(norm, tiny_weights):
    g = torch.Generator().manual_seed(1)
    w, x = torch.randn(784, generator=g), torch.rand(40, 1, 28, 28, generator=g) ** 3  # many dark pixels
    if tiny_weights:  # as L2-regularized training leaves on pixels that are always 0: ~1e-45
        w[::3] = 4e-45
    x[:, :, :5] = 0.0  # and saturated ones
    b = -f(w, 0.0, x).median().item() + 0.5
    box, delta = G.min_perturbation_box(w, b, x, norm)
    assert delta.shape == x.shape and box.isfinite().all()
    assert f(w, b, x + delta).abs().max() < 1e-4
    assert ((x + delta) >= 0).all() and ((x + delta) <= 1).all()
    free = G.min_perturbation_free(w, b, x, norm)
    assert (box >= free * (1 - 1e-5)).all() and (box > free * 1.01).any()  # the box binds somewhere
    assert torch.allclose(get(norm).measure(delta), box, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# Bisection with PGD against the exact answer


def linear_model(w, b):
    """nn.Linear with two logits whose difference (class 1 minus class 0) is w.x + b."""
    model = nn.Linear(len(w), 2)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
        model.weight[1] = w
        model.bias[1] = b
    return model


@pytest.fixture(scope="module")
def linear_problem():
    g = torch.Generator().manual_seed(1)
    d, n = 20, 64
    w, x = torch.randn(d, generator=g), torch.rand(n, d, generator=g)
    b = -f(w, 0.0, x).median().item()
    keep = f(w, b, x).abs() > 0.05  # not on the boundary, where the bracket's width dominates
    return linear_model(w, b), w, b, x[keep]


@pytest.mark.parametrize("norm, hi", [("linf", 1.0), ("l2", 5.0)])
def test_bisection_matches_the_exact_minimal_perturbation(linear_problem, norm, hi):
    model, w, b, x = linear_problem
    exact, _ = G.min_perturbation_box(w, b, x, norm)
    assert (exact > G.min_perturbation_free(w, b, x, norm) * 1.01).sum() >= 5, "the box should bind for some points"
    found = G.minimal_eps_bisection(model, x, predict(model, x), norm, hi=hi)
    assert found.isfinite().all()
    assert (found >= exact * (1 - 1e-4)).all(), "PGD found an adversarial closer than the exact minimum"
    assert ((found - exact) / exact).median() < 0.01  # measured: about 0.0005


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_bisection_zero_for_misclassified_inf_for_unreachable(norm):
    # w > 0 and b = 0.5: f >= 0.5 everywhere in the box, so class 1 cannot be left; class 0
    # labels are wrong from the start.
    w = torch.full((20,), 0.1)
    model = linear_model(w, 0.5)
    x = torch.rand(6, 20, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([1, 1, 1, 0, 0, 0])
    found = G.minimal_eps_bisection(model, x, y, norm, hi=torch.full((6,), 2.0), iters=3, steps=10)
    assert found[:3].isinf().all() and (found[3:] == 0).all()
    assert G.min_perturbation_box(w, 0.5, x, norm)[0].isinf().all()
