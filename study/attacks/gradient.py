"""First-order attacks: FGSM, BIM (iterative FGSM, a.k.a. IGS) and PGD with random starts.

One loop serves all three. ``eps`` is per point: shape (N,) for one radius each, or (N, L) for
an ascending ladder of radii each, so a whole epsilon grid is one batched call. With
``early_stop`` (evaluation) the loop is cheap where that is exact:

* a point leaves the batch as soon as an iterate is misclassified, keeping that adversarial;
* along a ladder, only a point that survives eps_i (every step of every restart) is attacked
  at eps_i+1: an adversarial found at distance d from the point (in the threat norm) lies in
  every ball of radius >= d, so it counts as a success at each such eps, larger or smaller;
* ``levels`` (an attack cascade) stops a point's ladder early: levels an earlier attack broke
  need no more work;
* without a random start, a point's first step is the same at every eps (it starts at x), so
  that gradient is computed once per point, not once per eps;
* batches are refilled with waiting points as others finish, so they stay full.

A point's attack never depends on the other points: the gradient is that of its own loss (the
batch's summed loss, not its mean, whose per-point gradient would shrink with the rows in
flight), and its random starts come from ``rng`` (study.rng.PointRNG), keyed by the point and
the restart, drawn the same in any batch and on any device. An eps the loop attacks follows
exactly the trajectory of a separate run at that eps, random starts included (one unit-ball
sample per point and restart, scaled by the eps), so results are the same as or stronger than
full separate runs per eps, point by point.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from study.rng import PointRNG
from study.types import PosFloat, PosInt


@dataclass
class AttackResult:
    x_adv: torch.Tensor  # (N, ...) in [0, 1]: the closest adversarial found per point, else its last iterate
    fooled: torch.Tensor  # bool, shaped like eps: x_adv is misclassified and within that eps
    queries: torch.Tensor | None = None  # model queries per point (shaped like eps), where the attack counts them (Square)


def prepare(x, eps, rng, levels, early_stop, restarts):
    """The run protocol's arguments in one shape: eps as an (N, L) ladder, whether it was one, the
    points' PointRNG (points 0 ... N-1 under seed 0 when none is given) and ``levels`` (N,):
    how many of each point's levels to attack (all by default)."""
    eps = torch.as_tensor(eps, dtype=x.dtype, device=x.device)
    ladder = eps.dim() == 2
    if not early_stop and (restarts != 1 or ladder):
        raise ValueError("restarts > 1 and eps ladders need early_stop (which iterate to keep is otherwise undefined)")
    eps = (eps if ladder else eps.expand(len(x))[:, None]).contiguous()
    rng = rng if rng is not None else PointRNG.for_points(0, len(x), x.device)
    if len(rng) != len(x):
        raise ValueError(f"rng holds {len(rng)} points for {len(x)} inputs")
    levels = torch.full((len(x),), eps.shape[1], device=x.device) if levels is None else levels.to(x.device)
    return eps, ladder, rng, levels


@contextlib.contextmanager
def frozen(model: torch.nn.Module):
    """Eval mode, no parameter gradients; restore the caller's mode and flags afterwards."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


@dataclass(frozen=True)
class GradientAttack:
    name: str
    steps: int
    step_size: float  # relative to eps: each step moves step_size * eps along the ascent direction
    random_start: bool
    restarts: int = 1

    def __call__(self, model, x, y, eps, norm, *, rng=None) -> torch.Tensor:
        """Plain attack (training use): the final iterate of every point, no early stop."""
        return self.run(model, x, y, eps, norm, early_stop=False, rng=rng).x_adv

    def run(self, model, x, y, eps, norm, *, rng=None, early_stop=True, max_rows=None, levels=None) -> AttackResult:
        """Attack every point; ``max_rows`` bounds the batch (all points at once when None)."""
        eps, ladder, rng, levels = prepare(x, eps, rng, levels, early_stop, self.restarts)
        with frozen(model):
            state = _Ladders(self, model, x, y, eps, norm, rng, levels, early_stop)
            state.run(max_rows or len(x))
        return AttackResult(state.x_adv, state.fooled if ladder else state.fooled[:, 0])

    def options(self) -> dict:
        """Its factory's keywords, resolved (``make(name, **options())`` builds it again)."""
        own = dict(steps=self.steps, step_size=self.step_size, restarts=self.restarts)
        return {k: own[k] for k in _OPTIONS[self.name]}


