"""PGD whose threat model lives in a metric-learned embedding e (a triplet network's): maximise
the classifier's cross-entropy over x' in the box [0, 1]^D subject to ||e(x') - e(x)||_2 <= eps.

That constraint set is not convex in input space and has no closed-form projection. After each
signed-gradient step, a point that left the ball is pulled back along its perturbation: to
x + t (x' - x) with the largest t in [0, 1] that bisection finds inside the ball. t = 0 (x
itself) is always inside, so every iterate satisfies the constraint, as e measures it, at the
cost of ``bisection_steps`` extra forward passes for the points that left. A penalty method
(ascend L - lambda max(0, ||e(x') - e(x)|| - eps)^2) costs nothing extra but holds the
constraint only approximately: its adversaries would need filtering afterwards, and how many
survive would depend on lambda. We want the threat model enforced, so we bisect.

Points leave the batch at their first misclassified iterate (early stop), keeping it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from study.attacks.gradient import frozen

# Bisection accepts a scale whose distance is within this relative margin inside the ball, so
# that recomputing e(x') in another batch (float rounding) still finds it inside.
_MARGIN = 1e-4


@dataclass
class EmbeddingResult:
    x_adv: torch.Tensor  # the first misclassified iterate per point, else its last
    fooled: torch.Tensor  # bool (N,)
    dist: torch.Tensor  # ||e(x_adv) - e(x)||_2 per point


@dataclass(frozen=True)
class EmbeddingPGD:
    steps: int = 40
    step_size: float = 0.01  # absolute signed step in input space (pixels in [0, 1])
    bisection_steps: int = 12

    def run(self, model, embed, x, y, eps: float, max_rows: int | None = None) -> EmbeddingResult:
        """Attack ``model`` (logits) at points ``x`` with labels ``y``; ``embed`` maps inputs to
        the embedding the constraint is measured in."""
        step = max_rows or len(x)
        parts = [self._batch(model, embed, x[i : i + step], y[i : i + step], eps) for i in range(0, len(x), step)]
        return EmbeddingResult(*(torch.cat(p) for p in zip(*parts))) if parts else EmbeddingResult(x.clone(), torch.zeros(0, dtype=torch.bool), torch.zeros(0))

    def _batch(self, model, embed, x, y, eps):
        with frozen(model), torch.no_grad():
            e0 = embed(x)
        x_adv, fooled = x.clone(), torch.zeros(len(x), dtype=torch.bool, device=x.device)
        with frozen(model):
            for _ in range(self.steps):
                todo = (~fooled).nonzero().squeeze(1)
                if not len(todo):
                    break
                xa = x_adv[todo].requires_grad_(True)
                grad, = torch.autograd.grad(F.cross_entropy(model(xa), y[todo], reduction="sum"), xa)
                with torch.no_grad():
                    cand = (xa + self.step_size * grad.sign()).clamp(0, 1)
                    cand = self._pull_back(embed, x[todo], e0[todo], cand, eps)
                    x_adv[todo] = cand
                    fooled[todo] = model(cand).argmax(1) != y[todo]
            with torch.no_grad():
                dist = (embed(x_adv) - e0).norm(dim=1)
        return x_adv, fooled, dist

    def _pull_back(self, embed, x, e0, cand, eps):
        """``cand`` where it is inside the ball, else x + t (cand - x) with the largest t that
        bisection finds inside (t = 0 always is)."""
        limit = eps * (1 - _MARGIN)
        out = ((embed(cand) - e0).norm(dim=1) > limit).nonzero().squeeze(1)
        if not len(out):
            return cand
        delta = cand[out] - x[out]
        lo = torch.zeros(len(out), device=x.device, dtype=x.dtype)
        hi = torch.ones_like(lo)
        scale = lambda t: t.view(-1, *([1] * (x.dim() - 1)))
        for _ in range(self.bisection_steps):
            mid = (lo + hi) / 2
            inside = (embed(x[out] + scale(mid) * delta) - e0[out]).norm(dim=1) <= limit
            lo = torch.where(inside, mid, lo)
            hi = torch.where(inside, hi, mid)
        cand = cand.clone()
        cand[out] = x[out] + scale(lo) * delta
        return cand
