"""study.rng: counter-based random numbers keyed by point, the same in any batch and on any device."""

from __future__ import annotations

import math

import pytest
import torch

from study.rng import PointRNG, mix

MASK = (1 << 64) - 1


def splitmix64_finalizer(z: int) -> int:
    """The reference finalizer on Python integers (unbounded, masked to 64 bits)."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def test_mix_is_splitmix64_bit_for_bit():
    values = [0, 1, 2, 12345, 2**62 + 7, 2**63 - 1, -1, -(2**63), -987654321]
    got = mix(torch.tensor(values, dtype=torch.int64))
    assert [int(g) & MASK for g in got] == [splitmix64_finalizer(v & MASK) for v in values]


def test_a_subset_draws_what_the_whole_batch_draws():
    rng = PointRNG(7, torch.arange(100, 200))
    whole = rng.uniform((3, 4), "draw", 1)
    pick = torch.tensor([5, 0, 99, 42])
    torch.testing.assert_close(rng[pick].uniform((3, 4), "draw", 1), whole[pick], rtol=0, atol=0)
    # A point alone, and the same point as the only member of another batch.
    alone = PointRNG(7, torch.tensor([142])).uniform((3, 4), "draw", 1)
    torch.testing.assert_close(alone[0], whole[42], rtol=0, atol=0)


def test_tags_seeds_and_folds_give_other_numbers():
    ids = torch.arange(50)
    base = PointRNG(1, ids).uniform((8,), "a")
    for other in (PointRNG(1, ids).uniform((8,), "b"), PointRNG(2, ids).uniform((8,), "a"), PointRNG(1, ids).fold(1).uniform((8,), "a")):
        assert (other != base).float().mean() > 0.99
    # fold with a per-point counter: point i's numbers are those of fold(counter[i]) alone.
    counter = torch.arange(50) % 3
    folded = PointRNG(1, ids).fold(counter).uniform((8,), "a")
    for c in range(3):
        same = counter == c
        torch.testing.assert_close(folded[same], PointRNG(1, ids[same]).fold(c).uniform((8,), "a"), rtol=0, atol=0)


def test_distributions():
    rng = PointRNG(3, torch.arange(20000))
    u = rng.uniform((20,))
    assert 0 <= u.min() and u.max() < 1
    for q in (0.1, 0.5, 0.9):
        assert abs((u < q).float().mean().item() - q) < 0.005
    u64 = rng.uniform((10,), dtype=torch.float64)
    assert u64.dtype == torch.float64 and abs(u64.mean().item() - 0.5) < 0.01
    z = rng.normal((20,), dtype=torch.float64)
    assert abs(z.mean().item()) < 0.01 and abs(z.std().item() - 1) < 0.01
    assert abs((z.abs() < 1.96).double().mean().item() - 0.95) < 0.005
    s = rng.signs((20,))
    assert set(s.unique().tolist()) == {-1.0, 1.0} and abs(s.mean().item()) < 0.01
    k = rng.integers(7)
    counts = torch.bincount(k, minlength=7).double()
    assert k.min() >= 0 and k.max() <= 6 and (counts / len(k) - 1 / 7).abs().max() < 0.01
    per_point = rng.integers(torch.arange(20000) % 5 + 1)
    assert (per_point <= torch.arange(20000) % 5).all()


def test_draws_do_not_depend_on_the_generator_state():
    rng = PointRNG(5, torch.arange(10))
    first = rng.normal((6,))
    torch.manual_seed(123)
    torch.rand(1000)
    torch.testing.assert_close(rng.normal((6,)), first, rtol=0, atol=0)


@pytest.mark.cuda
def test_cuda_draws_what_the_cpu_draws():
    assert torch.cuda.is_available(), "a cuda test runs where there is a CUDA GPU (benchmarks/gpu_check.sh)"
    cpu = PointRNG(9, torch.arange(300))
    gpu = PointRNG(9, torch.arange(300, device="cuda"))
    torch.testing.assert_close(gpu.uniform((784,)).cpu(), cpu.uniform((784,)), rtol=0, atol=0)
    torch.testing.assert_close(gpu.signs((3, 1, 28)).cpu(), cpu.signs((3, 1, 28)), rtol=0, atol=0)
    assert torch.equal(gpu.integers(25).cpu(), cpu.integers(25))
    # Box-Muller's log and cos may differ in the last bit between devices.
    torch.testing.assert_close(gpu.normal((784,), dtype=torch.float64).cpu(), cpu.normal((784,), dtype=torch.float64), rtol=1e-12, atol=1e-12)
    assert math.isclose(gpu.uniform(()).sum().item(), cpu.uniform(()).sum().item(), rel_tol=1e-6)
