"""Natural adversarial examples by latent-space search (Zhao, Dua & Singh, ICLR 2018,
"Generating Natural Adversarial Examples").

A generator G maps latent vectors z to images and an inverter gives z0 = I(x). The search looks
for a z~ close to z0 (in L2) whose image the classifier labels differently: f(G(z~)) != y_ref,
with y_ref = f(x). It is black-box: it only calls ``classify`` (labels) and ``generate``, under
``torch.no_grad()``, never a gradient. Each round draws N samples z~ = z0 + d * u per image, u a
uniformly random unit direction and the radius d ~ Uniform[l, h) (uniform in the radius, not in
the ball's volume, as in the authors' code), and keeps the closest adversarial sample.

* ``iterative`` (Algorithm 1): shells [0, dr), [dr, 2 dr), ... outward until one holds an
  adversarial sample; it stops at the first such shell, so it is within dr of the closest
  adversarial it can see.
* ``hybrid`` (Algorithm 2): phase 1 bisects a coarse range [0, h0), recentring on [d/2, d) at
  each closer adversarial at d; phase 2 walks down from the best in steps of dr until ``stop``
  rounds in a row find nothing. Far fewer rounds than ``iterative`` when the answer is far
  from z0 relative to dr.

Batched design: every image runs its own state machine (range [l, h), counter, phase, best),
held as tensors and stepped in lockstep rounds; an image that has finished leaves the batch and
is not queried again, so a round costs each active image exactly N queries. The samples of all
active images are flattened and sent to G and f in chunks of ``max_rows``. ``budgets`` reads the
state after r rounds for each cap r of one run: the same search stopped earlier, so success is
non-decreasing in the budget by construction.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from study.names import LATENT_KINDS

KINDS = LATENT_KINDS
_H_FLOOR = 1e-4  # phase 2 ends once its range reaches z0 (the authors' constant)


@dataclass
class LatentResult:
    z: torch.Tensor  # (n, d) the closest adversarial latent found, z0 where none was
    dist: torch.Tensor  # (n,) ||z - z0||_2, nan where none was found
    found: torch.Tensor  # (n,) bool
    queries: torch.Tensor  # (n,) int64 classifier queries spent

    @property
    def success_rate(self) -> float:
        return self.found.float().mean().item()


@dataclass(frozen=True)
class LatentSearch:
    kind: str  # one of KINDS
    samples: int = 64  # N: samples per round per image
    rounds: int = 100  # at most this many rounds per image (samples * rounds queries)
    dr: float = 0.1  # iterative: shell width; hybrid: resolution of phase 1, step of phase 2
    h0: float = 10.0  # hybrid: upper bound of the first coarse range
    stop: int = 5  # hybrid: non-improving rounds tolerated (the authors' counter)

    def __post_init__(self):
        checks = {
            "kind": self.kind in KINDS,
            "samples": self.samples >= 1,
            "rounds": self.rounds >= 1,
            "dr": self.dr > 0,
            "h0": self.h0 > self.dr,
        }
        for field, ok in checks.items():
            if not ok:
                value = getattr(self, field)
                raise ValueError(f"LatentSearch: invalid {field}={value!r} (kind in {KINDS}; samples, rounds >= 1; 0 < dr < h0)")

    def run(
        self,
        classify: Callable[[torch.Tensor], torch.Tensor],
        generate: Callable[[torch.Tensor], torch.Tensor],
        z0: torch.Tensor,
        y_ref: torch.Tensor,
        generator: torch.Generator | None = None,
        budgets: Sequence[int] | None = None,
        max_rows: int = 4096,
    ) -> dict[int, LatentResult]:
        """{r: the search's state after r rounds} for each r in ``budgets`` (default [rounds])."""
        budgets = sorted(set([self.rounds] if budgets is None else budgets))
        if not budgets or budgets[0] < 1 or budgets[-1] > self.rounds:
            raise ValueError(f"budgets must lie in [1, rounds={self.rounds}], got {budgets}")
        n, like = len(z0), dict(dtype=z0.dtype, device=z0.device)
        l = torch.zeros(n, **like)
        h = torch.full((n,), self.dr if self.kind == "iterative" else self.h0, **like)
        counter = torch.ones(n, dtype=torch.long, device=z0.device)
        fine = torch.zeros(n, dtype=torch.bool, device=z0.device)  # hybrid phase 2
        done = torch.zeros_like(fine)
        best_d = torch.full((n,), math.inf, **like)
        best_z = z0.clone()
        queries = torch.zeros(n, dtype=torch.long, device=z0.device)
        out = {}
        with torch.no_grad():
            for r in range(1, budgets[-1] + 1):
                act = ~done
                if act.any():
                    idx = act.nonzero().squeeze(1)
                    queries[idx] += self.samples
                    hit, d = torch.zeros_like(act), torch.full_like(best_d, math.inf)
                    draw = self._draw(classify, generate, z0[idx], y_ref[idx], l[idx], h[idx], generator, max_rows)
                    hit[idx], d[idx], z = draw
                    better = hit & (d < best_d)
                    best_z[better] = z[better[idx]]
                    best_d = torch.where(better, d, best_d)
                    if self.kind == "iterative":
                        done |= hit
                        l, h = torch.where(act, h, l), torch.where(act, h + self.dr, h)
                    else:
                        l, h, counter, fine, done = self._hybrid(act, hit, better, d, best_d, l, h, counter, fine, done)
                if r in budgets:
                    found = best_d.isfinite()
                    dist = torch.where(found, (best_z - z0).norm(dim=1), math.nan)
                    out[r] = LatentResult(best_z.clone(), dist, found, queries.clone())
        return out

    def _draw(self, classify, generate, z0, y_ref, l, h, generator, max_rows) -> tuple[torch.Tensor, ...]:
        """N samples per image in [l, h): (any adversarial, its closest radius (inf if none), its z)."""
        m, dim = z0.shape
        u = torch.randn(m, self.samples, dim, generator=generator, dtype=z0.dtype, device=z0.device)
        u = u / u.norm(dim=2, keepdim=True)
        d = torch.rand(m, self.samples, generator=generator, dtype=z0.dtype, device=z0.device) * (h - l)[:, None] + l[:, None]
        z = z0[:, None] + d[..., None] * u
        labels = torch.cat([classify(generate(c)) for c in z.reshape(-1, dim).split(max_rows)]).reshape(m, self.samples)
        closest, j = torch.where(labels != y_ref[:, None], d, math.inf).min(1)
        return closest.isfinite(), closest, z[torch.arange(m, device=z.device), j]

    def _hybrid(self, act, hit, better, d, best_d, l, h, counter, fine, done) -> tuple[torch.Tensor, ...]:
        """One round of Algorithm 2's state machine for the active images."""
        p1, p2 = act & ~fine, act & fine
        width = h - l
        # Phase 1: a miss raises l to the middle (or ends the phase once the range is below dr);
        # a closer hit recentres on [d/2, d), a farther one halves the range down.
        end = p1 & ~hit & (width < self.dr)
        up, recentre, down = p1 & ~hit & ~end, p1 & better, p1 & hit & ~better
        l, h = (
            torch.where(up, l + width / 2, torch.where(recentre, d / 2, l)),
            torch.where(recentre, d, torch.where(down, l + width / 2, h)),
        )
        counter = torch.where(up | recentre, 1, torch.where(down, counter + 1, counter))
        end |= p1 & hit & ((counter > self.stop) | (h - l < self.dr))
        # Phase 2 from the best so far (or from h0 if nothing was found): each hit steps the
        # range [l, h) down by dr, each miss counts toward `stop`.
        h = torch.where(end & best_d.isfinite(), best_d, h)
        step = end | (p2 & hit)
        h = torch.where(p2 & hit, l, h)
        l = torch.where(step, (h - self.dr).clamp(min=0), l)
        counter = torch.where(step, 1, torch.where(p2 & ~hit, counter + 1, counter))
        fine = fine | end
        done = done | (fine & ((counter > self.stop) | (h <= _H_FLOOR)))
        return l, h, counter, fine, done
