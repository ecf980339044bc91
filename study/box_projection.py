"""The smallest step onto a hyperplane that keeps a point in the pixel box [0, 1]^d, exactly.

For f(z) = w . z + c (one hyperplane per row) and a point x, the smallest delta in Linf or L2
with f(x + delta) = 0 and x + delta in the box. Pixel i moves toward the hyperplane (against
s * w_i, s = sign f(x)) by at most its room in the box. Linf: delta_i = -s sign(w_i) min(eps,
room_i), the smallest such eps. L2 (KKT): delta_i = clip(-s t w_i) to the box, the smallest such
t >= 0. Both reduce |f| by a piecewise-linear function of eps or t, solved exactly by sorting the
knees. Used for the exact minimal perturbations of linear models (study.geometry) and for FAB's
projections (study.attacks.fab). Computed in float64.
"""

from __future__ import annotations

import math

import torch


def step_to_hyperplane(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor, norm_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(delta (N, D), reachable (N,)) for flattened points ``x`` (N, D) in [0, 1], normals ``w``
    (N, D) and f(x) (N,). Where no point of the hyperplane lies in the box, delta is the largest
    move toward it (every pixel at its limit) and reachable is False. Returns float64."""
    x, w, f = x.double(), w.double(), f.double()
    step = -f.sign()[:, None] * w.sign()  # +1: the pixel goes up, -1: down, 0: it cannot help
    room = torch.where(step > 0, 1 - x, x).clamp_min(0)
    size = w.abs()
    if norm_name == "linf":  # pixel i moves min(eps, room_i), at rate |w_i|
        rate, knee, speed = size, room, torch.ones_like(size)
    else:  # pixel i moves min(t |w_i|, room_i), at rate w_i^2
        rate, knee, speed = size**2, room / torch.where(size > 0, size, 1.0), size
    t = _solve_saturating(rate, torch.where(rate > 0, knee, 0), f.abs())
    reachable = ~t.isinf()
    t = torch.where(reachable, t, knee.amax(1))
    move = torch.where(rate > 0, torch.minimum(t[:, None] * speed, room), 0.0)
    delta = (x + step * move).clamp(0, 1) - x
    return delta, reachable


def _solve_saturating(rate: torch.Tensor, knee: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per row, the smallest t >= 0 with g(t) = sum_i rate_i * min(t, knee_i) = target (inf if
    none): g is piecewise linear, so sort the knees and solve on the segment that reaches it."""
    knee, order = knee.sort(dim=1)
    rate = rate.gather(1, order)
    zero = torch.zeros_like(rate[:, :1])
    done = (rate * knee).cumsum(1)  # sum over the knees passed, at each knee
    # Rates still growing at each knee, summed from the far end: as a total minus a running sum,
    # rounding would leave ~1e-17 where the true tail is ~1e-89 (near-zero weights of pixels that
    # are always 0), and that times their huge knees swamps g.
    growing = rate.flip(1).cumsum(1).flip(1)  # sum of rate_j for j >= i
    tail = torch.cat([growing[:, 1:], zero], 1)
    at_knee = done + knee * tail  # g at each knee (nondecreasing)
    k = (at_knee < target[:, None]).sum(1, keepdim=True)  # the first knee where g >= target
    reachable = k[:, 0] < knee.shape[1]
    k = k.clamp(max=knee.shape[1] - 1)
    before = torch.cat([zero, done[:, :-1]], 1).gather(1, k)[:, 0]  # the saturated part of g on that segment
    slope = growing.gather(1, k)[:, 0]
    t = torch.where(target > 0, (target - before) / slope, 0.0)
    return torch.where(reachable, t, math.inf)
