"""First-order attacks: FGSM, BIM (iterative FGSM, a.k.a. IGS) and PGD with random starts.

One loop serves all three. It takes a per-row ``eps`` tensor and, for evaluation, two
optional per-row tensors that make a whole epsilon grid one batched call:

* ``group``: which original point a row belongs to (rows of one point differ only in eps);
* ``level``: the rank of the row's eps within its point's grid (higher level, larger eps).

With ``early_stop`` a row leaves the batch as soon as its iterate is misclassified (that
adversarial is kept), and a row fooled at level i also fools every row of its point at
level >= i: the same adversarial lies inside every larger ball. Only survivors keep being
attacked, so results are the same as or stronger than full separate runs per eps.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AttackResult:
    x_adv: torch.Tensor  # (B, ...) adversarial inputs in [0, 1], within eps of x
    fooled: torch.Tensor  # (B,) bool: x_adv is misclassified


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

    def __call__(self, model, x, y, eps, norm, *, generator=None) -> torch.Tensor:
        """Plain attack (training use): the final iterate of every row, no early stop."""
        return self.run(model, x, y, eps, norm, early_stop=False, generator=generator).x_adv

    def run(self, model, x, y, eps, norm, *, early_stop=True, group=None, level=None, generator=None) -> AttackResult:
        if not early_stop and self.restarts != 1:
            raise ValueError("restarts > 1 needs early_stop (which restart's iterate to keep is otherwise undefined)")
        n = len(x)
        eps = torch.as_tensor(eps, dtype=x.dtype, device=x.device).expand(n).contiguous()
        group = torch.arange(n, device=x.device) if group is None else group
        level = torch.zeros(n, dtype=torch.long, device=x.device) if level is None else level
        ladder = _Ladder(group, level)
        x_adv = x.detach().clone()
        fooled = torch.zeros(n, dtype=torch.bool, device=x.device)

        with frozen(model):
            for _ in range(self.restarts):
                active = (~fooled).nonzero().squeeze(1)
                if active.numel() == 0:
                    break
                xa = x[active]
                if self.random_start:
                    # One unit-ball sample per point, scaled by each row's eps: every row of a
                    # point starts at the same relative position, as separate runs would.
                    unit = norm.unit_ball_sample((ladder.n_groups, *x.shape[1:]), generator, x.dtype, x.device)
                    start = norm.project(unit[group[active]] * _col(eps[active], xa), eps[active])
                    xa = (xa + start).clamp(0, 1)
                for t in range(self.steps + 1):
                    last = t == self.steps
                    if last and not early_stop:
                        break
                    xa = xa.detach().requires_grad_(not last)
                    with torch.set_grad_enabled(not last):
                        logits = model(xa)
                    if early_stop:
                        wrong = logits.argmax(1) != y[active]
                        if wrong.any():
                            ladder.mark(active[wrong], xa.detach()[wrong], x_adv, fooled)
                        keep = ~fooled[active]
                    if last:
                        break
                    (grad,) = torch.autograd.grad(F.cross_entropy(logits, y[active]), xa)
                    xa = xa.detach()
                    if early_stop:
                        xa, grad, active = xa[keep], grad[keep], active[keep]
                        if active.numel() == 0:
                            break
                    xa = xa + _col(self.step_size * eps[active], xa) * norm.ascent_direction(grad)
                    delta = norm.project(xa - x[active], eps[active])
                    xa = (x[active] + delta).clamp(0, 1)
                # Survivors keep their last iterate; rows fooled on the way (directly or through the
                # ladder) already hold their adversarial.
                alive = ~fooled[active]
                x_adv[active[alive]] = xa.detach()[alive]
        return AttackResult(x_adv, fooled)


class _Ladder:
    """Propagates a success at one eps to the larger eps of the same point."""

    def __init__(self, group: torch.Tensor, level: torch.Tensor):
        self.group, self.level = group, level
        self.n_groups = int(group.max()) + 1 if len(group) else 0
        n_levels = int(level.max()) + 1 if len(level) else 0
        self.row_of = torch.full((self.n_groups, n_levels), -1, dtype=torch.long, device=group.device)
        self.row_of[group, level] = torch.arange(len(group), device=group.device)
        self.broken = torch.full((self.n_groups,), n_levels, dtype=torch.long, device=group.device)

    def mark(self, rows, advs, x_adv, fooled):
        x_adv[rows] = advs
        fooled[rows] = True
        self.broken.scatter_reduce_(0, self.group[rows], self.level[rows], reduce="amin")
        lowest = self.broken[self.group]
        inherit = (~fooled & (self.level >= lowest)).nonzero().squeeze(1)
        if inherit.numel():
            source = self.row_of[self.group[inherit], lowest[inherit]]
            x_adv[inherit] = x_adv[source]
            fooled[inherit] = True


def _col(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def fgsm(steps=None, step_size=None, restarts=1):
    return GradientAttack("fgsm", steps=1, step_size=1.0 if step_size is None else step_size, random_start=False)


def bim(steps=None, step_size=None, restarts=1):
    steps = 10 if steps is None else steps
    # Kurakin et al.: eps / steps per step reaches the boundary exactly in `steps` moves.
    return GradientAttack("bim", steps, 1.0 / steps if step_size is None else step_size, random_start=False)


def pgd(steps=None, step_size=None, restarts=1):
    steps = 10 if steps is None else steps
    # Madry et al.: 2.5 * eps / steps lets the walk reach and slide along the boundary.
    return GradientAttack("pgd", steps, 2.5 / steps if step_size is None else step_size, random_start=True, restarts=restarts)


GRADIENT_ATTACKS = {"fgsm": fgsm, "bim": bim, "pgd": pgd}
