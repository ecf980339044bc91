"""FAB-T: the targeted Fast Adaptive Boundary attack of Croce & Hein (2020), "Minimally distorted
adversarial examples with a fast adaptive boundary attack", as AutoAttack runs it.

A minimal-norm attack: it looks for the adversarial closest to x (in Linf or L2), so one run
gives a point's whole eps curve. For each target t (the classes the model ranks 2nd, 3rd, ...
at x), from x^0 = x:

* linearise g = z_t - z_y at the iterate x^i: the hyperplane pi = {z : g(x^i) + grad g(x^i) . (z - x^i) = 0};
* project onto pi inside the box [0, 1], from the iterate and from the original point:
  d = proj(x^i) - x^i and d0 = proj(x) - x (study.box_projection: the exact minimal-norm point of
  the hyperplane in the box, or the largest move toward it when none exists);
* step: x^{i+1} = clip((1 - a) (x^i + eta d) + a (x + eta d0)), a = min(||d|| / (||d|| + ||d0||), a_max),
  biased toward the original point so the iterates stay close to x; eta = 1.05 overshoots pi;
* when x^{i+1} is misclassified (any wrong class counts, as in AutoAttack), keep it if it is the
  closest so far, then step back toward x: x^{i+1} = x + beta (x^{i+1} - x), beta = 0.9.

a_max = 0.1, eta = 1.05 and beta = 0.9 are the published values; AutoAttack's standard version
runs 100 iterations and 9 targets with one start each (restarts > 1 start again from a random
point at half the largest eps, as the reference does). A point is done once its closest
adversarial fits the smallest eps it is attacked at (nothing can change its rows after that);
the other points run every target. Deterministic without restarts: ``rng`` draws only the
restarts' starts (study.rng.PointRNG).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from study.attacks.gradient import AttackResult, per_point
from study.attacks.minimal import closest
from study.box_projection import step_to_hyperplane
from study.types import PosInt


@dataclass(frozen=True)
class FAB:
    name: str = "fab-t"
    steps: int = 100
    targets: int = 9
    restarts: int = 1
    alpha_max: float = 0.1
    eta: float = 1.05
    beta: float = 0.9
    step_size = None  # FAB has no step size; rows record null

    def __call__(self, model, x, y, eps, norm, *, rng=None) -> torch.Tensor:
        """The closest adversarial per point, projected onto its eps ball (x where none was found)."""
        return self.run(model, x, y, eps, norm, rng=rng).x_adv

    def options(self) -> dict:
        return dict(steps=self.steps, restarts=self.restarts, targets=self.targets)

    def run(self, model, x, y, eps, norm, *, rng=None, early_stop=True, max_rows=None, levels=None) -> AttackResult:
        """Every point's closest adversarial over all targets, judged at each eps of its ladder."""
        return closest(self, model, x, y, eps, norm, rng=rng, early_stop=early_stop, max_rows=max_rows, levels=levels)

    def _search(self, model, x0, y, target, start, norm, enough):
        """One targeted FAB run on a batch: the closest adversarial found per row and its distance
        (inf where none). With ``enough`` (N,), a row stops once it has one within that."""
        n = len(x0)
        flat0 = x0.flatten(1)
        xi = start.clone()
        best = torch.full((n,), math.inf, dtype=x0.dtype, device=x0.device)
        best_x = x0.clone()
        rows = torch.arange(n, device=x0.device)
        for _ in range(self.steps):
            if enough is not None:
                rows = rows[~(best[rows] <= enough[rows])]
            if not len(rows):
                break
            xr = xi[rows].detach().requires_grad_(True)
            with torch.enable_grad():
                z = model(xr)
                g = z.gather(1, target[rows, None])[:, 0] - z.gather(1, y[rows, None])[:, 0]
                (grad,) = torch.autograd.grad(g.sum(), xr)
            w = grad.flatten(1)
            # The hyperplane g(x^i) + w . (z - x^i) = 0, from the iterate and from the original point.
            flat_i = xr.detach().flatten(1)
            g = g.detach()
            d = step_to_hyperplane(flat_i, w, g, norm.name)[0].to(w)
            d0 = step_to_hyperplane(flat0[rows], w, g + (w * (flat0[rows] - flat_i)).sum(1), norm.name)[0].to(w)
            n_d, n_d0 = norm.measure(d), norm.measure(d0)
            a = (n_d / (n_d + n_d0).clamp_min(1e-12)).clamp(0, self.alpha_max)[:, None]
            new = ((1 - a) * (flat_i + self.eta * d) + a * (flat0[rows] + self.eta * d0)).clamp(0, 1).view_as(xr)
            with torch.no_grad():
                wrong = model(new).argmax(1) != y[rows]
            dist = norm.measure(new - x0[rows])
            closer = wrong & (dist < best[rows])
            best[rows[closer]] = dist[closer]
            best_x[rows[closer]] = new[closer]
            # From an adversarial, step back toward the original point.
            new = torch.where(per_point(wrong, new), x0[rows] + self.beta * (new - x0[rows]), new)
            xi[rows] = new
        return best_x, best


def fab_t(steps: PosInt = 100, targets: PosInt = 9, restarts: PosInt = 1) -> FAB:
    return FAB(steps=steps, targets=targets, restarts=restarts)


FAB_ATTACKS = {"fab-t": fab_t}
