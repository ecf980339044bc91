"""Tests of APGD (study.attacks.apgd): the published step-size schedule and the DLR loss by hand,
the threat-model invariants on tiny seeded models (as tests/test_attacks.py checks the gradient
attacks), and its strength against PGD-100 on the trained standard CNN of the numbers sweep."""

from __future__ import annotations

import math
import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from study import attacks
from study.attacks.apgd import APGD, APGD_ATTACKS, apgd_ce, apgd_dlr, checkpoints, dlr_loss
from study.norms import L2, NORMS, Linf
from study.rng import PointRNG

SHAPE = (1, 6, 6)
D = math.prod(SHAPE)
N_CLASSES = 5
EPS_MAX = {"linf": 0.4, "l2": 3.0}
TOL = 1e-9  # float64 throughout the invariant tests

PROPS = settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------------------------
# The schedule and the loss, by hand


def test_checkpoints_for_100_iterations_are_the_published_ones():
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06):
    # 0, .22, .41, .57, .70, .80, .87, .93, .99 (then 1.05 > 1): w_j = ceil(100 p_j).
    assert checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]


def test_checkpoints_for_other_lengths():
    # The same fractions times 1000, and times 10 rounded up: 2.2, 4.1, 5.7, 7, 8, 8.7, 9.3, 9.9.
    assert checkpoints(1000) == [0, 220, 410, 570, 700, 800, 870, 930, 990]
    assert checkpoints(10) == [0, 3, 5, 6, 7, 8, 9, 10]
    assert checkpoints(1) == [0, 1]
    assert checkpoints(0) == [0]
    for n in range(1, 300):
        ws = checkpoints(n)
        assert ws[0] == 0 and ws == sorted(set(ws)) and ws[-1] <= n
        assert all(isinstance(w, int) for w in ws)


