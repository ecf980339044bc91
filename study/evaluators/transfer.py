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

from dataclasses import dataclass

import torch

from study import norms
from study.rng import PointRNG
from study.seeds import stream_seed
from study.train import predict


@dataclass
class Member:
    """One trained model of the study."""

    trial_id: str
    label: str
    model: torch.nn.Module


def evaluate(members: list[Member], x: torch.Tensor, y: torch.Tensor, axes, seed: int, batch: int = 1024, sources: list[Member] | None = None) -> list[dict]:
    """Rows for every (source, target in ``members``, eps); the sources are the members unless given."""
    attack = axes.attack.build()
    norm = norms.get(axes.norm)
    clean = {m.trial_id: (predict(m.model, x) == y).float().mean().item() for m in members}
    rows = []
    for eps in sorted(axes.eps):
        for source in members if sources is None else sources:
            rng = PointRNG.for_points(stream_seed(seed, source.trial_id, eps), len(x), x.device)
            x_adv = torch.cat([attack(source.model, x[i : i + batch], y[i : i + batch], eps, norm, rng=rng[i : i + batch]) for i in range(0, len(x), batch)])
            source_pred = predict(source.model, x_adv)
            for target in members:
                pred = source_pred if target is source else predict(target.model, x_adv)
                wrong = pred != y
                both = wrong & (source_pred != y)
                rows.append(dict(
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
    return rows

