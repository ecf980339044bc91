"""Latent-space searches for natural adversarial examples (study.attacks.latent) against a known
answer: a linear generator G(z) = A z + b and a threshold classifier f(x) = [w.x > t]. The
closest flip from z0 lies at latent distance d* = |w.(A z0 + b) - t| / ||A^T w||, and no
sample nearer than d* can flip."""

from __future__ import annotations

import pytest
import torch

from study.attacks.latent import LatentSearch

D64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tensors here are tiny: a second intra-op thread only adds contention (10x on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Linear:
    """G, f and points z0 whose closest flips lie at the given signed distances (sign = side)."""

    def __init__(self, dim: int, distances, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.A, self.b, self.w = (torch.randn(*s, generator=g, dtype=D64) for s in ((5, dim), (5,), (5,)))
        self.t = 0.3
        v = self.A.T @ self.w
        on_boundary = (self.t - self.w @ self.b) * v / (v @ v)
        along = torch.randn(len(distances), dim, generator=g, dtype=D64)
        along -= (along @ v)[:, None] * v / (v @ v)  # move along the boundary too, so points differ
        self.z0 = on_boundary + along + torch.tensor(distances, dtype=D64)[:, None] * v / v.norm()
        self.y = self.classify(self.generate(self.z0))
        self.dstar = (self.generate(self.z0) @ self.w - self.t).abs() / v.norm()

    def generate(self, z):
        return z @ self.A.T + self.b

    def classify(self, x):
        return (x @ self.w > self.t).long()

    def run(self, search: LatentSearch, seed: int = 0, **kw):
        return search.run(self.classify, self.generate, self.z0, self.y, torch.Generator().manual_seed(seed), **kw)

    def flips(self, z):
        return self.classify(self.generate(z)) != self.y


def test_the_fixture_has_the_distances_it_was_built_with():
    lin = Linear(2, [0.5, -1.25])
    assert lin.dstar.tolist() == pytest.approx([0.5, 1.25])
    assert lin.y.tolist() == [1, 0]


@pytest.mark.parametrize("dim, samples", [(2, 512), (3, 2048)])
def test_iterative_stops_in_the_shell_holding_the_closest_flip(dim, samples):
    lin = Linear(dim, [0.03, 0.42, -0.81, 1.21, -1.73])
    dr = 0.1
    res = lin.run(LatentSearch("iterative", samples=samples, rounds=30, dr=dr))[30]
    assert res.found.all()
    assert (res.dist >= lin.dstar - 1e-9).all() and (res.dist <= lin.dstar + dr).all(), (res.dist, lin.dstar)
    assert (res.z - lin.z0).norm(dim=1) == pytest.approx(res.dist)
    assert lin.flips(res.z).all()
    # Shell k covers [k dr, (k + 1) dr): a point found in shell k spent k + 1 rounds of N queries.
    shell = (res.dist / dr).floor().long()
    assert shell.tolist() == (lin.dstar / dr).floor().long().tolist()
    assert res.queries.tolist() == (samples * (shell + 1)).tolist()


def test_hybrid_finds_the_flip_within_dr_in_far_fewer_queries_than_iterative():
    lin = Linear(2, [3.024, -2.967, 3.513])  # away from shell edges (multiples of dr)
    dr, n = 0.01, 256
    hybrid = lin.run(LatentSearch("hybrid", samples=n, rounds=400, dr=dr))[400]
    iterative = lin.run(LatentSearch("iterative", samples=n, rounds=400, dr=dr))[400]
    for res in (hybrid, iterative):
        assert res.found.all() and lin.flips(res.z).all()
        assert (res.dist >= lin.dstar - 1e-6).all() and (res.dist <= lin.dstar + dr).all(), (res.dist, lin.dstar)
    assert iterative.queries.tolist() == (n * ((lin.dstar / dr).floor().long() + 1)).tolist()  # ~300 rounds each
    assert (hybrid.queries * 3 < iterative.queries).all(), (hybrid.queries, iterative.queries)


@pytest.mark.parametrize("kind", ["iterative", "hybrid"])
def test_budget_snapshots_are_the_same_search_stopped_earlier(kind):
    lin = Linear(2, [0.03, 0.42, -0.81, 1.21, -2.53, 4.47])
    n, budgets = 64, [1, 2, 5, 20, 60]
    search = LatentSearch(kind, samples=n, rounds=60, dr=0.1)
    snaps = lin.run(search, budgets=budgets)
    assert sorted(snaps) == budgets
    # The last snapshot is exactly a plain run with that many rounds.
    plain = lin.run(search)[60]
    for field in ("z", "dist", "found", "queries"):
        assert torch.equal(getattr(snaps[60], field).nan_to_num(-1), getattr(plain, field).nan_to_num(-1))
    rates = [snaps[r].success_rate for r in budgets]
    assert rates == sorted(rates) and rates[-1] == 1.0
    assert (snaps[60].dist >= lin.dstar - 1e-9).all() and snaps[1].queries.sum() < snaps[60].queries.sum()
    for r, r2 in zip(budgets, budgets[1:]):
        a, b = snaps[r], snaps[r2]
        assert (a.queries <= n * r).all() and (a.queries <= b.queries).all()
        assert b.found[a.found].all()
        assert (b.dist[a.found] <= a.dist[a.found]).all()
        assert lin.flips(a.z)[a.found].all()
        assert torch.equal(a.z[~a.found], lin.z0[~a.found]) and a.dist[~a.found].isnan().all()


@pytest.mark.parametrize("kind, rounds_spent", [("iterative", 20), ("hybrid", 8 + 5)])
def test_a_classifier_that_never_flips_yields_nothing(kind, rounds_spent):
    """Iterative spends its whole budget. Hybrid halves [0, 10) up to width < 0.1 (8 rounds),
    then misses `stop` = 5 times just below h0."""
    lin = Linear(3, [0.5, -1.0, 2.0])
    res = LatentSearch(kind, samples=16, rounds=20, dr=0.1).run(
        lambda x: torch.zeros(len(x), dtype=torch.long), lin.generate, lin.z0, torch.zeros(3, dtype=torch.long)
    )[20]
    assert not res.found.any() and res.dist.isnan().all() and res.success_rate == 0.0
    assert torch.equal(res.z, lin.z0)
    assert res.queries.tolist() == [16 * rounds_spent] * 3


@pytest.mark.parametrize("kind", ["iterative", "hybrid"])
def test_seeded_runs_repeat_and_chunking_changes_nothing(kind):
    lin = Linear(3, [0.2, -0.7, 1.4, 2.2])
    rows = []

    def classify(x):
        assert not torch.is_grad_enabled()
        rows.append(len(x))
        return lin.classify(x)

    search = LatentSearch(kind, samples=32, rounds=40, dr=0.1)
    chunked = search.run(classify, lin.generate, lin.z0, lin.y, torch.Generator().manual_seed(3), max_rows=7)[40]
    assert max(rows) <= 7 and sum(rows) == chunked.queries.sum()  # finished images are not queried
    for other in (lin.run(search, seed=3)[40], lin.run(search, seed=3, max_rows=10_000)[40]):
        assert torch.equal(other.z, chunked.z) and torch.equal(other.queries, chunked.queries)
        assert torch.equal(other.dist.nan_to_num(-1), chunked.dist.nan_to_num(-1))
    assert not torch.equal(lin.run(search, seed=4)[40].z, chunked.z)


@pytest.mark.parametrize(
    "kw, field",
    [({"kind": "gradient"}, "kind"), ({"samples": 0}, "samples"), ({"rounds": 0}, "rounds"), ({"dr": 0.0}, "dr"),
     ({"h0": 0.1}, "h0")],
)
def test_invalid_settings_raise(kw, field):
    with pytest.raises(ValueError, match=f"invalid {field}="):
        LatentSearch(**{"kind": "hybrid", **kw})


def test_budgets_above_the_round_cap_raise():
    lin = Linear(2, [0.5])
    with pytest.raises(ValueError, match="budgets"):
        lin.run(LatentSearch("iterative", rounds=10), budgets=[5, 11])
    res = lin.run(LatentSearch("iterative", samples=256, rounds=10), budgets=[10])[10]
    assert 0.5 <= res.dist.item() <= 0.6


@pytest.mark.cuda
def test_runs_on_the_device_of_z0():
    assert torch.cuda.is_available(), "a cuda test runs where there is a CUDA GPU (benchmarks/gpu_check.sh)"
    lin = Linear(2, [0.42, -1.21])
    cuda = torch.device("cuda")
    A, b, w = lin.A.to(cuda), lin.b.to(cuda), lin.w.to(cuda)
    res = LatentSearch("hybrid", samples=512, rounds=50, dr=0.1).run(
        lambda x: (x @ w > lin.t).long(), lambda z: z @ A.T + b, lin.z0.to(cuda), lin.y.to(cuda),
        torch.Generator(cuda).manual_seed(0),
    )[50]
    assert res.z.device.type == res.queries.device.type == "cuda"
    assert res.found.all() and (res.dist.cpu() >= lin.dstar - 1e-9).all() and (res.dist.cpu() <= lin.dstar + 0.1).all()