def test_dlr_loss_matches_the_formula():
    z = torch.tensor([[3.0, 1.0, 2.0, 0.5], [3.0, 1.0, 2.0, 0.5], [3.0, 1.0, 2.0, 0.5], [0.0, 4.0, 4.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([0, 2, 3, 1])
    # Sorted descending: 3, 2, 1 (z_pi1 - z_pi3 = 2) for the first three rows; 4, 4, 1 for the last.
    # y = 0: -(3 - 2) / 2;  y = 2: -(2 - 3) / 2;  y = 3: -(0.5 - 3) / 2;  a tie at the top: -(4 - 4) / 3.
    expected = torch.tensor([-0.5, 0.5, 1.25, 0.0], dtype=torch.float64)
    torch.testing.assert_close(dlr_loss(z, y), expected, rtol=0, atol=1e-9)
    # Invariant to shifting and (positively) scaling the logits.
    torch.testing.assert_close(dlr_loss(7.0 * z - 3.0, y), expected, rtol=0, atol=1e-9)


def test_dlr_needs_three_classes():
    with pytest.raises(ValueError, match="apgd-dlr needs at least 3 classes"):
        dlr_loss(torch.zeros(2, 2), torch.tensor([0, 1]))
    model = nn.Sequential(nn.Flatten(), nn.Linear(D, 2)).double().train()
    x, _ = make_data(3, 0)
    with pytest.raises(ValueError, match="apgd-dlr needs at least 3 classes"):
        apgd_dlr(steps=3).run(model, x, torch.tensor([0, 1, 0]), 0.1, Linf)
    assert model.training and all(p.requires_grad for p in model.parameters())
    # Cross-entropy has no such limit.
    apgd_ce(steps=3).run(model, x, torch.tensor([0, 1, 0]), 0.1, Linf)


def test_factories_and_defaults():
    # The published settings: 100 iterations, eta starting at 2 eps, one start; APGD-T targets
    # the 9 most likely other classes (AutoAttack's standard version).
    assert set(APGD_ATTACKS) == {"apgd-ce", "apgd-dlr", "apgd-t"}
    ce, dlr, t = APGD_ATTACKS["apgd-ce"](), APGD_ATTACKS["apgd-dlr"](), APGD_ATTACKS["apgd-t"]()
    assert (ce.name, ce.loss, ce.steps, ce.step_size, ce.restarts, ce.targets) == ("apgd-ce", "ce", 100, 2.0, 1, None)
    assert (dlr.name, dlr.loss, dlr.steps, dlr.step_size, dlr.restarts) == ("apgd-dlr", "dlr", 100, 2.0, 1)
    assert (t.name, t.loss, t.steps, t.step_size, t.restarts, t.targets) == ("apgd-t", "dlr-targeted", 100, 2.0, 1, 9)
    assert (ce.rho, ce.momentum) == (0.75, 0.75)
    assert apgd_ce(steps=20, step_size=1.0, restarts=3) == APGD("apgd-ce", "ce", 20, 1.0, 3)
    # Through the registry a spec's options reach the attack, and only its own options.
    assert attacks.make("apgd-t", targets=3).targets == 3
    with pytest.raises(attacks.OptionError, match="targets: apgd-ce takes no targets"):
        attacks.make("apgd-ce", targets=3)


def test_step_halving_homes_in_on_an_interior_maximum():
    """One pixel at 0.5, Linf eps 0.4, and a cross-entropy that peaks inside the ball (at 0.6)
    without ever misclassifying. Sign steps of a fixed 2 * eps bounce between the ball's ends
    (0.1 and 0.9); the halvings at the checkpoints must bring the best iterate close to 0.6."""

    class Bump(nn.Module):
        def forward(self, x):
            v = x.flatten(1)[:, :1]
            return torch.cat([torch.zeros_like(v), -1 - 10 * (v - 0.6) ** 2], dim=1)

    x = torch.full((4, 1, 1, 1), 0.5, dtype=torch.float64)
    y = torch.zeros(4, dtype=torch.long)
    for steps in (100, 200):
        x_best = apgd_ce(steps=steps)(Bump(), x, y, 0.4, Linf, rng=PointRNG.for_points(0, len(x)))
        assert ((x_best - 0.6).abs() < 0.01).all(), (steps, x_best.flatten().tolist())


# --------------------------------------------------------------------------------------------
# Invariants on tiny models (float64)


def make_model(kind: str, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind == "linear":
            m = nn.Sequential(nn.Flatten(), nn.Linear(D, N_CLASSES))
        else:
            m = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * D, N_CLASSES))
    return m.double()


def make_data(n: int, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *SHAPE), generator=g, dtype=dtype)
    y = torch.randint(0, N_CLASSES, (n,), generator=g)
    return x, y


@st.composite
def cases(draw, early_stop=None):
    """(model, x, y, eps (N,), norm, attack, early_stop, seed, max_rows), eps with exact zeros."""
    seed = draw(st.integers(0, 2**16))
    n = draw(st.integers(1, 8))
    norm_name = draw(st.sampled_from(sorted(NORMS)))
    early = draw(st.booleans()) if early_stop is None else early_stop
    factory = draw(st.sampled_from([apgd_ce, apgd_dlr]))
    attack = factory(steps=draw(st.integers(0, 25)), restarts=draw(st.integers(1, 3)) if early else 1)
    model = make_model(draw(st.sampled_from(["linear", "conv"])), seed)
    x, y = make_data(n, seed + 1)
    if draw(st.booleans()):  # like the evaluator: labels the model predicts
        with torch.no_grad():
            y = model(x).argmax(1)
    radii = st.one_of(st.just(0.0), st.floats(0.0, EPS_MAX[norm_name]))
    eps = torch.tensor(draw(st.lists(radii, min_size=n, max_size=n)), dtype=torch.float64)
    max_rows = draw(st.one_of(st.none(), st.integers(1, 4)))
    return model, x, y, eps, NORMS[norm_name], attack, early, seed, max_rows


@PROPS
@given(cases())
def test_adversarials_lie_in_the_ball_and_the_box(case):
    model, x, y, eps, norm, attack, early_stop, seed, max_rows = case
    x0, y0 = x.clone(), y.clone()
    res = attack.run(model, x, y, eps, norm, early_stop=early_stop, rng=PointRNG.for_points(seed, len(x)), max_rows=max_rows)
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == x.dtype
    assert res.fooled.shape == eps.shape and res.fooled.dtype == torch.bool
    assert (norm.measure(res.x_adv - x) <= eps + TOL).all()
    assert (res.x_adv >= 0).all() and (res.x_adv <= 1).all()
    assert torch.equal(res.x_adv[eps == 0], x[eps == 0]), "an eps = 0 row moved"
    assert torch.equal(x, x0) and torch.equal(y, y0), "the attack modified its inputs"
    with torch.no_grad():
        wrong = model(res.x_adv).argmax(1) != y
    assert not (res.fooled & ~wrong).any(), "a row reported fooled is classified correctly at its x_adv"
    if not early_stop:
        assert not res.fooled.any(), "without early_stop no row is reported fooled"


@PROPS
@given(cases(early_stop=False))
def test_plain_call_returns_the_best_iterate_in_the_ball(case):
    model, x, y, eps, norm, attack, _, seed, _ = case
    x_adv = attack(model, x, y, eps, norm, rng=PointRNG.for_points(seed, len(x)))
    assert (norm.measure(x_adv - x) <= eps + TOL).all()
    assert (x_adv >= 0).all() and (x_adv <= 1).all()
    assert torch.equal(x_adv[eps == 0], x[eps == 0])
    # The best-loss iterate: never below the loss at the random start (the same generator seed
    # gives the same start; with 0 steps the start is what comes back).
    start = APGD(attack.name, attack.loss, steps=0)(model, x, y, eps, norm, rng=PointRNG.for_points(seed, len(x)))
    assert (norm.measure(start - x) <= eps + TOL).all()
    loss_fn = (lambda z, t: nn.functional.cross_entropy(z, t, reduction="none")) if attack.loss == "ce" else dlr_loss
    with torch.no_grad():
        gain = loss_fn(model(x_adv), y) - loss_fn(model(start), y)
    assert (gain >= 0).all(), gain


def test_restarts_and_ladders_need_early_stop():
    model = make_model("linear", 0)
    x, y = make_data(2, 1)
    with pytest.raises(ValueError, match="restarts > 1 and eps ladders need early_stop"):
        apgd_ce(restarts=2).run(model, x, y, 0.1, Linf, early_stop=False)
    with pytest.raises(ValueError, match="restarts > 1 and eps ladders need early_stop"):
        apgd_dlr().run(model, x, y, torch.tensor([[0.1, 0.2]] * 2, dtype=torch.float64), Linf, early_stop=False)


@pytest.mark.parametrize("norm", [Linf, L2])
def test_float32_and_scalar_eps(norm):
    model = make_model("conv", 3).float()
    x, _ = make_data(5, 4, torch.float32)
    with torch.no_grad():
        y = model(x).argmax(1)
    e = 0.2 if norm is Linf else 1.5
    res = apgd_dlr(steps=10, restarts=2).run(model, x, y, e, norm, rng=PointRNG.for_points(0, len(x)))
    assert res.x_adv.dtype == torch.float32 and res.fooled.shape == (5,)
    assert (norm.measure(res.x_adv - x) <= e + 1e-5).all()
    assert (res.x_adv >= 0).all() and (res.x_adv <= 1).all()
    with torch.no_grad():
        assert (model(res.x_adv).argmax(1) != y)[res.fooled].all()


WIDE_GRID = {"linf": [0.002, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4], "l2": [0.01, 0.1, 0.3, 0.6, 1.2, 2.5]}


@st.composite
def ladder_cases(draw):
    seed = draw(st.integers(0, 2**16))
    n = draw(st.integers(1, 8))
    norm_name = draw(st.sampled_from(sorted(NORMS)))
    grid = sorted(draw(st.lists(st.sampled_from(WIDE_GRID[norm_name]), min_size=1, max_size=5, unique=True)))
    ladder = draw(st.sampled_from(["bottom-up", "top-down"]))
    attack = draw(st.sampled_from([apgd_ce, apgd_dlr]))(steps=draw(st.integers(1, 25)), restarts=draw(st.integers(1, 2)), ladder=ladder)
    model = make_model(draw(st.sampled_from(["linear", "conv"])), seed)
    x, _ = make_data(n, seed + 1)
    with torch.no_grad():
        y = model(x).argmax(1)
    eps = torch.tensor(grid, dtype=torch.float64).expand(n, len(grid))
    if draw(st.booleans()):  # a row of zeros: that point stays put
        eps = eps.clone()
        eps[0] = 0
    return model, x, y, eps, NORMS[norm_name], attack, seed, draw(st.one_of(st.none(), st.integers(1, 3)))


@PROPS
@given(ladder_cases())
def test_ladder_fooled_is_monotone_and_true(case):
    model, x, y, eps, norm, attack, seed, max_rows = case
    res = attack.run(model, x, y, eps, norm, rng=PointRNG.for_points(seed, len(x)), max_rows=max_rows)
    assert res.fooled.shape == eps.shape and res.fooled.dtype == torch.bool
    for j in range(1, eps.shape[1]):
        assert (res.fooled[:, j] | ~res.fooled[:, j - 1]).all(), "fooled at a smaller eps but not at a larger one"
    dist = norm.measure(res.x_adv - x)
    assert (dist[:, None] <= eps + TOL)[res.fooled].all(), "a fooled level whose ball does not hold x_adv"
    assert (dist <= eps[:, -1] + TOL).all() and (res.x_adv >= 0).all() and (res.x_adv <= 1).all()
    with torch.no_grad():
        wrong = model(res.x_adv).argmax(1) != y
    assert not (res.fooled.any(1) & ~wrong).any()
    zero = eps[:, -1] == 0
    assert torch.equal(res.x_adv[zero], x[zero])


@pytest.mark.parametrize("norm_name", ["linf", "l2"])
@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_ladder_is_never_weaker_than_separate_runs_and_chunking_does_not_matter(norm_name, loss):
    """A level of the ladder runs each surviving point from the same start as a separate run at
    that eps (the starts are drawn up front per point and restart), so the ladder fools at least
    what separate runs fool; and chunks (max_rows) do not change a point's trajectory."""
    norm = NORMS[norm_name]
    model = make_model("conv", 11)
    x, _ = make_data(40, 12)
    with torch.no_grad():
        y = model(x).argmax(1)
    grid = [0.01, 0.03, 0.06, 0.1] if norm_name == "linf" else [0.05, 0.15, 0.3, 0.5]
    attack = APGD_ATTACKS[f"apgd-{loss}"](steps=15, restarts=2)
    eps = torch.tensor(grid, dtype=torch.float64).expand(len(y), len(grid))
    ladder = attack.run(model, x, y, eps, norm, rng=PointRNG.for_points(5, len(x)))
    chunked = attack.run(model, x, y, eps, norm, rng=PointRNG.for_points(5, len(x)), max_rows=7)
    assert torch.equal(ladder.fooled, chunked.fooled)
    torch.testing.assert_close(ladder.x_adv, chunked.x_adv)
    for j, e in enumerate(grid):
        alone = attack.run(model, x, y, e, norm, rng=PointRNG.for_points(5, len(x))).fooled
        assert (ladder.fooled[:, j] | ~alone).all(), f"a separate run at eps={e} fools a point the ladder misses"
    assert ladder.fooled[:, -1].any() and not ladder.fooled[:, 0].all(), "the grid should straddle the points' margins"


class Counted(nn.Module):
    """The model, counting the rows it is run on."""

    def __init__(self, model):
        super().__init__()
        self.model, self.rows = model, 0

    def forward(self, x):
        self.rows += len(x)
        return self.model(x)


def descent(attack, model, x, y, grid, norm, seed, levels):
    """Top-down by hand, from separate fixed-eps runs: each point starts at its top level (of
    ``levels``); a break at distance d counts at every level with eps >= d and sends the point on
    to the highest level below that it does not cover; a failure ends its ladder."""
    alone = [attack.run(model, x, y, e, norm, rng=PointRNG.for_points(seed, len(x))) for e in grid]
    fooled = torch.zeros(len(y), len(grid), dtype=torch.bool)
    for p in range(len(y)):
        level = int(levels[p]) - 1
        while level >= 0 and alone[level].fooled[p]:
            dist = norm.measure(alone[level].x_adv[p : p + 1] - x[p : p + 1])[0]
            fooled[p] |= (torch.arange(len(grid)) >= level) | (torch.tensor(grid, dtype=x.dtype) >= dist)
            below = (~fooled[p, :level]).nonzero()
            level = int(below.max()) if len(below) else -1
    return fooled


@pytest.mark.parametrize("norm_name", ["linf", "l2"])
@pytest.mark.parametrize("name", ["apgd-ce", "apgd-t"])
def test_a_top_down_ladder_is_the_descent_of_separate_runs(norm_name, name):
    """``ladder: top-down`` attacks a point at its largest eps first and at a smaller one only
    where that broke it: exactly the descent built from separate runs at each eps, whatever the
    chunking and the cascade's levels; it runs the model on fewer rows than bottom-up when most
    points survive the top."""
    norm = NORMS[norm_name]
    model = make_model("conv", 11)
    x, _ = make_data(40, 12)
    with torch.no_grad():
        y = model(x).argmax(1)
    grid = [0.01, 0.02, 0.03, 0.06] if norm_name == "linf" else [0.05, 0.1, 0.15, 0.3]
    options = dict(steps=15, targets=3, screen=4, keep=1) if name == "apgd-t" else dict(steps=15, restarts=2)
    down = attacks.make(name, ladder="top-down", **options)
    eps = torch.tensor(grid, dtype=torch.float64).expand(len(y), len(grid))
    levels = torch.tensor([len(grid), 2, 1, 0] * 10)
    for lv in (None, levels):
        want = descent(down, model, x, y, grid, norm, 5, torch.full((len(y),), len(grid)) if lv is None else lv)
        for rows in (None, 7):
            got = down.run(model, x, y, eps, norm, rng=PointRNG.for_points(5, len(x)), max_rows=rows, levels=lv)
            assert torch.equal(got.fooled, want)
    # On points that survive the top, a top-down ladder pays for one level; bottom-up for each.
    robust = ~descent(down, model, x, y, grid, norm, 5, torch.full((len(y),), len(grid)))[:, -1]
    assert 5 < int(robust.sum()) < 35, "the grid should straddle the points' margins"
    cost = {}
    for ladder in ("bottom-up", "top-down"):
        counted = Counted(model)
        attacks.make(name, ladder=ladder, **options).run(counted, x[robust], y[robust], eps[robust], norm, rng=PointRNG.for_points(5, len(x))[robust.nonzero().squeeze(1)])
        cost[ladder] = counted.rows
    assert cost["top-down"] < 0.4 * cost["bottom-up"], cost


def test_the_ladder_option_is_checked_and_recorded():
    with pytest.raises(attacks.OptionError, match="^ladder: "):
        attacks.make("apgd-ce", ladder="sideways")
    assert "ladder" not in attacks.make("apgd-t").options()  # bottom-up keys are as they were
    assert attacks.make("apgd-t", ladder="top-down").options()["ladder"] == "top-down"


# --------------------------------------------------------------------------------------------
# Strength on real data: the numbers sweep's standard CNN


@pytest.mark.slow  # PGD-100 and both APGDs on 500 points; the fast tier keeps test_known_answers' absolute bounds
def test_apgd_is_at_least_as_strong_as_pgd_100_on_the_standard_cnn(standard_cnn):
    model, x_test, y_test = standard_cnn
    with torch.no_grad():
        correct = model(x_test).argmax(1) == y_test
    x, y = x_test[correct][:500], y_test[correct][:500]
    assert len(y) == 500
    eps = torch.tensor([0.1, 0.3], dtype=x.dtype).expand(len(y), 2)  # both radii in one ladder call
    acc, secs = {}, {}
    for name, attack in {"pgd": attacks.make("pgd", steps=100), "apgd-ce": apgd_ce(), "apgd-dlr": apgd_dlr()}.items():
        start = time.perf_counter()
        res = attack.run(model, x, y, eps, Linf, rng=PointRNG.for_points(0, len(x)), max_rows=256)
        secs[name] = time.perf_counter() - start
        with torch.no_grad():
            assert (model(res.x_adv).argmax(1) != y)[res.fooled.any(1)].all()
        assert (Linf.measure(res.x_adv - x)[:, None] <= eps + 1e-5)[res.fooled].all()
        acc[name] = (1 - res.fooled.float().mean(0)).tolist()
    print("robust accuracy at Linf 0.1, 0.3:", acc, "seconds:", secs)
    for j in range(2):
        assert acc["apgd-ce"][j] <= acc["pgd"][j], acc
    assert acc["apgd-dlr"][0] <= acc["pgd"][0] + 0.01, acc


def test_the_evaluator_runs_each_attack_at_its_own_settings():
    """The evaluator's shared `steps` used to run APGD for 10 iterations and a shared step size
    overrode its 2 eps schedule: each attack now has its own published defaults and options."""
    from study.evaluators import EvalContext, robustness
    from study.evaluators.robustness import Options as RobustnessEval

    model = make_model("linear", 0).float()
    x, _ = make_data(12, 1, torch.float32)
    with torch.no_grad():
        y = model(x).argmax(1)
    axes = RobustnessEval.model_validate({"evaluator": "robustness", "attacks": ["apgd-ce", {"name": "pgd", "steps": 20}, {"name": "apgd-t", "targets": 2}], "norms": {"linf": {"eps": [0.05]}}})
    ctx = EvalContext(model=model, x=x, y=y, seed=0, x_train=None, y_train=None, trial_id="t", results_uri="unused")
    rows = {r["attack"]: r for r in robustness.evaluate(ctx, axes)}
    assert (rows["apgd-ce"]["steps"], rows["apgd-ce"]["step_size"]) == (100, 2.0)
    assert rows["apgd-ce"]["attack_options"] == "apgd-ce(steps=100,step_size=2,restarts=1)"
    assert (rows["pgd"]["steps"], rows["pgd"]["step_size"]) == (20, 2.5 / 20)
    assert (rows["apgd-t"]["steps"], rows["apgd-t"]["targets"]) == (100, 2)
