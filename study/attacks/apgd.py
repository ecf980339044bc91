"""APGD: Auto-PGD of Croce & Hein (2020), "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks" (the APGD-CE and APGD-DLR attacks of AutoAttack).

PGD with momentum and a step size that adapts per point, with no parameter to tune:

* the first step is x^1 = P(x^0 + eta * d(grad)) from a random start x^0, with eta = 2 * eps and
  d the norm's ascent direction (sign for Linf, grad / ||grad||_2 for L2); every later step is
      z^{k+1} = P(x^k + eta * d(grad f(x^k)))
      x^{k+1} = P(x^k + alpha * (z^{k+1} - x^k) + (1 - alpha) * (x^k - x^{k-1})),  alpha = 0.75,
  where P projects onto the eps-ball around x, then into the box [0, 1];
* at the checkpoints w_j (``checkpoints``) a point's eta is halved when its last phase went badly
  (condition 1: fewer than rho = 75% of the steps since w_{j-1} raised the loss; condition 2: eta
  was not halved at w_{j-1} and the best loss has not improved since), and the point then resumes
  from the best iterate x_max found so far (with the gradient there).

Losses: cross-entropy, and the shift- and scale-invariant difference of logits ratio
dlr(z, y) = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12), z sorted descending (z_pi1 >= ...).
APGD-T (the targeted attack of AutoAttack) maximises the targeted DLR loss
-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12) for each of the ``targets`` classes the model
ranks highest after the first at the clean point (the 2nd, 3rd, ... most likely), one full run per
target on the points not yet fooled; any misclassification counts as a success, as in AutoAttack.

Batching follows ``study.attacks.gradient`` (same ``eps`` shapes, ``AttackResult``, ``frozen``):
eps is per point, (N,) or an (N, L) ascending ladder. With ``early_stop`` (evaluation) an iterate
that is misclassified ends its point's attack and is kept; along a ladder only the points that
survive a level (every restart) are attacked at the next one, and an adversarial at distance d
counts at every level >= its own and at every lower level with eps >= d; ``levels`` (a cascade)
ends a point's ladder early. With ``ladder: top-down`` the ladder is climbed the other way: each
point first at its largest eps (of its ``levels``), then, only where that broke it, at the largest
eps below that the adversarial does not already fit, until a level leaves it robust, which is then
taken for robust at every smaller eps too. A point robust at its largest eps pays for one level
instead of all of them; the price is that assumption, which an attack on a masked model can violate
(benchmarks/ladder_order.py). Restarts re-draw the random start and attack only points not yet
fooled. The random starts come from ``rng`` (study.rng.PointRNG), one per point, target and
restart, the same (scaled by the eps) at every level, so a level's run follows the same trajectory
as a separate run at that eps, independent of chunking (``max_rows``), of which other points are in
the batch, and of the device.

Choices where the paper and the reference code (fra31/auto-attack, autopgd_base.py) differ
slightly, all following the paper: condition 1 is strict (< rho * phase length) and counts the steps
f(x^{k+1}) > f(x^k) from x^0 on, with f(x^k) = f(x_max) after a restart from x_max; condition 2 may
fire at the first checkpoint (eta has not changed since w_0 = 0); the checkpoints are computed from
the published fractions (for 100 iterations both give 0, 22, 41, 57, 70, 80, 87, 93, 99). The Linf
random start is x + eps * U(-1, 1) (the reference rescales that draw so its largest coordinate is
+-eps); the L2 one is the reference's, x + eps * (a normalized Gaussian direction). Everything else
(the plain first step, momentum, x_max and its gradient on a restart, the strict "loss went up"
tests) follows the reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal, Optional

import torch
import torch.nn.functional as F

from study.attacks.gradient import AttackResult, frozen, per_point, prepare
from study.types import PosFloat, PosInt

_LOSSES = ("ce", "dlr", "dlr-targeted")
Ladder = Literal["bottom-up", "top-down"]


def checkpoints(n_iter: int) -> list[int]:
    """The iterations w_j at which APGD may halve its step: w_j = ceil(p_j * n_iter), with p_0 = 0,
    p_1 = 0.22 and p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), for p_j <= 1.

    Exact fractions: in floats 0.22 + 0.19 exceeds 0.41 and ceil would give 42 for 100 iterations.
    """
    prev, p = Fraction(0), Fraction(22, 100)
    ws = [0]
    while p <= 1:
        ws.append(math.ceil(p * n_iter))
        prev, p = p, p + max(p - prev - Fraction(3, 100), Fraction(6, 100))
    return sorted(set(ws))  # short runs: several fractions can round to the same iteration


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-row difference of logits ratio: -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)."""
    if logits.shape[1] < 3:
        raise ValueError("apgd-dlr needs at least 3 classes")
    z_y = logits.gather(1, y[:, None])[:, 0]
    is_y = F.one_hot(y, logits.shape[1]).bool()
    z_other = logits.masked_fill(is_y, -math.inf).amax(1)  # the best wrong class
    top = logits.topk(3, dim=1).values
    return -(z_y - z_other) / (top[:, 0] - top[:, 2] + 1e-12)


