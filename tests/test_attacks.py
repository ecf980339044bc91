"""Property tests for the threat-model geometry (study.norms) and the attacks' run protocol.

Tiny seeded models (a linear layer, a small conv net, an MLP with dropout, and a "wiggly" net
whose sine activations make logits oscillate) on random 1x6x6 inputs in [0, 1]; every attack
(fgsm, bim, pgd with random start and restarts, apgd, fab-t, square, cw) in every norm (linf,
l2) with per-row eps tensors that include eps = 0. Random draws come from a PointRNG. The never-weaker checks run in float64 on a small trained linear
model, on the points it classifies correctly (as the evaluator does).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from study import attacks
from study.evaluators.robustness import attack_each_eps_separately, attack_grid
from study.norms import L2, NORMS, Linf
from study.rng import PointRNG

SHAPE = (1, 6, 6)
D = math.prod(SHAPE)
N_CLASSES = 5
EPS_MAX = {"linf": 0.4, "l2": 3.0}
TOL = 1e-5

PROPS = settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

attack_names = st.sampled_from(sorted(attacks.ATTACKS))
# Attacks with a final iterate to return without early stop (apgd-t runs one attack per target).
plain_names = st.sampled_from(sorted(set(attacks.ATTACKS) - {"apgd-t"}))
norm_names = st.sampled_from(sorted(NORMS))
model_kinds = st.sampled_from(["linear", "conv", "dropout", "wiggly"])


def make_model(kind: str, seed: int, dtype=torch.float32) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind == "linear":
            m = nn.Sequential(nn.Flatten(), nn.Linear(D, N_CLASSES))
        elif kind == "conv":
            m = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * D, N_CLASSES))
        elif kind == "wiggly":  # logits oscillate along any ray: a larger step can overshoot
            m = nn.Sequential(nn.Flatten(), nn.Linear(D, 16), Sine(25.0), nn.Linear(16, N_CLASSES))
        else:
            m = nn.Sequential(nn.Flatten(), nn.Linear(D, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, N_CLASSES))
    return m.to(dtype)


class Sine(nn.Module):
    def __init__(self, freq: float):
        super().__init__()
        self.freq = freq

    def forward(self, x):
        return torch.sin(self.freq * x)


def make_data(n: int, seed: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *SHAPE), generator=g, dtype=dtype)
    y = torch.randint(0, N_CLASSES, (n,), generator=g)
    return x, y


def eps_rows(norm_name: str, n: int):
    """Per-row radii: a mix of exact zeros and values up to the norm's maximum."""
    return st.lists(st.one_of(st.just(0.0), st.floats(0.0, EPS_MAX[norm_name])), min_size=n, max_size=n)


def build_attack(name: str, steps: int, restarts: int = 1):
    """A short run of attack ``name``: ``steps`` iterations (Square: 5 x steps queries)."""
    options = {
        "fgsm": {},
        "bim": dict(steps=steps),
        "cw": dict(steps=steps, search_steps=2),
        "fab-t": dict(steps=steps, targets=2, restarts=restarts),
        "fmn-t": dict(steps=steps, targets=2, restarts=restarts),
        "square": dict(queries=5 * steps, restarts=restarts),
        "apgd-t": dict(steps=steps, targets=2, restarts=restarts),
    }.get(name, dict(steps=steps, restarts=restarts))
    return attacks.make(name, **options)


def rng(seed: int, n: int) -> PointRNG:
    return PointRNG.for_points(seed, n)


@st.composite
def attack_cases(draw, early_stop=None):
    """(model, x, y, eps, norm, attack, early_stop, rng seed)."""
    seed = draw(st.integers(0, 2**16))
    n = draw(st.integers(1, 8))
    norm_name = draw(norm_names)
    early = draw(st.booleans()) if early_stop is None else early_stop
    name = draw(attack_names if early else plain_names)
    restarts = draw(st.integers(1, 3)) if (name in ("pgd", "apgd-ce", "fab-t", "fmn", "fmn-t", "square") and early) else 1
    steps = draw(st.integers(1, 6))
    kind = draw(model_kinds)
    eps = torch.tensor(draw(eps_rows(norm_name, n)), dtype=torch.float32)
    model = make_model(kind, seed)
    x, y = make_data(n, seed + 1)
    return model, x, y, eps, NORMS[norm_name], build_attack(name, steps, restarts), early, seed


