"""The run protocol of the minimal-norm attacks (FAB-T, FMN): one search per target (or one
untargeted) and restart, each point's closest adversarial over all of them, judged at every eps
of its ladder."""

from __future__ import annotations

import math

import torch

from study.attacks.apgd import n_classes, ranked_targets
from study.attacks.gradient import AttackResult, frozen, prepare


def closest(attack, model, x, y, eps, norm, *, rng, early_stop, max_rows, levels) -> AttackResult:
    """``attack._search(model, x0, y, target, start, norm, enough)`` -> (closest adversarial,
    its distance; inf where none) run toward each of ``attack.targets`` most likely other
    classes (None: once, untargeted, ``target`` None), ``attack.restarts`` times each (a restart
    starts from a random point at half the point's largest eps). A point is done once its closest
    adversarial fits the smallest eps it is attacked at: nothing can change its rows after that."""
    eps, ladder, rng, levels = prepare(x, eps, rng, levels, True, 1)
    n = len(x)
    x = x.detach()
    best = torch.full((n,), math.inf, dtype=x.dtype, device=x.device)
    x_adv = x.clone()
    active = levels > 0
    lowest = eps[:, 0]
    chunk = max_rows or max(n, 1)
    with frozen(model):
        runs, target = [None], None
        if attack.targets is not None:
            skip = getattr(attack, "skip", 0)  # FMN-T's option; FAB-T always starts at the most likely
            k = max(min(attack.targets, n_classes(model, x) - 1 - skip), 0) if n else 0
            target = ranked_targets(model, x, y, skip + k, max_rows)[:, skip:]
            runs = list(range(k))
        for r, t in enumerate(runs):
            for restart in range(attack.restarts):
                todo = (active & ~(best <= lowest)).nonzero().squeeze(1)
                for pts in todo.split(chunk):
                    start = x[pts]
                    if restart > 0:
                        radius = eps[pts].gather(1, (levels[pts] - 1)[:, None])[:, 0] / 2
                        start = (start + norm.random_start(rng[pts].fold(r * attack.restarts + restart), x.shape[1:], radius)).clamp(0, 1)
                    toward = None if t is None else target[pts, t]
                    adv, dist = attack._search(model, x[pts], y[pts], toward, start, norm, lowest[pts] if early_stop else None)
                    better = dist < best[pts]
                    best[pts[better]] = dist[better]
                    x_adv[pts[better]] = adv[better]
    found = best < math.inf
    dist = norm.measure(x_adv - x)  # the threat norm's size (the same one the search minimised)
    # x_adv stays in the largest ball (an adversarial beyond it is projected onto it, as C&W's).
    x_adv = (x + norm.project(x_adv - x, eps[:, -1])).clamp(0, 1)
    # Without early_stop, as every attack: no row is reported fooled (the caller judges x_adv).
    fooled = found[:, None] & (dist[:, None] <= eps) & (torch.arange(eps.shape[1], device=x.device) < levels[:, None]) & early_stop
    return AttackResult(x_adv, fooled if ladder else fooled[:, 0])

