"""Geometry of adversarial examples: boundary tilting (Tanay & Griffin) and minimal perturbations.

A binary linear classifier is f(x) = w.x + b (class 1 where f > 0). Its nearest-centroid
direction is z = c1 - c0; the more w tilts away from z, the closer the boundary passes to the
data: Tanay's d_adv = 0.5 * ||z||_2 * cos(theta). The minimal perturbations of f are exact,
with or without the [0, 1] pixel box; ``minimal_eps_bisection`` estimates them for any
differentiable classifier with PGD. Inputs are (N, ...) batches; vectors are flattened.
"""

from __future__ import annotations

import math

import torch

from study import attacks, box_projection, norms
from study.rng import PointRNG
from study.train import predict

# PGD for bisection moves 5 / steps * eps a step (0.1 * eps at steps = 50; Madry's default is
# 2.5 / steps). With early stop any iterate counts, but the bracket is only as tight as PGD is
# close to the ball's best point. Shorter walks leave an L2 random start pointing off the
# gradient (biasing eps up by ~2% at 2.5); longer steps lose in L2 where the box binds, since
# projecting on the ball and then clipping to the box is not the projection on both. Measured on
# linear models against min_perturbation_box: median error below 0.2% in both norms.
BISECTION_TRAVEL = 5.0


def centroids(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flattened means (c0, c1) of the points labelled 0 and 1."""
    flat = x.flatten(1)
    return flat[y == 0].mean(0), flat[y == 1].mean(0)


def tilting_angle(w: torch.Tensor, z: torch.Tensor) -> float:
    """Angle in degrees, in [0, 180], between w and the centroid direction z = c1 - c0."""
    w, z = w.flatten().double(), z.flatten().double()
    z_hat = z / z.norm()
    along = w @ z_hat
    across = (w - along * z_hat).norm()  # atan2 stays accurate near 0 and 180 degrees, acos does not
    return math.degrees(math.atan2(across.item(), along.item()))


def predicted_d_adv(c0: torch.Tensor, c1: torch.Tensor, theta_deg: float) -> float:
    """Tanay's d_adv = 0.5 * ||c1 - c0||_2 * cos(theta)."""
    return 0.5 * (c1 - c0).double().norm().item() * math.cos(math.radians(theta_deg))


def _affine(w, b, x):
    """Flattened float64 x and w, and f(x) = w.x + b per row."""
    flat = x.flatten(1).double()
    w = w.flatten().double().to(x.device)
    return flat, w, flat @ w + float(b)


def min_perturbation_free(w: torch.Tensor, b, x: torch.Tensor, norm_name: str) -> torch.Tensor:
    """Distance (N,) from each x to the hyperplane w.x + b = 0, no box: |f(x)| / ||w||_q, q dual."""
    _, w64, f = _affine(w, b, x)
    dual = norms.get(norm_name).dual
    return (f.abs() / torch.linalg.vector_norm(w64, dual)).to(x.dtype)


def min_perturbation_box(w: torch.Tensor, b, x: torch.Tensor, norm_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Smallest perturbation taking each x onto w.x + b = 0 while x + delta stays in [0, 1]^d
    (study.box_projection). Returns (dist (N,), delta shaped like x); a point that cannot reach
    the boundary inside the box gets dist = inf and the largest move."""
    norm = norms.get(norm_name)
    flat, w64, f = _affine(w, b, x)
    delta, reachable = box_projection.step_to_hyperplane(flat, w64.expand_as(flat), f, norm.name)
    dist = torch.where(reachable, norm.measure(delta), math.inf)
    return dist.to(x.dtype), delta.reshape(x.shape).to(x.dtype)


def minimal_eps_bisection(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    norm_name: str,
    *,
    hi,
    iters: int = 14,
    steps: int = 50,
    restarts: int = 1,
    rng: PointRNG | None = None,
    max_rows: int | None = None,
) -> torch.Tensor:
    """Per-point minimal adversarial eps (N,) of any differentiable classifier, by bisection.

    Each point keeps its own bracket [lo, hi] (``hi`` a float or (N,) tensor); each round is one
    batched PGD run (``steps`` steps of BISECTION_TRAVEL / steps * eps, ``restarts`` random
    starts, drawn from ``rng``, a PointRNG of the points, per round) at the midpoints. A success lowers hi to the distance of the adversarial
    found, a failure raises lo. Returns the final hi, the distance of an adversarial example;
    0 for points misclassified at x, inf for points PGD cannot fool at ``hi``.
    """
    norm = norms.get(norm_name)
    attack = attacks.make("pgd", steps=steps, step_size=BISECTION_TRAVEL / steps, restarts=restarts)
    upper = torch.as_tensor(hi, dtype=x.dtype, device=x.device).expand(len(x)).clone()
    lower = torch.zeros_like(upper)
    correct = predict(model, x) == y
    upper[~correct] = 0

    rng = rng if rng is not None else PointRNG.for_points(0, len(x), x.device)

    def attack_at(live, eps, round_):
        """Attack points ``live`` at radii ``eps``: which were fooled, and the distance found."""
        if not len(live):  # an empty batch has nothing to attack
            return torch.zeros_like(eps, dtype=torch.bool), eps
        res = attack.run(model, x[live], y[live], eps, norm, rng=rng[live].fold(round_), max_rows=max_rows)
        return res.fooled, torch.minimum(eps, norm.measure(res.x_adv - x[live]))

    live = correct.nonzero().squeeze(1)
    fooled, found = attack_at(live, upper[live], 0)
    upper[live] = torch.where(fooled, found, math.inf)
    live = live[fooled]
    for round_ in range(1, iters + 1):
        mid = (lower[live] + upper[live]) / 2
        fooled, found = attack_at(live, mid, round_)
        upper[live] = torch.where(fooled, found, upper[live])
        lower[live] = torch.minimum(torch.where(fooled, lower[live], mid), upper[live])
    return upper


def tilting_plane(w: torch.Tensor, b, c0: torch.Tensor, c1: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Coordinates (N, 2) of x in the plane spanned by z = c1 - c0 and w, and f's line in it.

    Axes: z_hat = z / ||z|| and n_hat, the unit part of w orthogonal to z; origin: the
    centroids' midpoint m. u = (x - m).z_hat, v = (x - m).n_hat. Since w lies in the plane, f(x)
    = wz * u + wn * v + offset exactly, with boundary = {wz: w.z_hat, wn: ||n||, offset: w.m + b}.
    """
    w, c0, c1 = (t.flatten().double().to(x.device) for t in (w, c0, c1))
    z_hat = (c1 - c0) / (c1 - c0).norm()
    wz = w @ z_hat
    n = w - wz * z_hat
    if n.norm() == 0:
        raise ValueError("w is parallel to c1 - c0: it spans no plane with it")
    n_hat = n / n.norm()
    m = (c0 + c1) / 2
    centred = x.flatten(1).double() - m
    uv = torch.stack([centred @ z_hat, centred @ n_hat], dim=1).to(x.dtype)
    return uv, {"wz": wz.item(), "wn": n.norm().item(), "offset": (w @ m).item() + float(b)}