# --------------------------------------------------------------------------------------------
# Attacks: the threat model is respected


@PROPS
@given(attack_cases())
def test_adversarials_lie_in_the_ball_and_the_box(case):
    model, x, y, eps, norm, attack, early_stop, seed = case
    x0, y0 = x.clone(), y.clone()
    res = attack.run(model, x, y, eps, norm, early_stop=early_stop, rng=rng(seed, len(x)))
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == x.dtype
    size = norm.measure(res.x_adv - x)
    assert (size <= eps + TOL).all(), (size, eps)
    assert (res.x_adv >= 0).all() and (res.x_adv <= 1).all()
    assert (res.x_adv[eps == 0] == x[eps == 0]).all(), "an eps = 0 row moved"
    assert torch.equal(x, x0) and torch.equal(y, y0), "the attack modified its inputs"
    if not early_stop:
        assert not res.fooled.any(), "without early_stop no row is reported fooled"


@PROPS
@given(attack_cases(early_stop=False))
def test_plain_call_returns_the_final_iterate_in_the_ball(case):
    model, x, y, eps, norm, attack, _, seed = case
    x_adv = attack(model, x, y, eps, norm, rng=rng(seed, len(x)))
    assert (norm.measure(x_adv - x) <= eps + TOL).all()
    assert (x_adv >= 0).all() and (x_adv <= 1).all()


@PROPS
@given(
    seed=st.integers(0, 2**16),
    name=plain_names,
    norm_name=norm_names,
    training=st.booleans(),
    early_stop=st.booleans(),
    frozen_first=st.booleans(),
)
def test_model_mode_and_parameter_flags_are_restored(seed, name, norm_name, training, early_stop, frozen_first):
    model = make_model("dropout", seed)
    model.train(training)
    if frozen_first:  # a partly frozen model: its mixed flags must come back as they were
        for p in model[1].parameters():
            p.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    before = [p.detach().clone() for p in model.parameters()]
    x, y = make_data(6, seed + 1)
    eps = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.05, 0.0]) * (1 if norm_name == "linf" else 5)
    attack = build_attack(name, steps=3)

    runs = []
    for _ in range(2):
        if early_stop:
            runs.append(attack.run(model, x, y, eps, NORMS[norm_name], rng=rng(seed, len(x))).x_adv)
        else:
            runs.append(attack(model, x, y, eps, NORMS[norm_name], rng=rng(seed, len(x))))
        assert model.training is training
        assert all(m.training is training for m in model.modules())
        assert [p.requires_grad for p in model.parameters()] == flags
        assert all(p.grad is None for p in model.parameters())
    # Dropout is off inside the attack (eval mode), so the same seed gives the same result.
    assert torch.equal(runs[0], runs[1])
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())), "the attack changed the weights"


def test_restarts_need_early_stop():
    model = make_model("linear", 0)
    x, y = make_data(2, 1)
    with pytest.raises(ValueError, match="restarts"):
        attacks.make("pgd", restarts=2).run(model, x, y, 0.1, Linf, early_stop=False)


def test_model_mode_restored_after_an_error():
    model = make_model("dropout", 0).train()
    x, y = make_data(3, 1)
    y[0] = N_CLASSES + 3  # an invalid label: cross_entropy raises inside the attack loop
    with pytest.raises(Exception):
        attacks.make("bim", steps=2)(model, x, y, torch.full((3,), 0.1), Linf)
    assert model.training
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


# --------------------------------------------------------------------------------------------
# Norms


@st.composite
def deltas_and_eps(draw):
    seed = draw(st.integers(0, 2**16))
    n = draw(st.integers(1, 8))
    norm_name = draw(norm_names)
    scale = draw(st.sampled_from([1e-3, 0.1, 1.0, 10.0]))
    g = torch.Generator().manual_seed(seed)
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    delta = torch.randn((n, *SHAPE), generator=g, dtype=dtype) * scale
    if draw(st.booleans()):
        delta[0] = 0  # a zero perturbation must stay zero (no division by its norm)
    eps = torch.tensor(draw(eps_rows(norm_name, n)), dtype=dtype)
    return NORMS[norm_name], delta, eps, seed


