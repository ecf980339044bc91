"""Goodfellow et al.'s rubbish-class check: inputs with no class at all.

Gaussian noise N(0, I), clipped to the input box [0, 1], is shown to the model; a model that
knows what it does not know gives every class a low probability. The row reports the fraction
of noise inputs classified with confidence (the probability of the predicted class) > 0.5,
and the mean confidence. Softmax models always give some class at least 1/K; the RBF model's
one-vs-rest probabilities (study.objectives) can all be near 0.
"""

from __future__ import annotations

import pyarrow as pa
import torch

from study.evaluators.robustness import confidence
from study.registry import Entry, Evaluator
from study.types import PosInt

THRESHOLD = 0.5


class Options(Entry):
    samples: PosInt = 1000  # noise inputs

    def n_rows(self, linear_binary: bool = False) -> int:
        return 1


COLUMNS = (
    ("rubbish_confident", pa.float64(), "metric", "rubbish: fraction of N(0, I) noise inputs (clipped to [0, 1]) classified with confidence > 0.5"),
    ("confidence_mean", pa.float64(), "metric", "rubbish: mean confidence on the noise inputs"),
)


def evaluate(ctx, options: Options) -> list[dict]:
    gen = torch.Generator(device="cpu").manual_seed(ctx.seed)
    noise = torch.randn((options.samples, *ctx.x.shape[1:]), generator=gen).clamp(0, 1).to(ctx.x.device)
    conf = confidence(ctx.model, noise)
    return [dict(
        evaluator="rubbish",
        n_eval=options.samples,
        clean_acc=ctx.clean_acc,
        rubbish_confident=float((conf > THRESHOLD).float().mean()),
        confidence_mean=float(conf.mean()),
    )]


def report(rows, inputs) -> list[tuple]:
    return [(
        "Rubbish inputs",
        "N(0, I) noise clipped to [0, 1]: the fraction of noise inputs each model classifies with confidence > 0.5, and its mean confidence on them.",
        rows.select("label", "rubbish_confident", "confidence_mean", "clean_acc").sort("label"),
    )]


EVALUATOR = Evaluator(Options, evaluate, COLUMNS, report)
