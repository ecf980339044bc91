"""The ``features`` study evaluator: how far the standard source model's adversarial examples
transfer to every model of the study (Ilyas et al. 2019, Figure 3).

The study's trials train fresh standard models on D, D_R, D_NR, D_rand and D_det
(study.features builds the sets before them) and its per-trial evaluators measure them on the
original test split. What a trial cannot measure alone is the link to the source: the source
(``features.standard``, the model D_NR, D_rand and D_det were built from) is attacked once per
eps over the evaluation split, and every trial's model classifies the result. One row per
(trial, eps), as ``transfer`` rows are, with the source's store key as ``source_trial_id``.
Ilyas et al. find that architectures which learn more from D_rand / D_det are also fooled more
often by the source's adversarial examples: both measure how much of the source's non-robust
features an architecture picks up.
"""

from __future__ import annotations

import torch

from study.evaluators import transfer


def evaluate(source: transfer.Member, members: list[transfer.Member], x: torch.Tensor, y: torch.Tensor, axes, seed: int) -> list[dict]:
    return transfer.evaluate(members, x, y, axes, seed, sources=[source])
