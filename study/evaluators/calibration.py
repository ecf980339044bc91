"""Calibration: do the model's confidences mean what they say? (Guo et al. 2017)

On the clean evaluation split, the probabilities the model predicts with (a stochastic model's
MC predictive, study.mc.PREDICTION_SAMPLES draws; the RBF model's one-vs-rest probabilities,
study.objectives): per number of equal-width confidence bins B, the expected calibration error
ECE = sum_b |b| / n * |accuracy(b) - mean confidence(b)| over the bins b of the predicted
class's probability, and the mean negative log-likelihood of the true class. A robustness study
reads them beside the robust accuracy: adversarial training trades clean accuracy and
confidence, and an overconfident model's confident mistakes are what attacks find.
"""

from __future__ import annotations

from typing import Annotated

import pyarrow as pa
import torch
from pydantic import Field

from study import mc, objectives
from study.attacks.gradient import frozen
from study.registry import Entry, Evaluator
from study.types import Distinct, PosInt


class Options(Entry):
    bins: Annotated[list[PosInt], Field(min_length=1), Distinct] = [15]  # equal-width confidence bins of the ECE

    def n_rows(self, linear_binary: bool = False) -> int:
        return len(self.bins)


COLUMNS = (
    ("calibration_bins", pa.int64(), "evaluation", "calibration: B, the equal-width confidence bins over [0, 1] the ECE is computed on"),
    ("ece", pa.float64(), "metric", "calibration: expected calibration error, the mean over points of abs(accuracy - mean confidence) of their confidence bin (predicted class)"),
    ("nll_mean", pa.float64(), "metric", "calibration: mean negative log-likelihood of the true class on the clean evaluation points (nats)"),
)


def probabilities(model, x: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    """(N, C): the class probabilities the model predicts with."""
    if mc.is_stochastic(model):
        return mc.sample_probs(model, x, mc.PREDICTION_SAMPLES).mean(1)
    with frozen(model):
        return torch.cat([objectives.probabilities(model, model(x[i : i + batch])) for i in range(0, len(x), batch)])


def expected_calibration_error(conf: torch.Tensor, correct: torch.Tensor, bins: int) -> float:
    """ECE over ``bins`` equal-width bins (0, 1/B], (1/B, 2/B], ...; a confidence of 0 joins the first."""
    which = (conf * bins).ceil().clamp(1, bins).long() - 1
    hits = torch.zeros(bins, dtype=torch.float64).index_add_(0, which, correct.double())
    total = torch.zeros(bins, dtype=torch.float64).index_add_(0, which, conf.double())
    return float(((hits - total).abs()).sum() / len(conf))


def evaluate(ctx, options: Options) -> list[dict]:
    p = probabilities(ctx.model, ctx.x).cpu()
    y = ctx.y.cpu()
    conf, pred = p.max(1)
    nll = -p.gather(1, y[:, None]).squeeze(1).clamp_min(torch.finfo(p.dtype).tiny).log().mean().item()
    return [
        dict(evaluator="calibration", calibration_bins=b, n_eval=len(y), clean_acc=ctx.clean_acc, ece=expected_calibration_error(conf, pred == y, b), nll_mean=nll)
        for b in options.bins
    ]


def report(rows, inputs) -> list[tuple]:
    return [(
        "Calibration",
        "Clean evaluation points: the expected calibration error over B equal-width confidence bins (0: confidence equals accuracy in every bin) and the "
        "mean negative log-likelihood of the true class, per model.",
        rows.select("label", "calibration_bins", "clean_acc", "ece", "nll_mean").sort("label", "calibration_bins"),
    )]


EVALUATOR = Evaluator(Options, evaluate, COLUMNS, report)