@PROPS
@given(deltas_and_eps())
def test_project_lands_in_the_ball_and_is_idempotent(case):
    norm, delta, eps, _ = case
    out = norm.project(delta, eps)
    assert out.shape == delta.shape and out.dtype == delta.dtype
    assert torch.isfinite(out).all()
    assert (norm.measure(out) <= eps * (1 + 1e-6) + 1e-7).all()
    again = norm.project(out, eps)
    torch.testing.assert_close(again, out, rtol=1e-6, atol=1e-7)
    inside = norm.measure(delta) <= eps
    assert torch.equal(out[inside], delta[inside]), "a perturbation already in the ball was changed"
    # Projection never makes a perturbation larger.
    assert (norm.measure(out) <= norm.measure(delta) * (1 + 1e-6) + 1e-7).all()


@PROPS
@given(deltas_and_eps())
def test_random_start_lies_in_the_ball(case):
    norm, delta, eps, seed = case
    start = norm.random_start(rng(seed, len(delta)), delta.shape[1:], eps)
    assert start.shape == delta.shape and start.dtype == eps.dtype
    assert (norm.measure(start) <= eps * (1 + 1e-6) + 1e-7).all()
    assert (start[eps == 0] == 0).all()
    unit = norm.unit_ball_sample(rng(seed, len(delta)), delta.shape[1:], dtype=delta.dtype)
    assert (norm.measure(unit) <= 1 + 1e-6).all()


def _radius_cdf_gap(shape, n_seed=0):
    radii = L2.measure(L2.unit_ball_sample(rng(n_seed, shape[0]), shape[1:], dtype=torch.float64))
    d = math.prod(shape[1:])
    r = torch.linspace(0.05, 1.0, 20, dtype=torch.float64)
    empirical = (radii[:, None] < r[None, :]).double().mean(0)
    return (empirical - r**d).abs().max().item(), radii


def test_l2_unit_ball_sample_is_uniform_in_the_ball_d2():
    # Uniform in the 2-d disc: P(radius < r) = r**2. A uniform-radius sampler gives r instead
    # (0.25 off at r = 0.5), a sphere sampler puts every radius at 1.
    gap, radii = _radius_cdf_gap((4000, 2))
    assert (radii <= 1 + 1e-12).all()
    assert gap < 0.03, f"radius CDF is {gap:.3f} away from r**2"
    assert abs((radii < 0.5).double().mean().item() - 0.25) < 0.03
    assert radii.std() > 0.1, "radii concentrated at a single value"


def test_l2_unit_ball_sample_is_uniform_in_the_ball_image_shaped():
    # For an image-shaped batch the dimension is the per-sample numel (here 1x2x2 = 4).
    gap, radii = _radius_cdf_gap((4000, 1, 2, 2))
    assert gap < 0.03, f"radius CDF is {gap:.3f} away from r**4"
    assert abs((radii < 0.5).double().mean().item() - 0.5**4) < 0.02
    # And in d = 36 (the test images) almost all the mass sits near the sphere, yet inside it.
    radii36 = L2.measure(L2.unit_ball_sample(rng(1, 2000), SHAPE))
    assert (radii36 <= 1 + 1e-6).all() and (radii36 < 0.5).float().mean() < 0.01
    assert radii36.min() < radii36.max()


def test_l2_unit_ball_directions_are_isotropic():
    u = L2.unit_ball_sample(rng(2, 4000), (2,), dtype=torch.float64)
    angle = torch.atan2(u[:, 1], u[:, 0])
    counts = torch.histc(angle, bins=8, min=-math.pi, max=math.pi)
    assert (counts - 500).abs().max() < 100, counts


def test_linf_unit_ball_sample_fills_the_cube():
    u = Linf.unit_ball_sample(rng(3, 4000), (2,), dtype=torch.float64)
    assert (u.abs() <= 1).all()
    for t in (-0.5, 0.0, 0.5):
        assert abs((u < t).double().mean().item() - (t + 1) / 2) < 0.03


# --------------------------------------------------------------------------------------------
# Early stop and the eps ladder


