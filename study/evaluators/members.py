"""An ensemble against its members' adversarial examples (Goodfellow et al. 2015, section 8).

For a model ensemble (``model: {ensemble: [...]}``; other models get no rows): per eps, the
attack runs on the ensemble itself and on each member alone, over the whole evaluation split
to its full radius (the final iterate, as a transfer attack), and the ensemble classifies
every result. Two rows per eps, told apart by ``crafted_on``:

* ``ensemble``: crafted on the ensemble; ``transfer_error`` is the ensemble's error on them
  (the paper: 91.1% for 12 maxout networks at FGSM eps .25);
* ``members``: crafted on one member; ``transfer_error`` is the ensemble's error on
  them and ``source_error`` the member's own, each averaged over the members (the paper: 87.9%
  on the ensemble: "ensembles help, but not much").

Artifact ``ensemble_members``: per eps and member, both errors.
"""

from __future__ import annotations

from typing import Annotated

import pyarrow as pa
import torch
from pydantic import Field, model_validator

from study import attacks, norms
from study.registry import Entry, Evaluator
from study.rng import PointRNG
from study.seeds import stream_seed
from study.spec.constraints import NormName, eps_bound
from study.spec.evaluation import AttackSpec, own_options
from study.train import predict
from study.types import Distinct, PosFloat


class Options(Entry):
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

    def some_model_needs(self) -> frozenset[str]:
        return frozenset({"ensemble"})

    def n_rows(self, linear_binary: bool = False) -> int:
        return 2 * len(self.eps)


COLUMNS = (
    ("crafted_on", pa.string(), "evaluation", "members: what the adversarial examples were crafted on: `ensemble`, or `members` (each member alone, the row averaging over them)"),
    ("source_error", pa.float64(), "metric", "members: the crafting model's own error on its adversarial examples (crafted on members: the mean over the members)"),
)


def crafted(model, x, y, attack, eps, norm, rng, batch: int = 1024) -> torch.Tensor:
    return torch.cat([attack(model, x[i : i + batch], y[i : i + batch], eps, norm, rng=rng[i : i + batch]) for i in range(0, len(x), batch)])


def evaluate(ctx, options: Options) -> list[dict]:
    ensemble, x, y = ctx.model, ctx.x, ctx.y
    attack, norm = options.attack.build(), norms.get(options.norm)
    wrong = lambda model, x_adv: (predict(model, x_adv) != y).float().mean().item()
    rows, art = [], {k: [] for k in ("eps", "member", "ensemble_error", "own_error")}
    common = dict(
        evaluator="members", attack=options.attack.name, attack_options=options.attack.describe(), norm=options.norm,
        steps=attack.steps, step_size=attack.step_size, n_eval=len(y), clean_acc=ctx.clean_acc,
    )
    for eps in sorted(options.eps):
        rng = lambda source: PointRNG.for_points(stream_seed(ctx.seed, "members", source, eps), len(x), x.device)
        on_ensemble = wrong(ensemble, crafted(ensemble, x, y, attack, eps, norm, rng("ensemble")))
        rows.append(dict(common, eps=float(eps), crafted_on="ensemble", transfer_error=on_ensemble, source_error=on_ensemble, robust_acc=1 - on_ensemble))
        for i, member in enumerate(ensemble.members):
            x_adv = crafted(member, x, y, attack, eps, norm, rng(f"member {i}"))
            for k, v in (("eps", float(eps)), ("member", i), ("ensemble_error", wrong(ensemble, x_adv)), ("own_error", wrong(member, x_adv))):
                art[k].append(v)
        k = len(ensemble.members)
        ens_err, own_err = sum(art["ensemble_error"][-k:]) / k, sum(art["own_error"][-k:]) / k
        rows.append(dict(common, eps=float(eps), crafted_on="members", transfer_error=ens_err, source_error=own_err, robust_acc=1 - ens_err))
    ctx.write_artifact("ensemble_members", art)
    return rows


def report(rows, inputs) -> list[tuple]:
    import polars as pl

    return [(
        "Ensembles against their members' adversarial examples",
        "Per model ensemble and eps: the ensemble's error on adversarial examples crafted on the ensemble itself, and on examples crafted on one member "
        "(averaged over the members), next to that member's own error on them (Goodfellow et al.: 91.1% and 87.9% for 12 maxout networks at FGSM eps .25).",
        rows.sort("label", "eps", "crafted_on").select(
            "label", "attack_options", "norm", "eps", pl.col("crafted_on").alias("crafted on"), pl.col("clean_acc").round(3),
            pl.col("transfer_error").round(3).alias("ensemble error"), pl.col("source_error").round(3).alias("crafting model's error"),
        ),
    )]


EVALUATOR = Evaluator(Options, evaluate, COLUMNS, report)
