"""Threat-model geometry: one small object per norm.

Every method takes a per-sample ``eps`` tensor of shape (N,), so one batched call covers a
whole epsilon grid (each row of the batch may carry its own radius). Adding a norm touches
this file only: write the four methods and register it in ``NORMS``.
"""

from __future__ import annotations

import math

import torch

_TINY = 1e-12


def _per_sample(eps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape (N,) radii to broadcast against an (N, ...) batch."""
    return eps.reshape(-1, *([1] * (like.dim() - 1))).to(like)


class _Norm:
    @classmethod
    def random_start(cls, shape, eps, generator=None) -> torch.Tensor:
        """A point uniform in each row's eps-ball (the unit-ball sample scaled by eps)."""
        u = cls.unit_ball_sample(shape, generator, eps.dtype, eps.device)
        return u * _per_sample(eps, u)


class Linf(_Norm):
    name = "linf"
    p = math.inf

    @staticmethod
    def project(delta: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        e = _per_sample(eps, delta)
        return torch.maximum(torch.minimum(delta, e), -e)

    @staticmethod
    def ascent_direction(grad: torch.Tensor) -> torch.Tensor:
        return grad.sign()

    @staticmethod
    def unit_ball_sample(shape, generator=None, dtype=torch.float32, device="cpu") -> torch.Tensor:
        # The Linf ball is a cube: independent uniform coordinates fill it uniformly.
        return torch.rand(shape, generator=generator, dtype=dtype, device=device) * 2 - 1

    @staticmethod
    def measure(delta: torch.Tensor) -> torch.Tensor:
        return delta.flatten(1).abs().amax(dim=1)


class L2(_Norm):
    name = "l2"
    p = 2.0

    @staticmethod
    def project(delta: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        norms = delta.flatten(1).norm(dim=1)
        factor = torch.clamp(eps.to(delta) / norms.clamp_min(_TINY), max=1.0)
        return delta * _per_sample(factor, delta)

    @staticmethod
    def ascent_direction(grad: torch.Tensor) -> torch.Tensor:
        norms = grad.flatten(1).norm(dim=1).clamp_min(_TINY)
        return grad / _per_sample(norms, grad)

    @staticmethod
    def unit_ball_sample(shape, generator=None, dtype=torch.float32, device="cpu") -> torch.Tensor:
        # Uniform in the ball, not on a uniform radius: a Gaussian direction, radius U^(1/d).
        g = torch.randn(shape, generator=generator, dtype=dtype, device=device)
        d = math.prod(shape[1:])
        direction = g / _per_sample(g.flatten(1).norm(dim=1).clamp_min(_TINY), g)
        radius = torch.rand(shape[0], generator=generator, dtype=dtype, device=device) ** (1.0 / d)
        return direction * _per_sample(radius, g)

    @staticmethod
    def measure(delta: torch.Tensor) -> torch.Tensor:
        return delta.flatten(1).norm(dim=1)


NORMS = {n.name: n for n in (Linf, L2)}


def get(name: str):
    try:
        return NORMS[name]
    except KeyError:
        raise ValueError(f"unknown norm {name!r} (known: {', '.join(NORMS)})") from None