WIDE_GRID = {"linf": [0.002, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4], "l2": [0.01, 0.1, 0.3, 0.6, 1.2, 2.5]}


@st.composite
def ladder_cases(draw, kinds=model_kinds, min_levels=1):
    """A model, points, an ascending eps grid, and the rows attack_grid would build from them."""
    seed = draw(st.integers(0, 2**16))
    p = draw(st.integers(1, 8))
    norm_name = draw(norm_names)
    name = draw(attack_names)
    restarts = draw(st.integers(1, 3)) if name in ("pgd", "apgd-ce", "fab-t", "fmn", "fmn-t", "square") else 1
    steps = draw(st.integers(1, 6))
    kind = draw(kinds)
    grid = sorted(draw(st.lists(st.sampled_from(WIDE_GRID[norm_name]), min_size=min_levels, max_size=5, unique=True)))
    model = make_model(kind, seed, torch.float64)
    x, y = make_data(p, seed + 1, torch.float64)
    if draw(st.integers(0, 3)):  # mostly like the evaluator: points the model classifies correctly
        with torch.no_grad():
            y = model.eval()(x).argmax(1)
    return model, x, y, grid, NORMS[norm_name], build_attack(name, steps, restarts), seed


@settings(PROPS, max_examples=40)
@given(st.one_of(ladder_cases(), ladder_cases(kinds=st.just("wiggly"), min_levels=2)))
def test_early_stop_fooled_rows_are_misclassified_at_their_adversarial(case):
    """Every row reported fooled carries an x_adv the model really misclassifies, inside its
    own ball: also the rows that inherit a success from a smaller eps of the same point (the
    wiggly model, whose logits oscillate, makes a larger step overshoot where a smaller one
    lands: the larger-eps row is then fooled only through the ladder)."""
    model, x, y, grid, norm, attack, seed = case
    eps = torch.tensor(grid, dtype=x.dtype).expand(len(y), len(grid))
    res = attack.run(model, x, y, eps, norm, rng=rng(seed, len(x)), max_rows=3)
    assert res.fooled.shape == eps.shape
    dist = norm.measure(res.x_adv - x)
    assert (res.x_adv >= 0).all() and (res.x_adv <= 1).all()
    assert (dist[:, None] <= eps + TOL)[res.fooled].all()
    with torch.no_grad():
        wrong = model.eval()(res.x_adv).argmax(1) != y
    bad = res.fooled.any(1) & ~wrong
    assert not bad.any(), f"points {bad.nonzero().squeeze(1).tolist()} reported fooled but classified correctly at x_adv"


@PROPS
@given(attack_cases(early_stop=True))
def test_early_stop_without_groups_reports_only_true_misclassifications(case):
    model, x, y, eps, norm, attack, _, seed = case
    x, eps, model = x.double(), eps.double(), model.double()
    res = attack.run(model, x, y, eps, norm, rng=rng(seed, len(x)))
    with torch.no_grad():
        wrong = model.eval()(res.x_adv).argmax(1) != y
    assert not (res.fooled & ~wrong).any()
    assert (norm.measure(res.x_adv - x) <= eps + TOL).all()


@PROPS
@given(ladder_cases(), st.integers(1, 40))
def test_attack_grid_ladder_is_monotone_in_eps(case, batch_rows):
    model, x, y, grid, norm, attack, seed = case
    fooled, deltas, _ = attack_grid(model, x, y, grid, norm, attack, rng(seed, len(y)), batch_rows=batch_rows)
    assert fooled.shape == (len(y), len(grid)) and fooled.dtype == torch.bool
    for i in range(len(grid)):
        for j in range(i + 1, len(grid)):
            assert (fooled[:, j] | ~fooled[:, i]).all(), f"fooled at eps={grid[i]} but not at eps={grid[j]}"
    for j, e in enumerate(grid):
        assert (deltas[norm.name][fooled[:, j]] <= e + TOL).all()
    assert (deltas["linf"] <= deltas["l2"] + TOL).all()


