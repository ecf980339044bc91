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

from study.evaluators import StudyEvalContext, transfer
from study.registry import Evaluator
from study.spec.constraints import NormName
from study.spec.evaluation import AttackSpec


class Options(transfer.Options):
    """Transfer from the study's standard source model (``features.standard``, the one D_NR,
    D_rand and D_det are built from): its adversarial examples classified by every trial's
    model, run once after the trials (study.evaluators.features). Ilyas et al. relate this rate
    to how well each architecture learns from D_rand / D_det."""

    attack: AttackSpec = AttackSpec(name="pgd", steps=20)
    norm: NormName = "l2"

    def uses_training_split(self) -> bool:
        return True  # its standard source model trains on it

    def uses_feature_sources(self) -> bool:
        return True

    def study_rows(self, capabilities: list[frozenset[str]]) -> int:
        return len(capabilities) * len(self.eps)  # every (target, eps)


def evaluate(ctx: StudyEvalContext, options: Options) -> list[dict]:
    return transfer.rows(ctx.members, ctx.x, ctx.y, options, ctx.seed, sources=[ctx.standard_source()])


EVALUATOR = Evaluator(Options, evaluate, report="analysis.report:features_section")
