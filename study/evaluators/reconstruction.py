"""The reconstruction defense: classify G(I(x)) instead of x (the source text's last table).

For the first ``n_points`` evaluation points: accuracy on the clean points and on each input
set (study.evaluators.inputs: pixel-space attacks at each eps, C&W, natural adversaries), each
as it is (``robust_acc``; ``clean_acc`` for the clean set) and projected onto the generator's
manifold, G(I(.)) (``recon_acc``). The attacks see the undefended model (they do not know of
the projection), as in the source text.
"""

from __future__ import annotations

import time
from typing import Optional

from study import mc
from study.evaluators import inputs
from study.registry import Entry, Evaluator
from study.spec.evaluation import InputSet
from study.train import predict
from study.types import PosInt


class Options(Entry):
    """The reconstruction defense (study.evaluators.reconstruction): accuracy on each input set
    (clean, and each attack at each eps) as it is and projected through G(I(.))."""

    inputs: list[InputSet] = [InputSet(attack="fgsm", norm="linf", eps=[0.1, 0.3])]
    n_points: Optional[PosInt] = None  # the first n evaluation points (all when null)
    eot_samples: PosInt = 10  # stochastic models: MC samples per attack query

    def uses_training_split(self) -> bool:
        return True  # the generative model trains on it

    def uses_generative(self) -> bool:
        return True

    def attack_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    def n_rows(self, linear_binary: bool = False) -> int:
        return 1 + sum(s.n_sets() for s in self.inputs)


def evaluate(ctx, axes) -> list[dict]:
    g = ctx.generative
    n = min(axes.n_points or len(ctx.y), len(ctx.y))
    x, y = ctx.x[:n], ctx.y[:n]
    stochastic = mc.is_stochastic(ctx.model)
    attacked = mc.attackable(ctx.model, axes.eot_samples)

    def accuracy(inputs_) -> float:
        return (predict(ctx.model, inputs_) == y).float().mean().item()

    start = time.perf_counter()
    clean_acc = accuracy(x)
    sets = [(dict(attack="clean", eps=None), x, time.perf_counter() - start)]
    for spec in axes.inputs:
        for eps, x_adv, cols, craft_s in inputs.craft(attacked, x, y, spec, ctx.seed, "reconstruction", g):
            sets.append(({**cols, "eps": eps}, x_adv, craft_s))
    rows = []
    for cols, xs, craft_s in sets:
        start = time.perf_counter()
        rows.append(dict(
            evaluator="reconstruction",
            **cols,
            eot_samples=axes.eot_samples if stochastic and cols["attack"] != "clean" else None,
            n_eval=n,
            clean_acc=clean_acc,
            robust_acc=accuracy(xs),
            recon_acc=accuracy(g.reconstruct(xs)),
            eval_s=craft_s + time.perf_counter() - start,
        ))
    return rows


EVALUATOR = Evaluator(Options, evaluate, report="analysis.report:reconstruction_section")