class _Ladders:
    """The attack loop's state: one active row per point in flight, at (level, restart, step)."""

    def __init__(self, attack, model, x, y, eps, norm, rng, levels, early_stop):
        self.attack, self.model, self.x, self.y, self.eps, self.norm = attack, model, x, y, eps, norm
        self.rng, self.early_stop = rng, early_stop
        self.top = levels - 1  # the last level each point is attacked at
        n, dev = len(x), x.device
        self.level = torch.zeros(n, dtype=torch.long, device=dev)  # index into the point's eps ladder
        self.restart = torch.zeros(n, dtype=torch.long, device=dev)
        self.x_adv = x.detach().clone()
        self.fooled = torch.zeros(eps.shape, dtype=torch.bool, device=dev)
        self.first_grad = None if attack.random_start else torch.empty_like(x)
        self.first_known = torch.zeros(n, dtype=torch.bool, device=dev)

    def start(self, pts):
        """Iterates at step 0 for points ``pts`` at their current level and restart."""
        xa = self.x[pts]
        if not self.attack.random_start:
            return xa
        eps = self.eps[pts, self.level[pts]]
        # One unit-ball sample per point and restart, the same at every eps.
        unit = self.norm.unit_ball_sample(self.rng[pts].fold(self.restart[pts]), xa.shape[1:], dtype=xa.dtype)
        return (xa + self.norm.project(unit * per_point(eps, xa), eps)).clamp(0, 1)

    def run(self, max_rows):
        steps = self.attack.steps
        waiting = (self.top >= 0).nonzero().squeeze(1)
        pts = waiting[:0]  # the points in flight, one row each, at step t of their current attempt
        t = waiting[:0]
        xa = self.x[:0]
        while True:
            if len(pts) < max_rows and len(waiting):  # refill the batch
                new, waiting = waiting[: max_rows - len(pts)], waiting[max_rows - len(pts) :]
                pts, t, xa = torch.cat([pts, new]), torch.cat([t, torch.zeros_like(new)]), torch.cat([xa, self.start(new)])
            if not len(pts):
                return
            stepping = t < steps
            wrong, grad = self.check_and_grad(pts, t, xa, stepping)
            done = wrong.clone()
            if wrong.any():
                self.record(pts[wrong], xa[wrong])
            finished = ~stepping & ~done
            if finished.any():  # survived every step of this attempt
                done |= self.advance(pts, t, xa, finished)
            moving = (stepping & ~done).nonzero().squeeze(1)
            xa[moving] = self.step(pts[moving], xa[moving], grad[moving])
            t[moving] += 1
            pts, t, xa = pts[~done], t[~done], xa[~done]

    def check_and_grad(self, pts, t, xa, stepping):
        """Which rows' iterates are misclassified (when early_stop), and each stepping row's input
        gradient of its own cross-entropy."""
        wrong = torch.zeros_like(stepping)
        grad = torch.zeros_like(xa)
        g = stepping.nonzero().squeeze(1)
        if self.first_grad is not None:
            # A point starts every eps at x: its first gradient was taken (and x checked) at the
            # lowest eps; reuse it for the higher ones.
            known = (t[g] == 0) & self.first_known[pts[g]]
            grad[g[known]] = self.first_grad[pts[g[known]]]
            g = g[~known]
        if len(g):
            rows = xa[g].detach().requires_grad_(True)
            with torch.enable_grad():
                out = self.model(rows)
                grad[g] = torch.autograd.grad(F.cross_entropy(out, self.y[pts[g]], reduction="sum"), rows)[0]
            if self.early_stop:
                wrong[g] = out.argmax(1) != self.y[pts[g]]
            if self.first_grad is not None:
                first = g[t[g] == 0]
                self.first_grad[pts[first]] = grad[first]
                self.first_known[pts[first]] = True
        rest = (~stepping).nonzero().squeeze(1)
        if self.early_stop and len(rest):
            with torch.no_grad():
                wrong[rest] = self.model(xa[rest]).argmax(1) != self.y[pts[rest]]
        return wrong, grad

    def step(self, pts, xa, grad):
        eps = self.eps[pts, self.level[pts]]
        xa = xa + per_point(self.attack.step_size * eps, xa) * self.norm.ascent_direction(grad)
        delta = self.norm.project(xa - self.x[pts], eps)
        return (self.x[pts] + delta).clamp(0, 1)

    def record(self, pts, advs):
        """A point's first success ends its attack: the adversarial, at distance d from the point,
        counts at every eps >= d of its ladder (the larger ones, and any smaller one >= d)."""
        dist = self.norm.measure(advs - self.x[pts])
        self.x_adv[pts] = advs
        levels = torch.arange(self.eps.shape[1], device=pts.device)
        # At its own eps and above by construction (the measured distance may exceed that eps by
        # rounding); below it wherever the measured distance fits.
        self.fooled[pts] = (levels >= self.level[pts, None]) | (self.eps[pts] >= dist[:, None])

    def advance(self, pts, t, xa, finished):
        """Rows that survived an attempt move to their next restart, else their next eps, else
        they are done (keeping the last iterate). Updates t and xa in place; returns done."""
        i = finished.nonzero().squeeze(1)
        p = pts[i]
        next_level = self.restart[p] == self.attack.restarts - 1
        over = next_level & (self.level[p] == self.top[p])
        self.x_adv[p[over]] = xa[i[over]]
        done = torch.zeros_like(finished)
        done[i[over]] = True
        i, p, next_level = i[~over], p[~over], next_level[~over]
        self.level[p] += next_level.long()
        self.restart[p] = torch.where(next_level, 0, self.restart[p] + 1)
        t[i] = 0
        xa[i] = self.start(p)
        return done


def per_point(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def fgsm(step_size: PosFloat = 1.0) -> GradientAttack:
    """Goodfellow et al.: one signed-gradient step of step_size * eps."""
    return GradientAttack("fgsm", steps=1, step_size=step_size, random_start=False)


def bim(steps: PosInt = 10, step_size: Optional[PosFloat] = None) -> GradientAttack:
    # Kurakin et al.: eps / steps per step reaches the boundary exactly in `steps` moves.
    return GradientAttack("bim", steps, 1.0 / steps if step_size is None else step_size, random_start=False)


def pgd(steps: PosInt = 10, step_size: Optional[PosFloat] = None, restarts: PosInt = 1) -> GradientAttack:
    # Madry et al.: 2.5 * eps / steps lets the walk reach and slide along the boundary.
    return GradientAttack("pgd", steps, 2.5 / steps if step_size is None else step_size, random_start=True, restarts=restarts)


GRADIENT_ATTACKS = {"fgsm": fgsm, "bim": bim, "pgd": pgd}
_OPTIONS = {"fgsm": ("step_size",), "bim": ("steps", "step_size"), "pgd": ("steps", "step_size", "restarts")}
