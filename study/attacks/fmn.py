"""FMN: the Fast Minimum-Norm attack of Pintor, Roli, Brendel and Biggio (NeurIPS 2021), "Fast
Minimum-norm Adversarial Attacks through Adaptive Norm Constraints".

A minimal-norm attack, as FAB-T: one run gives a point's whole eps curve, at one forward and one
backward pass per step and no projection onto a linearised boundary (a tenth of FAB-T's cost
for 9 targets). From delta = 0 it descends the logit margin m = z_y - max_{j != y} z_j (toward
a target t with ``targets``: z_y - z_t) inside an Lp ball whose radius r adapts every step:

* the iterate is misclassified: r = min(r (1 - gamma), the smallest adversarial norm so far);
* it is not, but an adversarial was found before: r = r (1 + gamma);
* none found yet: r = ||delta|| + |m| / ||grad m||_dual, the linearised margin's distance to
  the boundary;

then a step of alpha along the gradient (L2: normalised to unit length; Linf: its sign), a
projection onto the r-ball and a clip to the box [0, 1]. alpha and gamma are cosine-annealed
from their initial values to a hundredth (alpha) and 0.001 (gamma). The smallest adversarial
seen is kept; any wrong class counts, as in FAB-T. ``fmn`` is untargeted; ``fmn-t`` runs toward
each of the ``targets`` most likely other classes in turn (after the ``skip`` most likely).

Departure from the paper, measured on the benchmark models (docs/benchmarks.md): the Linf step
is the gradient's sign with alpha_0 = 0.1 (the paper's steps along the L2-normalised gradient,
alpha_0 = 1, move a Linf iterate too little per step on 784 pixels). ``restarts`` > 1 start
again from a random point at half the point's largest eps. A point is done once its closest
adversarial fits the smallest eps it is attacked at. Deterministic without restarts: ``rng``
draws only the restarts' starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from study.attacks.gradient import AttackResult
from study.attacks.minimal import closest
from study.types import NonNegInt, PosFloat, PosInt

GAMMA_FINAL = 0.001
STEP = {"linf": 0.1, "l2": 1.0}  # alpha_0 per norm
OVERSHOOT = 1.05  # past the linearised boundary, as FAB's eta: a radius exactly at it is approached, never crossed


@dataclass(frozen=True)
class FMN:
    name: str = "fmn"
    steps: int = 100
    targets: int | None = None  # None: one untargeted run (fmn); k: a run toward each of the k most likely other classes (fmn-t)
    skip: int = 0  # fmn-t: the most likely other classes passed over before its targets
    restarts: int = 1
    step_size: float | None = None  # alpha_0; None: STEP by norm
    gamma: float = 0.05

    def __call__(self, model, x, y, eps, norm, *, rng=None) -> torch.Tensor:
        """The closest adversarial per point, projected onto its eps ball (x where none was found)."""
        return self.run(model, x, y, eps, norm, rng=rng).x_adv

    def options(self) -> dict:
        out = dict(steps=self.steps, restarts=self.restarts, step_size=self.step_size, gamma=self.gamma)
        if self.targets is None:
            return out
        return dict(out, targets=self.targets, skip=self.skip) if self.skip else dict(out, targets=self.targets)

    def run(self, model, x, y, eps, norm, *, rng=None, early_stop=True, max_rows=None, levels=None) -> AttackResult:
        """Every point's closest adversarial over all runs, judged at each eps of its ladder."""
        return closest(self, model, x, y, eps, norm, rng=rng, early_stop=early_stop, max_rows=max_rows, levels=levels)

    def _search(self, model, x0, y, target, start, norm, enough):
        """One FMN run on a batch: the closest adversarial found per row and its distance (inf
        where none). With ``enough`` (N,), a row stops once it has one within that."""
        n = len(x0)
        alpha0 = self.step_size if self.step_size is not None else STEP[norm.name]
        delta = start - x0
        radius = torch.where(delta.flatten(1).any(1), norm.measure(delta), torch.full((n,), math.inf, dtype=x0.dtype, device=x0.device))
        largest = norm.measure(torch.maximum(x0, 1 - x0))  # the box holds no farther point: r never needs more
        best = torch.full((n,), math.inf, dtype=x0.dtype, device=x0.device)
        best_x = x0.clone()
        found = torch.zeros(n, dtype=torch.bool, device=x0.device)
        rows = torch.arange(n, device=x0.device)
        for i in range(self.steps):
            if enough is not None:
                rows = rows[~(best[rows] <= enough[rows])]
            if not len(rows):
                break
            anneal = (1 + math.cos(math.pi * i / self.steps)) / 2
            alpha = alpha0 / 100 + (alpha0 - alpha0 / 100) * anneal
            gamma = GAMMA_FINAL + (self.gamma - GAMMA_FINAL) * anneal
            d = delta[rows].requires_grad_(True)
            with torch.enable_grad():
                z = model(x0[rows] + d)
                zy = z.gather(1, y[rows, None])[:, 0]
                other = z.scatter(1, y[rows, None], -math.inf).amax(1) if target is None else z.gather(1, target[rows, None])[:, 0]
                margin = zy - other
                (grad,) = torch.autograd.grad(margin.sum(), d)  # per point: no other row scales it
            with torch.no_grad():
                d, margin = d.detach(), margin.detach()
                adv = z.argmax(1) != y[rows]
                size = norm.measure(d)
                closer = adv & (size < best[rows])
                best[rows[closer]] = size[closer]
                best_x[rows[closer]] = (x0[rows] + d)[closer]
                found[rows] |= adv
                # Only the pixels the descent can move count: one at the box's edge, pushed
                # outward, is clipped back. With them in, the linearised distance falls short and
                # the step shrinks, and the search creeps toward the boundary without crossing it.
                xd = x0[rows] + d
                grad = grad * ~(((xd <= 0) & (grad > 0)) | ((xd >= 1) & (grad < 0)))
                dual = grad.flatten(1).abs().sum(1) if norm.name == "linf" else grad.flatten(1).norm(dim=1)
                to_boundary = size + OVERSHOOT * margin.abs() / dual.clamp_min(1e-12)
                r = radius[rows]
                r = torch.where(adv, torch.minimum(r * (1 - gamma), best[rows]), torch.where(found[rows], r * (1 + gamma), to_boundary))
                r = torch.minimum(r, largest[rows])
                radius[rows] = r
                d = d - alpha * norm.ascent_direction(grad)  # descend the margin
                d = norm.project(d, r)
                delta[rows] = (x0[rows] + d).clamp(0, 1) - x0[rows]
        return best_x, best


def _checked(gamma: float) -> float:
    if gamma >= 1:
        raise ValueError(f"gamma: must be < 1 (the radius shrinks by 1 - gamma), got {gamma:g}")
    return gamma


def fmn(steps: PosInt = 100, restarts: PosInt = 1, step_size: Optional[PosFloat] = None, gamma: PosFloat = 0.05) -> FMN:
    """Untargeted: the margin to whichever other class leads."""
    return FMN(steps=steps, restarts=restarts, step_size=step_size, gamma=_checked(gamma))


def fmn_t(steps: PosInt = 100, targets: PosInt = 9, restarts: PosInt = 1, step_size: Optional[PosFloat] = None, gamma: PosFloat = 0.05, skip: NonNegInt = 0) -> FMN:
    """Targeted: one run toward each of the ``targets`` most likely other classes (as FAB-T);
    with ``skip``, toward the next ``targets`` after the ``skip`` most likely (after an
    untargeted run, which already heads for the most likely, ``skip: 1`` spares a run)."""
    return FMN(name="fmn-t", steps=steps, targets=targets, skip=skip, restarts=restarts, step_size=step_size, gamma=_checked(gamma))


FMN_ATTACKS = {"fmn": fmn, "fmn-t": fmn_t}