def test_ladder_inherited_row_keeps_the_smaller_eps_adversarial():
    """A deterministic case where a larger FGSM step overshoots the misclassified region.

    1-pixel input at 0.5, class 1 wins only for x in (0.55, 0.6). FGSM at eps = 0.07 lands at
    0.57 (fooled); at eps = 0.2 it lands at 0.7 (classified correctly). The eps = 0.2 row is
    fooled through the ladder, so its x_adv must be the 0.57 adversarial, inside its ball."""

    class Bump(nn.Module):
        def __init__(self):
            super().__init__()
            self.centre = nn.Parameter(torch.tensor(0.575, dtype=torch.float64))

        def forward(self, x):
            v = x.flatten(1)[:, 0]
            return torch.stack([torch.zeros_like(v), 1 - 40 * (v - self.centre).abs()], dim=1)

    model = Bump()
    x = torch.full((1, 1, 1, 1), 0.5, dtype=torch.float64)
    y = torch.zeros(1, dtype=torch.long)
    grid = [0.07, 0.2]
    fgsm = attacks.make("fgsm")
    # Each eps on its own: the small one fools, the large one overshoots.
    alone = attack_each_eps_separately(model, x, y, grid, Linf, fgsm, seed=0)
    assert alone.tolist() == [[True, False]]

    res = fgsm.run(model, x, y, torch.tensor([grid], dtype=torch.float64), Linf)
    assert res.fooled.tolist() == [[True, True]]
    with torch.no_grad():
        assert (model(res.x_adv).argmax(1) != y).all(), f"x_adv = {res.x_adv.flatten().tolist()}"
    fooled, deltas, _ = attack_grid(model, x, y, grid, Linf, fgsm, rng(0, len(y)))
    assert fooled.tolist() == [[True, True]]
    torch.testing.assert_close(deltas["linf"][0], torch.tensor(0.07, dtype=torch.float64))


# --------------------------------------------------------------------------------------------
# Never weaker than separate runs per eps


def _never_weaker_setup():
    torch.manual_seed(0)  # only for determinism of anything unseeded below
    g = torch.Generator().manual_seed(1234)
    x = torch.rand((400, *SHAPE), generator=g, dtype=torch.float64)
    # Labels from a random linear teacher on centred inputs, so every class occurs.
    w_teacher = torch.randn((D, N_CLASSES), generator=g, dtype=torch.float64)
    y = ((x.flatten(1) - 0.5) @ w_teacher).argmax(1)
    model = make_model("linear", 8, torch.float64)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    for p in model.parameters():
        p.grad = None
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    # Like the evaluator: only points the model classifies correctly are attacked.
    return model, x[correct][:200], y[correct][:200]


GRIDS = {"linf": [0.005, 0.01, 0.02, 0.035, 0.05, 0.08], "l2": [0.05, 0.1, 0.2, 0.3, 0.5, 0.8]}


@pytest.fixture(scope="module")
def never_weaker_setup():
    return _never_weaker_setup()


@pytest.mark.parametrize("norm_name", ["linf", "l2"])
@pytest.mark.parametrize("name", ["fgsm", "bim", "pgd"])
def test_attack_grid_never_weaker_than_separate_runs(never_weaker_setup, name, norm_name):
    model, x, y = never_weaker_setup
    assert len(y) >= 150
    grid, norm = GRIDS[norm_name], NORMS[norm_name]
    attack = build_attack(name, steps=10)
    batched, _, _ = attack_grid(model, x, y, grid, norm, attack, rng(0, len(y)), batch_rows=10**6)
    separate = attack_each_eps_separately(model, x, y, grid, norm, attack, seed=0)  # same random starts
    assert batched.shape == separate.shape == (len(y), len(grid))
    # Not a trivial setting: at a middle eps some, but not all, points are fooled.
    mid = len(grid) // 2
    frac = separate[:, mid].float().mean().item()
    assert 0 < frac < 1, f"fooled fraction {frac} at eps={grid[mid]}"
    for j, e in enumerate(grid):
        missed = separate[:, j] & ~batched[:, j]
        assert not missed.any(), f"{name}/{norm_name} eps={e}: points {missed.nonzero().squeeze(1).tolist()} fooled separately but not by attack_grid"
        robust_batched = 1 - batched[:, j].float().mean()
        robust_separate = 1 - separate[:, j].float().mean()
        assert robust_batched <= robust_separate
