"""Transfer: adversarial examples crafted on one model, classified by another (Goodfellow et al.).

A study evaluator: it needs every trained model of the study at once, so it runs after the
trials (jobs.sweep), on the models in the store. For each eps, the attack runs on each source
model over the whole evaluation split, to its full radius (no early stop: the final iterate,
as a transfer attack is usually run), and every target model classifies the result. One row
per (source, target, eps), its trial being the target's:

* ``transfer_error``: the target's error rate on the source's adversarial examples (on the
  diagonal, the source's own error under attack);
* ``agreement``: over the points both models get wrong, the fraction where the target predicts
  the same wrong class as the source.
"""

from __future__ import annotations

from typing import Annotated

import pyarrow as pa
import torch
from pydantic import Field, model_validator

from study import attacks, norms
from study.evaluators import Member, StudyEvalContext
from study.registry import Entry, Evaluator
from study.rng import PointRNG
from study.seeds import stream_seed
from study.spec.constraints import NormName, eps_bound
from study.spec.evaluation import AttackSpec, own_options
from study.train import predict
from study.types import Distinct, PosFloat


class Options(Entry):
    """Adversarial examples crafted on every trained model of the study and classified by every
    other: run once after all trials (study.evaluators.transfer)."""

    attack: AttackSpec = AttackSpec(name="fgsm")
    norm: NormName = "linf"
    eps: Annotated[list[PosFloat], Field(min_length=1), Distinct]

    @model_validator(mode="before")
    @classmethod
    def _no_shared_options(cls, data):
        return own_options(data, "attack", "{name: pgd, steps: 20}")

    @model_validator(mode="after")
    def _checks(self):
        eps_bound(self.norm, self.eps, "eps")
        if self.attack.name in attacks.NO_FINAL_ITERATE:
            raise ValueError(f"attack: {self.attack.name} keeps no final iterate per point to transfer; use pgd, apgd-ce, fab-t or square")
        if self.attack.name not in attacks.ATTACKS:
            raise ValueError(f"attack: {self.attack.name}: an attack of yours runs in the robustness evaluator's attacks list")
        return self

    scope = "study"

    def n_rows(self, linear_binary: bool = False) -> int:
        return 0  # its rows are written after the trials

    def study_rows(self, capabilities: list[frozenset[str]]) -> int:
        return len(capabilities) ** 2 * len(self.eps)  # every (source, target, eps)


def evaluate(ctx: StudyEvalContext, options: Options) -> list[dict]:
    return rows(ctx.members, ctx.x, ctx.y, options, ctx.seed)


def rows(members: list[Member], x: torch.Tensor, y: torch.Tensor, axes, seed: int, batch: int = 1024, sources: list[Member] | None = None) -> list[dict]:
    """Rows for every (source, target in ``members``, eps); the sources are the members unless given."""
    attack = axes.attack.build()
    norm = norms.get(axes.norm)
    clean = {m.trial_id: (predict(m.model, x) == y).float().mean().item() for m in members}
    out = []
    for eps in sorted(axes.eps):
        for source in members if sources is None else sources:
            rng = PointRNG.for_points(stream_seed(seed, source.trial_id, eps), len(x), x.device)
            x_adv = torch.cat([attack(source.model, x[i : i + batch], y[i : i + batch], eps, norm, rng=rng[i : i + batch]) for i in range(0, len(x), batch)])
            source_pred = predict(source.model, x_adv)
            for target in members:
                pred = source_pred if target is source else predict(target.model, x_adv)
                wrong = pred != y
                both = wrong & (source_pred != y)
                out.append(dict(
                    evaluator=axes.evaluator,
                    trial_id=target.trial_id,
                    attack=axes.attack.name,
                    attack_options=axes.attack.describe(),
                    norm=axes.norm,
                    eps=float(eps),
                    steps=attack.steps,
                    step_size=attack.step_size,
                    source_trial_id=source.trial_id,
                    source_label=source.label,
                    n_eval=len(y),
                    clean_acc=clean[target.trial_id],
                    robust_acc=1 - wrong.float().mean().item(),
                    transfer_error=wrong.float().mean().item(),
                    agreement=(pred[both] == source_pred[both]).float().mean().item() if both.any() else None,
                ))
    return out


COLUMNS = (
    ("agreement", pa.float64(), "metric", "transfer: over points source and target both get wrong, how often they predict the same class"),
)
EVALUATOR = Evaluator(Options, evaluate, COLUMNS, report="analysis.report:transfer_section")
