"""MC dropout (study.mc): the uncertainty measures on hand-computed distributions, the batched
sampler, and the MC predictive an attack sees."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from study import mc, models
from study.evaluators.uncertainty import auroc
from study.train import predict


def test_mi_and_smv_of_identical_samples_are_zero():
    p = torch.tensor([[[0.7, 0.3]] * 5])
    assert mc.mutual_information(p).item() == pytest.approx(0, abs=1e-7)
    assert mc.softmax_variance(p).item() == pytest.approx(0, abs=1e-7)


def test_mi_and_smv_of_two_certain_disagreeing_samples():
    p = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    assert mc.mutual_information(p).item() == pytest.approx(math.log(2))  # H[(.5, .5)] - 0
    assert mc.softmax_variance(p).item() == pytest.approx(0.25 + 0.25)


def test_mi_and_smv_by_hand():
    p = torch.tensor([[[0.9, 0.1], [0.5, 0.5], [0.1, 0.9]]], dtype=torch.float64)
    h = lambda q: -sum(v * math.log(v) for v in q)  # noqa: E731
    mi = h([0.5, 0.5]) - (h([0.9, 0.1]) + h([0.5, 0.5]) + h([0.1, 0.9])) / 3
    assert mc.mutual_information(p).item() == pytest.approx(mi)  # 0.2454
    assert mc.softmax_variance(p).item() == pytest.approx(2 * (0.16 + 0 + 0.16) / 3)
    # Three classes, two samples: each class's variance over t is (a - b)^2 / 4.
    q = torch.tensor([[[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]]], dtype=torch.float64)
    assert mc.softmax_variance(q).item() == pytest.approx((0.4**2 + 0.1**2 + 0.5**2) / 4)
    mean = [0.4, 0.25, 0.35]
    assert mc.mutual_information(q).item() == pytest.approx(h(mean) - (h([0.6, 0.3, 0.1]) + h([0.2, 0.2, 0.6])) / 2)


def _mc_cnn(p=0.5):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return models.build("mc-cnn", (1, 28, 28), 10, dropout=p).eval()


def test_mc_dropout_stays_on_in_eval_mode_and_plain_models_are_deterministic():
    x = torch.rand(4, 1, 28, 28)
    model = _mc_cnn()
    assert mc.is_stochastic(model) and not mc.is_stochastic(models.build("cnn", (1, 28, 28), 10))
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))
    plain = models.build("mc-cnn", (1, 28, 28), 10, dropout=0.0).eval()
    assert not mc.is_stochastic(plain)
    assert torch.equal(mc.sample_probs(plain, x, 3)[:, 0], mc.sample_probs(plain, x, 3)[:, 2])


def test_batched_samples_are_the_full_expansion_with_the_prefix_run_once():
    """The layers before the first dropout are deterministic: running them once per input and
    repeating their output gives exactly the samples of a forward pass over repeated inputs
    (the same dropout masks drawn in the same order)."""
    model, x, t = _mc_cnn(), torch.rand(5, 1, 28, 28), 7
    torch.manual_seed(1)
    batched = mc.sample_probs(model, x, t)
    torch.manual_seed(1)
    with torch.no_grad():
        full = model(x.repeat_interleave(t, 0)).softmax(1).view(5, t, 10)
    assert batched.shape == (5, t, 10)
    torch.testing.assert_close(batched, full, rtol=1e-4, atol=1e-6)
    assert torch.allclose(batched.sum(-1), torch.ones(5, t))
    # Chunked (2 inputs x 7 samples per pass): the first chunk is the full pass of its inputs.
    torch.manual_seed(1)
    chunked = mc.sample_probs(model, x, t, max_rows=14)
    torch.manual_seed(1)
    with torch.no_grad():
        first = model(x[:2].repeat_interleave(t, 0)).softmax(1).view(2, t, 10)
    torch.testing.assert_close(chunked[:2], first, rtol=1e-4, atol=1e-6)
    assert chunked.shape == batched.shape


def test_batched_and_looped_samples_agree_in_distribution():
    model, x = _mc_cnn(), torch.rand(3, 1, 28, 28)
    torch.manual_seed(0)
    a = mc.sample_probs(model, x, 3000).mean(1)
    b = mc.sample_probs_loop(model, x, 3000).mean(1)
    assert (a - b).abs().max() < 0.02


def test_predictive_is_the_log_of_the_mean_softmax_and_differentiable():
    model, x = _mc_cnn(), torch.rand(4, 1, 28, 28, requires_grad=True)
    torch.manual_seed(2)
    out = mc.Predictive(model, 8)(x)
    torch.manual_seed(2)
    probs = mc.sample_probs(model, x.detach(), 8)
    torch.testing.assert_close(out.exp(), probs.mean(1), rtol=1e-4, atol=1e-6)
    out[:, 3].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert mc.attackable(model, 8).samples == 8
    plain = models.build("cnn", (1, 28, 28), 10)
    assert mc.attackable(plain, 8) is plain


def test_predict_uses_the_mc_predictive():
    model, x = _mc_cnn(0.5), torch.rand(50, 1, 28, 28)
    torch.manual_seed(3)
    expected = mc.sample_probs(model, x, mc.PREDICTION_SAMPLES).mean(1).argmax(1)
    torch.manual_seed(3)
    assert torch.equal(predict(model, x), expected)


def test_auroc_and_its_delong_error_by_hand():
    neg, pos = np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.35, 0.5, 0.6])
    auc, se = auroc(neg, pos)
    # Pairs (pos > neg): 0.35 beats 3 of 4, 0.5 and 0.6 beat all 4: 11 / 12.
    assert auc == pytest.approx(11 / 12)
    v_pos = np.array([3 / 4, 1, 1])
    v_neg = np.array([1, 1, 1, 2 / 3])
    assert se == pytest.approx(math.sqrt(v_pos.var(ddof=1) / 3 + v_neg.var(ddof=1) / 4))
    assert auroc(np.zeros(5), np.zeros(7))[0] == pytest.approx(0.5)  # all tied: chance
    assert auroc(np.array([1.0, 2.0]), np.array([0.0, 0.5]))[0] == 0.0
