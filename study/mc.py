"""Monte Carlo dropout: Bayesian-NN predictions and their epistemic uncertainty (Gal &
Ghahramani 2016; Smith & Gal 2018, "Understanding Measures of Uncertainty for Adversarial
Example Detection").

A model with ``MCDropout`` layers keeps dropout on at prediction, so each forward pass is one
sample p_t(c | x) of the approximate posterior predictive. With T samples per input:

* predictive  p(c | x) = mean_t p_t(c | x)
* mutual information  MI(x) = H[mean_t p_t] - mean_t H[p_t]  (nats; 0 when every sample agrees,
  at most log C)
* softmax variance  SMV(x) = sum_c var_t p_t(c)  (the population variance over the T samples,
  1/T; no further normalisation; 0 when every sample agrees)

``sample_probs`` draws the T samples of a batch in one forward pass over a batch x T expansion
(chunked so at most ``max_rows`` rows are in flight), not a loop of T passes: the layers before
the first dropout run once per input instead of T times, and a GPU gets one large batch
instead of T small ones (benchmarks/mc_samples.py measures it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# How many samples a stochastic model's plain prediction (accuracy, attack success) averages.
PREDICTION_SAMPLES = 20


class MCDropout(nn.Module):
    """Dropout that stays on in eval mode: every forward pass samples a new mask."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, training=True)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def is_stochastic(model: nn.Module) -> bool:
    return any(isinstance(m, MCDropout) and m.p > 0 for m in model.modules())


def _split(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(deterministic prefix, stochastic rest) of a Sequential model, split at its first
    MCDropout; (identity, model) for any other model."""
    if isinstance(model, nn.Sequential):
        for i, layer in enumerate(model):
            if isinstance(layer, MCDropout):
                return model[:i], model[i:]
    return nn.Identity(), model


def _expanded_log_probs(model: nn.Module, x: torch.Tensor, samples: int) -> torch.Tensor:
    """(B, T, C) log-probabilities in one pass: the layers before the first dropout are the same
    for every sample, so they run once per input; their output is repeated T times along the
    batch for the rest of the network."""
    prefix, rest = _split(model)
    h = prefix(x)
    layout = torch.channels_last if h.dim() == 4 and h.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    # Keep the prefix's memory layout: dropout draws its mask in memory order, so the samples
    # are then exactly those of a forward pass over T copies of each input.
    out = rest(h.repeat_interleave(samples, dim=0).contiguous(memory_format=layout))
    return out.log_softmax(1).view(len(x), samples, -1)


@torch.no_grad()
def sample_probs(model: nn.Module, x: torch.Tensor, samples: int, max_rows: int | None = None) -> torch.Tensor:
    """(N, T, C) softmax samples of a stochastic model, T per input, batched (see above).
    ``max_rows`` (input x sample rows per pass) defaults by device: on a CPU, passes of a few
    hundred rows keep the activations in cache (1.6x faster per row than 8192 for the mc-cnn);
    a GPU wants large ones."""
    was_training = model.training
    model.eval()
    chunk = max(1, (max_rows or (16384 if x.is_cuda else 256)) // samples)
    try:
        return torch.cat([_expanded_log_probs(model, x[i : i + chunk], samples).exp() for i in range(0, len(x), chunk)])
    finally:
        model.train(was_training)


@torch.no_grad()
def sample_probs_loop(model: nn.Module, x: torch.Tensor, samples: int, batch: int = 4096) -> torch.Tensor:
    """The same samples drawn the usual way, a Python loop of T forward passes (the benchmark's
    baseline; the results are equal in distribution, not in value)."""
    was_training = model.training
    model.eval()
    try:
        passes = [torch.cat([model(x[i : i + batch]).softmax(1) for i in range(0, len(x), batch)]) for _ in range(samples)]
    finally:
        model.train(was_training)
    return torch.stack(passes, dim=1)


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats over the last axis (0 log 0 = 0)."""
    return -torch.special.xlogy(p, p).sum(-1)


def mutual_information(probs: torch.Tensor) -> torch.Tensor:
    """(N, T, C) samples -> (N,): H[mean_t p_t] - mean_t H[p_t], clamped at 0 (rounding)."""
    return (entropy(probs.mean(1)) - entropy(probs).mean(1)).clamp_min(0)


def softmax_variance(probs: torch.Tensor) -> torch.Tensor:
    """(N, T, C) samples -> (N,): sum over classes of the variance over the T samples (1/T)."""
    return probs.var(1, unbiased=False).sum(-1)


class Predictive(nn.Module):
    """The MC predictive of ``samples`` draws as a model: log mean_t p_t(c | x), differentiable.

    Attacking it is expectation over transformation (Athalye et al. 2018) for a dropout model:
    the gradient of its log-probability, grad log mean_t p_t(y), is the average over the samples
    of grad p_t(y), divided by mean_t p_t(y); one stochastic pass alone would give a gradient of
    one random sub-network. Its argmax is the prediction the attack checks its success on."""

    def __init__(self, model: nn.Module, samples: int):
        super().__init__()
        self.model, self.samples = model, samples

    def forward(self, x):
        return torch.logsumexp(_expanded_log_probs(self.model, x, self.samples), dim=1) - math.log(self.samples)


def attackable(model: nn.Module, eot_samples: int) -> nn.Module:
    """What an attack queries: a stochastic model through its ``eot_samples``-draw predictive,
    any other model as it is."""
    return Predictive(model, eot_samples) if is_stochastic(model) else model
