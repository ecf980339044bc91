"""Random numbers keyed by point, the same on every device and in every batch.

A torch.Generator gives a stream: what one point draws depends on how many numbers were drawn
before it (the batch it ran in, the points that shared it, the order of the work) and on the
device (CPU and CUDA generators differ). ``PointRNG`` is counter-based instead: every number is
a hash of (stream seed, draw tags, the point's id, the element's index), computed with int64
tensor ops (splitmix64), so a point draws the same numbers alone, in any batch, in any subset
(an attack cascade passes only the points still robust) and on any device.

``ids`` name the points: their index in the evaluation split, or a training image's index in
its training set. ``tags`` name the draw (a restart, an iteration, a purpose), so draws never
share numbers.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch

_GOLDEN = 0x9E3779B97F4A7C15
_MUL1 = 0xBF58476D1CE4E5B9
_MUL2 = 0x94D049BB133111EB


def _i64(c: int) -> int:
    """A 64-bit constant as the int64 with the same bits (torch's integer ops wrap mod 2^64)."""
    c &= (1 << 64) - 1
    return c - (1 << 64) if c >= 1 << 63 else c


def _srl(v: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 bits (``>>`` on int64 is arithmetic)."""
    return (v >> k) & ((1 << (64 - k)) - 1)


def mix(v: torch.Tensor) -> torch.Tensor:
    """The splitmix64 finalizer, bit for bit, on an int64 tensor."""
    v = v ^ _srl(v, 30)
    v = v * _i64(_MUL1)
    v = v ^ _srl(v, 27)
    v = v * _i64(_MUL2)
    return v ^ _srl(v, 31)


def key(seed: int, *tags) -> int:
    """A 64-bit key (as int64) for a stream seed and draw tags."""
    return _i64(int.from_bytes(hashlib.sha256(repr((seed, *tags)).encode()).digest()[:8], "big"))


@dataclass(frozen=True)
class PointRNG:
    seed: int  # the stream's seed (study.seeds.stream_seed of the trial seed and what draws)
    ids: torch.Tensor  # (N,) int64: each point's identity

    @classmethod
    def for_points(cls, seed: int, n: int, device="cpu") -> "PointRNG":
        """Points 0 ... n-1: for callers whose points have no other identity."""
        return cls(seed, torch.arange(n, device=device))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index) -> "PointRNG":
        """The same points' numbers for a subset (an index tensor or a mask)."""
        return PointRNG(self.seed, self.ids[index])

    def fold(self, counter) -> "PointRNG":
        """Per-point sub-streams: point i's numbers become those of (its id, counter[i]), e.g. its
        restart or target number when the points of one batch are at different ones."""
        counter = torch.as_tensor(counter, device=self.ids.device, dtype=torch.int64)
        return PointRNG(self.seed, mix(self.ids.to(torch.int64) * _i64(_GOLDEN) + counter))

    def bits(self, shape, *tags) -> torch.Tensor:
        """(N, *shape) int64 of random bits."""
        per_point = mix(self.ids.to(torch.int64) * _i64(_GOLDEN) + key(self.seed, *tags))
        count = math.prod(shape)
        counter = (torch.arange(1, count + 1, device=self.ids.device, dtype=torch.int64) * _i64(_GOLDEN))
        return mix(per_point[:, None] + counter[None, :]).view(len(self.ids), *shape)

    def uniform(self, shape, *tags, dtype=torch.float32) -> torch.Tensor:
        """(N, *shape) uniform in [0, 1), on a grid of 2^-24 (float32) or 2^-53 (float64)."""
        return to_uniform(self.bits(shape, *tags), dtype)

    def normal(self, shape, *tags, dtype=torch.float32) -> torch.Tensor:
        """(N, *shape) standard normal (Box-Muller on two uniform draws)."""
        u1 = self.uniform(shape, *tags, "normal-radius", dtype=torch.float64)
        u2 = self.uniform(shape, *tags, "normal-angle", dtype=torch.float64)
        return (torch.sqrt(-2 * torch.log1p(-u1)) * torch.cos(2 * math.pi * u2)).to(dtype)

    def signs(self, shape, *tags, dtype=torch.float32) -> torch.Tensor:
        """(N, *shape) of -1 and +1 with equal odds."""
        return to_signs(self.bits(shape, *tags), dtype)

    def integers(self, high, *tags) -> torch.Tensor:
        """(N,) int64 uniform in [0, high); ``high`` an int or an (N,) tensor of ints >= 1."""
        return to_integers(self.bits((), *tags), high)


# Several numbers of one kind or another from one ``bits`` draw (one hash per number, however
# many kinds): a hot loop drawing a few numbers per step pays for the hashing once.


def to_uniform(bits: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """Uniform in [0, 1) from random bits: the top 24 (float32) or 53 (float64)."""
    n = 53 if dtype == torch.float64 else 24
    return _srl(bits, 64 - n).to(dtype) * (2.0**-n)


def to_signs(bits: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """-1 or +1 from the top bit."""
    return (_srl(bits, 63) * 2 - 1).to(dtype)


def to_integers(bits: torch.Tensor, high) -> torch.Tensor:
    """int64 uniform in [0, high) from random bits; ``high`` an int or a tensor of ints >= 1."""
    u = to_uniform(bits, torch.float64)
    high = torch.as_tensor(high, device=u.device, dtype=torch.float64)
    return torch.minimum((u * high).floor(), high - 1).to(torch.int64)
