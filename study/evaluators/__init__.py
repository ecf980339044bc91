"""Evaluators by name: function(ctx, axes) -> list of result rows (dicts of schema columns)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from study.evaluators import robustness


@dataclass
class EvalContext:
    """What one trial hands every evaluator: its trained model and the evaluation split."""

    model: torch.nn.Module
    x: torch.Tensor
    y: torch.Tensor
    seed: int


EVALUATORS = {"robustness": robustness.evaluate}


def run(ctx: EvalContext, axes) -> list[dict]:
    return EVALUATORS[axes.evaluator](ctx, axes)
