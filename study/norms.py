"""Threat-model geometry: one small object per norm.

Every method takes a per-sample ``eps`` tensor of shape (N,), so one batched call covers a
whole epsilon grid (each row of the batch may carry its own radius). Random draws come from a
``study.rng.PointRNG``, so a point's draw does not depend on its batch or device.

A norm is one complete object: its exponent and its dual's (what a linearised boundary's
distance divides by), its largest meaningful eps (the spec checks every radius against it), its
projection, ascent direction and uniform ball sample (what the attacks need), its measure, and
the perturbation-size columns every evaluator that reports sizes writes for it
(``size_columns``, ``sizes``). Adding a norm touches this file only: write the object and
register it in ``NORMS``; the spec accepts it, and the results schema gains its columns.
"""

from __future__ import annotations

import math

import pyarrow as pa
import torch

from study.rng import PointRNG


def _per_sample(eps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape (N,) radii to broadcast against an (N, ...) batch."""
    return eps.reshape(-1, *([1] * (like.dim() - 1))).to(like)


class _Norm:
    @classmethod
    def size_columns(cls) -> tuple:
        """The perturbation-size columns (study.results: name, type, group, meaning)."""
        return (
            (f"{cls.name}_mean", pa.float64(), "metric", f"mean {cls.label} norm of the successful perturbations (null if none)"),
            (f"{cls.name}_median", pa.float64(), "metric", f"median {cls.label} norm of the successful perturbations"),
        )

    @classmethod
    def random_start(cls, rng: PointRNG, shape, eps: torch.Tensor, *tags) -> torch.Tensor:
        """A point uniform in each row's eps-ball (the unit-ball sample scaled by eps)."""
        u = cls.unit_ball_sample(rng, shape, *tags, dtype=eps.dtype)
        return u * _per_sample(eps, u)


class Linf(_Norm):
    name, label = "linf", "Linf"
    p = math.inf
    dual = 1.0  # ||w||_1: the Linf distance to a hyperplane w.x + b = 0 is |f(x)| / ||w||_1
    max_eps = 1.0  # inputs lie in [0, 1]: a larger radius is a typo, not a threat model

    @staticmethod
    def project(delta: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        e = _per_sample(eps, delta)
        return torch.maximum(torch.minimum(delta, e), -e)

    @staticmethod
    def ascent_direction(grad: torch.Tensor) -> torch.Tensor:
        return grad.sign()

    @staticmethod
    def unit_ball_sample(rng: PointRNG, shape, *tags, dtype=torch.float32) -> torch.Tensor:
        """(N, *shape): the Linf ball is a cube, so independent uniform coordinates fill it."""
        return rng.uniform(shape, "linf-ball", *tags, dtype=dtype) * 2 - 1

    @staticmethod
    def measure(delta: torch.Tensor) -> torch.Tensor:
        return delta.flatten(1).abs().amax(dim=1)


class L2(_Norm):
    name, label = "l2", "L2"
    p = 2.0
    dual = 2.0
    max_eps = None  # the box's diameter depends on the input size

    @staticmethod
    def project(delta: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        norms = delta.flatten(1).norm(dim=1)
        factor = torch.where(norms > eps.to(delta), eps.to(delta) / norms, torch.ones_like(norms))
        return delta * _per_sample(factor, delta)

    @staticmethod
    def ascent_direction(grad: torch.Tensor) -> torch.Tensor:
        """grad / ||grad||_2, and 0 where the gradient is 0. The gradient is first scaled by its
        largest entry: a confident float32 model's gradient can be so small that its squared
        norm underflows, and its direction must not shrink with it."""
        flat = grad.flatten(1)
        top = flat.abs().amax(dim=1, keepdim=True)
        scaled = flat / torch.where(top > 0, top, torch.ones_like(top))
        norms = scaled.norm(dim=1, keepdim=True)
        return (scaled / torch.where(norms > 0, norms, torch.ones_like(norms))).view_as(grad)

    @staticmethod
    def unit_ball_sample(rng: PointRNG, shape, *tags, dtype=torch.float32) -> torch.Tensor:
        """(N, *shape) uniform in the ball, not on a uniform radius: a Gaussian direction, radius
        U^(1/d)."""
        g = rng.normal(shape, "l2-direction", *tags, dtype=dtype)
        d = math.prod(shape)
        direction = L2.ascent_direction(g)
        radius = rng.uniform((), "l2-radius", *tags, dtype=dtype) ** (1.0 / d)
        return direction * _per_sample(radius, g)

    @staticmethod
    def measure(delta: torch.Tensor) -> torch.Tensor:
        return delta.flatten(1).norm(dim=1)


NORMS = {n.name: n for n in (Linf, L2)}


def measures(delta: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each perturbation's size (N,) in every norm, by norm name."""
    return {n.name: n.measure(delta) for n in NORMS.values()}


def sizes(delta: torch.Tensor, stats: tuple[str, ...] = ("mean", "median")) -> dict[str, float]:
    """The size columns of perturbations ``delta`` (N, ...), N > 0: ``l2_mean``, ``linf_median``, ..."""
    return {f"{name}_{stat}": float(getattr(m, stat)()) for name, m in measures(delta).items() for stat in stats}


def get(name: str):
    try:
        return NORMS[name]
    except KeyError:
        raise ValueError(f"unknown norm {name!r} (known: {', '.join(NORMS)})") from None
