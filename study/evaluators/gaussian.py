"""Ilyas et al.'s Gaussian model as a study evaluator: model-free, it runs once after the
trials and writes the artifact ``gaussian`` (study.gaussian computes it; analysis.gaussian
reads it)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from study import gaussian
from study.evaluators import StudyEvalContext
from study.registry import Entry, Evaluator
from study.types import Distinct, NonNegFloat, NotBool, PosFloat, PosInt


class Options(Entry):
    """Ilyas et al.'s Gaussian model (study.gaussian): two classes x ~ N(y mu, Sigma), y = +-1;
    the standard and the robust (L2 ball of radius eps) maximum-likelihood estimates of
    (mu, Sigma) from ``n`` samples at every eps, against Theorem 2's closed form. Model-free: it
    runs once after the trials and writes the artifact ``gaussian``."""

    eps: Annotated[list[NonNegFloat], Field(min_length=1), Distinct] = [0.0, 0.1, 0.25, 0.5, 1.0, 2.0]
    mean: Annotated[list[float], Field(min_length=1)] = [1.0, 0.25]
    cov: list[list[float]] = [[1.0, 0.6], [0.6, 0.5]]
    n: Annotated[int, NotBool, Field(ge=10)] = 2000
    steps: PosInt = 300  # optimiser steps per estimate
    lr: PosFloat = 0.1

    @model_validator(mode="after")
    def _checks(self):
        import numpy as np

        d = len(self.mean)
        if d < 2:
            raise ValueError("mean: the model needs at least two dimensions (d >= 2)")
        if any(len(row) != d for row in self.cov) or len(self.cov) != d:
            raise ValueError(f"cov: must be {d} x {d}, like mean")
        cov = np.asarray(self.cov)
        if not np.allclose(cov, cov.T) or np.linalg.eigvalsh(cov).min() <= 0:
            raise ValueError("cov: must be symmetric positive definite")
        return self

    scope = "study"

    def n_rows(self, linear_binary: bool = False) -> int:
        return 0  # an artifact, no rows


def evaluate(ctx: StudyEvalContext, options: Options) -> list[dict]:
    ctx.write_artifact("gaussian", gaussian.evaluate(options, ctx.seed))
    return []


EVALUATOR = Evaluator(Options, evaluate, report="analysis.report:gaussian_section")

