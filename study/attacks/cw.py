"""Carlini-Wagner L2 (Carlini & Wagner 2017, "Towards Evaluating the Robustness of Neural
Networks"): the smallest L2 perturbation that changes the prediction, found by optimisation.

Per point, minimise ||x' - x||_2^2 + c * max(z_y(x') - max_{i != y} z_i(x'), -kappa) over x'
written in tanh space, x' = (tanh(w) + 1) / 2, so x' stays in the box [0, 1] without clipping.
z are the model's logits, never its softmax (softmax saturates and hides the margin); the true
class is masked out of the max over the others. Adam takes ``steps`` steps per value of c;
a batched per-point binary search over c (``search_steps`` rounds) keeps the smallest
adversarial found at any c: c halves toward the last failure after a success and grows tenfold
after a failure until a success brackets it. A round stops early when the total loss has not
fallen by 0.01% over a tenth of its steps. Carlini & Wagner ran up to 10,000 steps at learning
rate 0.01; our default of 100 steps at 0.1 comes within 5% of the exact minimum of a linear
model (tests/test_cw.py) at a hundredth of the cost.

C&W is not bounded by eps. Against an eps grid (the robustness evaluator) a point counts as
fooled at every eps >= the size of its adversarial, measured in the row's norm; the returned
``x_adv`` is the adversarial when it fits the largest eps, else its projection onto that ball.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from study.attacks.gradient import AttackResult, frozen, per_point
from study.types import NonNegFloat, PosFloat, PosInt

_TANH_SCALE = 1 - 1e-6  # atanh(+-1) is infinite: pixels at exactly 0 or 1 start just inside


@dataclass(frozen=True)
class CarliniWagnerL2:
    name: str = "cw"
    steps: int = 100  # Adam steps per value of c
    step_size: float = 0.1  # Adam's learning rate, in tanh space
    restarts: int = 1  # not used; rows record 1
    search_steps: int = 5  # rounds of the binary search over c
    confidence: float = 0.0  # kappa: the margin by which another logit must beat the true one
    initial_c: float = 0.1

    def __call__(self, model, x, y, eps, norm, *, rng=None) -> torch.Tensor:
        """The closest adversarial per point, projected onto its eps ball (x where none was found)."""
        return self.run(model, x, y, eps, norm, early_stop=False).x_adv

    def options(self) -> dict:
        """The settings its result rows record (``step_size`` is Adam's learning rate)."""
        return dict(steps=self.steps, lr=self.step_size, search_steps=self.search_steps, confidence=self.confidence, initial_c=self.initial_c)

    def run(self, model, x, y, eps, norm, *, rng=None, early_stop=True, max_rows=None, levels=None) -> AttackResult:
        """The search (deterministic: ``rng`` is not used) judged at every eps; ``levels`` (a
        cascade) skips the points no level of which is left to attack."""
        eps = torch.as_tensor(eps, dtype=x.dtype, device=x.device)
        moving = (eps.reshape(len(x), -1)[:, -1] > 0) if eps.dim() else (eps > 0).expand(len(x))  # eps = 0 rows cannot move
        if levels is not None:
            moving = moving & (levels > 0)
        x_best, found = self.closest(model, x, y, max_rows, only=moving)
        return self.against(x, x_best, found, eps, norm, early_stop)

    def closest(self, model, x, y, max_rows=None, only=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_best, found) for every point (or the points where ``only`` is true), in chunks of
        ``max_rows`` points: the search itself, independent of any eps or norm."""
        found = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        x_best = x.detach().clone()
        active = torch.arange(len(x), device=x.device) if only is None else only.nonzero().squeeze(1)
        step = max_rows or len(x)
        with frozen(model):
            for i in range(0, len(active), step):
                idx = active[i : i + step]
                x_best[idx], found[idx] = self.minimal(model, x[idx], y[idx])
        return x_best, found

    @staticmethod
    def against(x, x_best, found, eps, norm, early_stop=True) -> AttackResult:
        """The search's result judged against an eps (per point) or eps ladder in ``norm``."""
        eps = torch.as_tensor(eps, dtype=x.dtype, device=x.device)
        ladder = eps.dim() == 2
        eps = eps if ladder else eps.expand(len(x))[:, None]
        delta = x_best - x
        dist = norm.measure(delta)
        largest = eps[:, -1]
        x_adv = (x + norm.project(delta, largest)).clamp(0, 1)
        if early_stop:
            fooled = found[:, None] & (dist[:, None] <= eps)
        else:
            fooled = torch.zeros_like(eps, dtype=torch.bool)
        return AttackResult(x_adv, fooled if ladder else fooled[:, 0])

    def minimal(self, model, x, y) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_best, found): per point, the closest adversarial in L2 over every round of the
        search (x itself where none was found). ``model`` must already be frozen."""
        n = len(x)
        w0 = torch.atanh((2 * x - 1) * _TANH_SCALE)
        other_mask = F.one_hot(y, _n_classes(model, x[:1])).bool()
        lo = torch.zeros(n, dtype=x.dtype, device=x.device)
        hi = torch.full_like(lo, math.inf)
        c = torch.full_like(lo, self.initial_c)
        best_l2 = torch.full_like(lo, math.inf)
        x_best = x.detach().clone()
        check_every = max(self.steps // 10, 1)
        for _ in range(self.search_steps):
            w = w0.clone().requires_grad_(True)
            opt = torch.optim.Adam([w], lr=self.step_size)
            succeeded = torch.zeros(n, dtype=torch.bool, device=x.device)
            previous = math.inf
            for t in range(self.steps):
                with torch.enable_grad():
                    xa = (torch.tanh(w) + 1) / 2
                    z = model(xa)
                    true = z.gather(1, y[:, None]).squeeze(1)
                    best_other = z.masked_fill(other_mask, -math.inf).amax(1)
                    l2sq = (xa - x).flatten(1).square().sum(1)
                    loss = (l2sq + c * (true - best_other + self.confidence).clamp_min(0)).sum()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                opt.step()
                with torch.no_grad():  # bookkeeping on the iterate the loss was measured at
                    success = best_other - true > self.confidence
                    better = success & (l2sq < best_l2)
                    best_l2 = torch.where(better, l2sq.detach(), best_l2)
                    x_best[better] = xa.detach()[better]
                    succeeded |= success
                if t % check_every == check_every - 1:
                    if loss.item() > 0.9999 * previous:
                        break
                    previous = loss.item()
            # Per point: success -> a smaller c may still succeed; failure -> c must grow.
            hi = torch.where(succeeded, torch.minimum(hi, c), hi)
            lo = torch.where(succeeded, lo, torch.maximum(lo, c))
            c = torch.where(hi < math.inf, (lo + hi) / 2, c * 10)
        with torch.no_grad():  # confirm with a plain forward pass of the kept points
            found = (best_l2 < math.inf) & (model(x_best).argmax(1) != y)
        return torch.where(per_point(found, x), x_best, x), found


def _n_classes(model, x_one) -> int:
    with torch.no_grad():
        return model(x_one).shape[1]


def cw(steps: PosInt = 100, lr: PosFloat = 0.1, search_steps: PosInt = 5, confidence: NonNegFloat = 0.0, initial_c: PosFloat = 0.1) -> CarliniWagnerL2:
    """C&W L2: ``steps`` Adam steps at learning rate ``lr`` per value of c, ``search_steps`` rounds
    of the search over c from ``initial_c``; ``confidence`` is kappa."""
    return CarliniWagnerL2(steps=steps, step_size=lr, confidence=confidence, search_steps=search_steps, initial_c=initial_c)


CW_ATTACKS = {"cw": cw}