def targeted_dlr_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-row targeted DLR: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)."""
    if logits.shape[1] < 4:
        raise ValueError("apgd-t needs at least 4 classes")
    z_y = logits.gather(1, y[:, None])[:, 0]
    z_t = logits.gather(1, target[:, None])[:, 0]
    top = logits.topk(4, dim=1).values
    return -(z_y - z_t) / (top[:, 0] - (top[:, 2] + top[:, 3]) / 2 + 1e-12)


def _loss_fn(loss: str):
    """loss(logits, y, target) per row; the untargeted losses ignore the target."""
    if loss == "ce":
        return lambda logits, y, target: F.cross_entropy(logits, y, reduction="none")
    if loss == "dlr":
        return lambda logits, y, target: dlr_loss(logits, y)
    if loss == "dlr-targeted":
        return targeted_dlr_loss
    raise ValueError(f"unknown APGD loss {loss!r} (known: {', '.join(_LOSSES)})")


def _unit_start(norm, rng, shape, dtype) -> torch.Tensor:
    """AutoAttack's random start, for a unit radius: uniform in the cube for Linf; for L2 a Gaussian
    direction, normalized (on the sphere; the ball sample's direction is that Gaussian direction)."""
    u = norm.unit_ball_sample(rng, shape, dtype=dtype)
    return norm.ascent_direction(u) if norm.name == "l2" else u


def ranked_targets(model, x, y, k: int, max_rows=None) -> torch.Tensor:
    """(N, k): the classes the model ranks 2nd, 3rd, ... (k+1)th at each clean point."""
    with torch.no_grad():
        logits = torch.cat([model(part) for part in x.split(max_rows or max(len(x), 1))]) if len(x) else None
    if logits is None:
        return torch.zeros(0, k, dtype=torch.long, device=x.device)
    return logits.argsort(dim=1, descending=True, stable=True)[:, 1 : k + 1]


@dataclass(frozen=True)
class APGD:
    name: str  # "apgd-ce", "apgd-dlr" or "apgd-t"
    loss: str  # "ce", "dlr" or "dlr-targeted"
    steps: int = 100
    step_size: float = 2.0  # initial eta relative to eps (eta = 2 * eps)
    restarts: int = 1
    rho: float = 0.75
    momentum: float = 0.75
    targets: int | None = None  # apgd-t: how many of the most likely other classes to target
    screen: int | None = None  # apgd-t: first a run of this many steps toward every target...
    keep: int | None = None  # ...then the full runs toward the ``keep`` whose runs reached the highest loss
    ladder: str = "bottom-up"  # the order it climbs an eps ladder (Ladder)

    def __call__(self, model, x, y, eps, norm, *, rng=None) -> torch.Tensor:
        """Plain attack (training use): every point's best-loss iterate, no early stop."""
        return self.run(model, x, y, eps, norm, early_stop=False, rng=rng).x_adv

    def options(self) -> dict:
        """The settings its result rows record."""
        own = dict(steps=self.steps, step_size=self.step_size, restarts=self.restarts)
        if self.ladder != "bottom-up":  # only where it differs, so bottom-up keys stay as they were
            own["ladder"] = self.ladder
        if self.targets is None:
            return own
        return {**own, "targets": self.targets} if self.screen is None else {**own, "targets": self.targets, "screen": self.screen, "keep": self.keep}

    def run(self, model, x, y, eps, norm, *, rng=None, early_stop=True, max_rows=None, levels=None) -> AttackResult:
        """Attack every point; ``max_rows`` bounds the batch (all points at once when None)."""
        loss_fn = _loss_fn(self.loss)
        if self.targets is not None and not early_stop:
            raise ValueError("apgd-t runs one attack per target and needs early_stop (which target's iterate to keep is otherwise undefined)")
        eps, ladder, rng, levels = prepare(x, eps, rng, levels, early_stop, self.restarts)
        n, n_levels = eps.shape
        x = x.detach()
        x_adv = x.clone()
        fooled = torch.zeros(eps.shape, dtype=torch.bool, device=x.device)
        top_loss = torch.full((n,), -math.inf, dtype=x.dtype, device=x.device)  # survivors, top level
        steps_up = torch.arange(n_levels, device=x.device)
        with frozen(model):
            n_targets = 1 if self.targets is None or not n else min(self.targets, n_classes(model, x) - 1)
            target = ranked_targets(model, x, y, n_targets, max_rows) if self.targets is not None else y[:, None]

            def attempt(level, sent, targets, counter, steps):
                """One run of ``steps`` per point ``sent`` to ``level`` and still robust there,
                toward targets[p]; returns the best loss per point (-inf for points not run or fooled)."""
                scores = torch.full((n,), -math.inf, dtype=x.dtype, device=x.device)
                todo = (sent & ~fooled[:, level]).nonzero().squeeze(1)
                for pts in todo.split(max_rows or max(len(todo), 1)):
                    e = eps[pts, level]
                    unit = _unit_start(norm, rng[pts].fold(counter), x.shape[1:], x.dtype)
                    start = self._project(x[pts], x[pts] + unit * per_point(e, x), e, norm)
                    best, best_loss, hit, adv = self._attack(model, loss_fn, x[pts], y[pts], targets[pts], e, start, norm, early_stop, steps)
                    if hit.any():
                        p = pts[hit]
                        dist = norm.measure(adv[hit] - x[p])
                        x_adv[p] = adv[hit]
                        # At its own level and above by construction (the measured distance
                        # may exceed that eps by rounding); below it wherever the distance fits.
                        fooled[p] = (steps_up >= level) | (eps[p] >= dist[:, None])
                    last = level == levels[pts] - 1  # a point never fooled keeps its best-loss iterate
                    keep = ~hit & last & (best_loss > top_loss[pts])
                    x_adv[pts[keep]] = best[keep]
                    top_loss[pts[keep]] = best_loss[keep]
                    scores[pts[~hit]] = best_loss[~hit]
                return scores

            top_down = self.ladder == "top-down"
            for level in reversed(range(n_levels)) if top_down else range(n_levels):
                sent = level < levels
                if top_down:  # its top level, or one below a level it broke
                    sent &= (level == levels - 1) | (fooled[:, level + 1] if level + 1 < n_levels else False)
                order = target
                if self.screen is not None:
                    # Short runs toward every candidate; the full runs go to the most promising.
                    scores = torch.stack([attempt(level, sent, target[:, t], -(t + 1), self.screen) for t in range(n_targets)], 1)
                    order = target.gather(1, scores.argsort(dim=1, descending=True, stable=True)[:, : self.keep])
                for t in range(order.shape[1]):
                    for restart in range(self.restarts):
                        attempt(level, sent, order[:, t], t * self.restarts + restart, self.steps)
        return AttackResult(x_adv, fooled if ladder else fooled[:, 0])

    @staticmethod
    def _project(x, point, eps, norm):
        """P: onto the eps-ball around x (the norm's projection), then into the box [0, 1]."""
        return (x + norm.project(point - x, eps)).clamp(0, 1)

    def _attack(self, model, loss_fn, x, y, target, eps, start, norm, early_stop, steps):
        """One APGD run of ``steps`` iterations from ``start`` on a batch, at one radius per row. Returns, per row, the
        best-loss iterate and its loss, whether an iterate was misclassified (only with early_stop:
        the row then left the batch) and that iterate."""
        n = len(x)
        out_best, out_loss = x.clone(), torch.full((n,), -math.inf, dtype=x.dtype, device=x.device)
        out_hit, out_adv = torch.zeros(n, dtype=torch.bool, device=x.device), x.clone()

        loss, grad, wrong = _evaluate(model, loss_fn, start, y, target)
        # The per-row state, compacted together when rows leave the batch.
        s = _State(
            x=x, y=y, target=target, eps=eps,
            rows=torch.arange(n, device=x.device),  # the batch rows still attacked, into the outputs
            xk=start, x_prev=start,  # x^k and x^{k-1} (unused by the first, momentum-free step)
            grad=grad,
            x_best=start, grad_best=grad, loss_best=loss,  # x_max, its gradient, f_max
            eta=self.step_size * eps,
            loss_prev=loss,  # f(x^k), for condition 1
            n_up=torch.zeros(n, dtype=torch.long, device=x.device),  # steps since w_{j-1} that raised f
            best_at_check=loss,  # f_max at w_{j-1}
            halved_at_check=torch.zeros(n, dtype=torch.bool, device=x.device),  # eta halved at w_{j-1}
        )
        ws = set(checkpoints(steps)) - {0}
        last_w = 0

        def leave_if_fooled(wrong):
            if early_stop and wrong.any():
                out_hit[s.rows[wrong]] = True
                out_adv[s.rows[wrong]] = s.xk[wrong]
                s.keep(~wrong)

        leave_if_fooled(wrong)
        for k in range(steps):  # computes x^{k+1}
            if not len(s.rows):
                break
            # The step: plain for the first one, then with momentum.
            a = 1.0 if k == 0 else self.momentum
            z = self._project(s.x, s.xk + per_point(s.eta, s.xk) * norm.ascent_direction(s.grad), s.eps, norm)
            x_next = self._project(s.x, s.xk + a * (z - s.xk) + (1 - a) * (s.xk - s.x_prev), s.eps, norm)
            s.x_prev, s.xk = s.xk, x_next
            loss, s.grad, wrong = _evaluate(model, loss_fn, s.xk, s.y, s.target)
            s.n_up = s.n_up + (loss > s.loss_prev)
            s.loss_prev = loss
            better = loss > s.loss_best  # a new x_max
            s.x_best = torch.where(per_point(better, s.xk), s.xk, s.x_best)
            s.grad_best = torch.where(per_point(better, s.xk), s.grad, s.grad_best)
            s.loss_best = torch.where(better, loss, s.loss_best)
            leave_if_fooled(wrong)

            w = k + 1
            if w in ws:  # a checkpoint: halve eta where the last phase went badly
                cond1 = s.n_up < self.rho * (w - last_w)
                cond2 = ~s.halved_at_check & (s.loss_best <= s.best_at_check)
                halve = cond1 | cond2
                s.eta = torch.where(halve, s.eta / 2, s.eta)
                # ...and resume those rows from x_max, with its gradient (the next step's momentum
                # term is then x_max - x^k).
                s.xk = torch.where(per_point(halve, s.xk), s.x_best, s.xk)
                s.grad = torch.where(per_point(halve, s.grad), s.grad_best, s.grad)
                s.loss_prev = torch.where(halve, s.loss_best, s.loss_prev)
                s.halved_at_check, s.best_at_check = halve, s.loss_best
                s.n_up = torch.zeros_like(s.n_up)
                last_w = w

        out_best[s.rows], out_loss[s.rows] = s.x_best, s.loss_best
        return out_best, out_loss, out_hit, out_adv


class _State:
    """Named per-row tensors of one batch; ``keep`` drops rows from all of them at once. The
    tensors are replaced, never written in place, so they may share storage."""

    def __init__(self, **tensors):
        self.__dict__.update(tensors)

    def keep(self, mask: torch.Tensor):
        for k, v in self.__dict__.items():
            self.__dict__[k] = v[mask]


def n_classes(model, x) -> int:
    with torch.no_grad():
        return model(x[:1]).shape[1]


def _evaluate(model, loss_fn, xk, y, target):
    """Per-row loss at ``xk``, its input gradient, and which rows ``xk`` misclassifies: one forward
    and one backward pass."""
    xk = xk.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(xk)
        loss = loss_fn(logits, y, target)
        (grad,) = torch.autograd.grad(loss.sum(), xk)
    return loss.detach(), grad, logits.detach().argmax(1) != y


def apgd_ce(steps: PosInt = 100, step_size: PosFloat = 2.0, restarts: PosInt = 1, ladder: Ladder = "bottom-up") -> APGD:
    """APGD on cross-entropy; ``step_size``: the initial eta relative to eps (2 * eps)."""
    return APGD("apgd-ce", "ce", steps, step_size, restarts, ladder=ladder)


def apgd_dlr(steps: PosInt = 100, step_size: PosFloat = 2.0, restarts: PosInt = 1, ladder: Ladder = "bottom-up") -> APGD:
    return APGD("apgd-dlr", "dlr", steps, step_size, restarts, ladder=ladder)


def apgd_t(
    steps: PosInt = 100, step_size: PosFloat = 2.0, restarts: PosInt = 1, targets: PosInt = 9,
    screen: Optional[PosInt] = None, keep: Optional[PosInt] = None, ladder: Ladder = "bottom-up",
) -> APGD:
    """AutoAttack's APGD-T: 100 iterations per target, the 9 most likely other classes. With
    ``screen`` and ``keep``: a ``screen``-step run toward each of the ``targets`` classes first,
    then the full ``steps`` toward the ``keep`` classes whose short runs reached the highest
    targeted loss (per point)."""
    if (screen is None) != (keep is None):
        raise ValueError(f"{'keep' if screen is None else 'screen'}: apgd-t takes screen and keep together (short runs toward every target, then full runs toward the best keep)")
    if keep is not None and keep > targets:
        raise ValueError(f"keep: must be at most targets ({targets})")
    if screen is not None and screen >= steps:
        raise ValueError(f"screen: must be fewer than steps ({steps})")
    return APGD("apgd-t", "dlr-targeted", steps, step_size, restarts, targets=targets, screen=screen, keep=keep, ladder=ladder)


APGD_ATTACKS = {"apgd-ce": apgd_ce, "apgd-dlr": apgd_dlr, "apgd-t": apgd_t}
