"""Goodfellow et al.'s rubbish-class check: inputs with no class at all.

Gaussian noise N(0, I), clipped to the input box [0, 1], is shown to the model; a model that
knows what it does not know gives every class a low probability. The row reports the fraction
of noise inputs classified with confidence (the probability of the predicted class) > 0.5,
and the mean confidence. Softmax models always give some class at least 1/K; the RBF model's
one-vs-rest probabilities (study.objectives) can all be near 0.
"""

from __future__ import annotations

import torch

from study.evaluators.robustness import confidence

THRESHOLD = 0.5


def evaluate(ctx, axes) -> list[dict]:
    gen = torch.Generator(device="cpu").manual_seed(ctx.seed)
    noise = torch.randn((axes.samples, *ctx.x.shape[1:]), generator=gen).clamp(0, 1).to(ctx.x.device)
    conf = confidence(ctx.model, noise)
    return [dict(
        evaluator="rubbish",
        n_eval=axes.samples,
        clean_acc=ctx.clean_acc,
        rubbish_confident=float((conf > THRESHOLD).float().mean()),
        confidence_mean=float(conf.mean()),
    )]
