"""Goodfellow et al.'s control for adversarial training: training on random noise of the
threat's size (study.train.noisy), checked on exact and statistical answers."""

from __future__ import annotations

import math
import re

import pytest
import torch

from study import data, norms
from study.rng import PointRNG
from study.spec import DataSpec, SpecError, TrainConfig, parse_spec
from study.train import init_model, noisy, train


def _rng(n: int, seed: int = 0) -> PointRNG:
    return PointRNG.for_points(seed, n, torch.device("cpu"))


def test_sign_noise_moves_every_pixel_by_exactly_eps():
    x = torch.full((200, 1, 28, 28), 0.5)
    out = noisy("noise-sign", None, x, None, 0.1, norms.Linf, _rng(200))
    delta = out - x
    assert torch.allclose(delta.abs(), torch.full_like(delta, 0.1))
    assert abs((delta > 0).float().mean().item() - 0.5) < 0.01  # +eps and -eps with equal odds
    assert torch.equal(out, noisy("noise-sign", None, x, None, 0.1, norms.Linf, _rng(200)))  # keyed by the point
    assert not torch.equal(out, noisy("noise-sign", None, x, None, 0.1, norms.Linf, _rng(200, seed=1)))


def test_uniform_noise_fills_the_linf_ball_and_stays_in_the_box():
    x = torch.full((500, 1, 28, 28), 0.5)
    delta = noisy("noise-uniform", None, x, None, 0.2, norms.Linf, _rng(500)) - x
    assert delta.abs().max() <= 0.2 + 1e-6
    assert abs(delta.mean().item()) < 2e-3
    assert delta.std().item() == pytest.approx(0.2 / math.sqrt(3), rel=0.01)  # U(-eps, eps)
    edge = noisy("noise-uniform", None, torch.zeros(50, 1, 28, 28), None, 0.2, norms.Linf, _rng(50))
    assert edge.min() >= 0 and edge.max() <= 0.2 + 1e-6


def test_uniform_noise_in_the_l2_ball():
    x = torch.full((300, 1, 28, 28), 0.5)
    size = norms.L2.measure(noisy("noise-uniform", None, x, None, 1.5, norms.L2, _rng(300)) - x)
    assert size.max() <= 1.5 + 1e-5
    assert size.min() > 1.5 * 0.99  # in 784 dimensions the ball's volume lies at its surface


@pytest.mark.parametrize("adversarial, message", [
    ({"attack": "noise-sign", "norm": "l2", "eps": 1.0}, "noise-sign moves every pixel by +-eps"),
    ({"attack": "noise-uniform", "norm": "linf", "eps": 0.1, "steps": 5}, "steps: noise-uniform draws its noise once"),
    ({"attack": "noise-gauss", "norm": "linf", "eps": 0.1}, "unknown value 'noise-gauss'"),
])
def test_bad_noise_training_is_a_spec_error(adversarial, message):
    with pytest.raises(SpecError, match=re.escape(message)):
        parse_spec({"name": "n", "train": {"model": "logreg", "adversarial": adversarial}, "evaluate": [{"evaluator": "rubbish"}]})


def test_noise_training_trains_on_the_noisy_images_deterministically():
    ds = data.load(DataSpec(n_eval=200))
    x, y = torch.from_numpy(ds.x_train[:1000]), torch.from_numpy(ds.y_train[:1000])
    xe, ye = torch.from_numpy(ds.x_test), torch.from_numpy(ds.y_test)

    def weights(adversarial):
        cfg = TrainConfig(model="logreg", epochs=1, seed=0, adversarial=adversarial)
        model = init_model(cfg, ds.input_shape, ds.n_classes)
        train(model, cfg, x, y, xe, ye)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    sign = {"attack": "noise-sign", "norm": "linf", "eps": 0.25, "alpha": 0.0}
    assert torch.equal(weights(sign), weights(sign))
    assert not torch.allclose(weights(sign), weights(None))
    assert not torch.allclose(weights(sign), weights({**sign, "attack": "noise-uniform"}))
