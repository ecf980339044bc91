"""The AutoAttack ensemble: APGD-T's loss and targets, Square's schedule and probe, the cascade
across attacks, and the default evaluation against a model whose gradients are masked."""

from __future__ import annotations


import polars as pl
import pytest
import torch
from conftest import mnist_trained
from torch import nn

from analysis.evaluation import evaluation_warnings
from study import attacks, results
from study.attacks.apgd import ranked_targets, targeted_dlr_loss
from study.attacks.square import eta_pattern, square_fraction
from study.evaluators import EvalContext, robustness
from study.norms import L2, Linf
from study.rng import PointRNG
from study.evaluators.robustness import Options as RobustnessEval

N_EVAL = 200


class Scaled(nn.Module):
    """A model's logits times ``factor``: the same predictions, a saturated softmax."""

    def __init__(self, model: nn.Module, factor: float):
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, x):
        return self.model(x) * self.factor


@pytest.fixture(scope="module")
def mlp():
    """A small MLP on mnist-5k (about 95% clean) and its first 200 test images."""
    model, x, y = mnist_trained(lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10)), epochs=6, lr=2e-3, batch=64)
    return model, x[:N_EVAL], y[:N_EVAL]


def evaluate(model, x, y, **entry) -> list[dict]:
    axes = RobustnessEval.model_validate({"evaluator": "robustness", **entry})
    ctx = EvalContext(model=model, x=x, y=y, seed=0, x_train=None, y_train=None, trial_id="t", results_uri="unused")
    return robustness.evaluate(ctx, axes)


def by(rows, attack, norm, eps, key="robust_acc"):
    (row,) = [r for r in rows if (r["attack"], r["norm"], r["eps"]) == (attack, norm, eps)]
    return row[key]


# --------------------------------------------------------------------------------------------
# APGD-T and Square, by hand


def test_targeted_dlr_matches_the_formula():
    z = torch.tensor([[5.0, 3.0, 1.0, 0.0, -2.0], [0.0, 4.0, 2.0, 1.0, 1.0]], dtype=torch.float64)
    y, t = torch.tensor([0, 1]), torch.tensor([1, 2])
    # Sorted: 5, 3, 1, 0 -> denominator 5 - (1 + 0) / 2 = 4.5; and 4, 2, 1, 1 -> 4 - 1 = 3.
    expected = torch.tensor([-(5 - 3) / 4.5, -(4 - 2) / 3.0], dtype=torch.float64)
    torch.testing.assert_close(targeted_dlr_loss(z, y, t), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(targeted_dlr_loss(3 * z + 7, y, t), expected, rtol=0, atol=1e-12)  # shift and scale invariant
    with pytest.raises(ValueError, match="at least 4 classes"):
        targeted_dlr_loss(z[:, :3], y, t)


def test_apgd_t_targets_the_runner_up_classes_in_order():
    model = nn.Linear(3, 5, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[5.0, 0, 0], [1, 0, 0], [4, 0, 0], [2, 0, 0], [3, 0, 0]]))
    x = torch.tensor([[1.0, 0.0, 0.0]])
    assert ranked_targets(model, x, torch.tensor([0]), 3).tolist() == [[2, 4, 3]]


def test_square_schedule_is_the_published_one():
    # p_init halved after iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 (unscaled).
    got = [square_fraction(i, 0.8, 5000, rescale=False) for i in (0, 10, 11, 50, 51, 200, 201, 500, 501, 1000, 1001, 4999)]
    assert got == pytest.approx([0.8, 0.8, 0.4, 0.4, 0.2, 0.2, 0.1, 0.1, 0.05, 0.05, 0.025, 0.8 / 2**7])
    # Rescaled to a 1,000-query budget, iteration 100 is the 10,000-query schedule's 1,000th.
    assert square_fraction(100, 0.8, 1000, rescale=True) == pytest.approx(0.05)


@pytest.mark.parametrize("s", [1, 2, 3, 5, 8])
def test_the_l2_window_pattern(s):
    eta = eta_pattern(s, torch.float64)
    assert eta.shape == (s, s) and eta.norm().item() == pytest.approx(1.0)
    if s >= 2:  # one half positive, the other negative, each peaked at its centre
        top, bottom = eta[: s // 2], eta[s // 2 :]
        assert (top > 0).all() and (bottom < 0).all()
        assert top[s // 4 if s >= 4 else 0, s // 2] == top.max()


def test_square_counts_queries_and_keeps_to_the_ball(mlp):
    model, x, y = mlp
    with torch.no_grad():
        keep = model(x).argmax(1) == y
    x, y = x[keep][:40], y[keep][:40]
    for norm, eps in ((Linf, 0.15), (L2, 1.5)):
        res = attacks.make("square", queries=200).run(model, x, y, eps, norm, rng=PointRNG.for_points(0, len(y)))
        assert (norm.measure(res.x_adv - x) <= eps + 1e-5).all() and (res.x_adv >= 0).all() and (res.x_adv <= 1).all()
        assert ((res.queries >= 1) & (res.queries <= 201)).all()
        assert (res.queries[~res.fooled] == 201).all(), "a point it could not break had the whole budget"
        assert 0 < res.fooled.sum() < len(y)


@pytest.mark.parametrize("norm, grid", [(Linf, [0.1, 0.15]), (L2, [1.0, 1.5])], ids=["linf", "l2"])
def test_square_probe_escalates_to_exactly_the_full_search(mlp, norm, grid):
    """Where the probe breaks a point, the points it left robust get the full budget, and the
    result is the full search's, point by point; the probe's queries are not spent again (a
    probed search goes on from where the probe left it); where it breaks none, it stops there."""
    model, x, y = mlp
    with torch.no_grad():
        keep = model(x).argmax(1) == y
    x, y = x[keep][:40], y[keep][:40]
    rng = PointRNG.for_points(1, len(y))
    eps = torch.tensor(grid).expand(len(y), 2)
    full = attacks.make("square", queries=150).run(model, x, y, eps, norm, rng=rng)
    probed = attacks.make("square", queries=150, probe=20).run(model, x, y, eps, norm, rng=rng)
    assert torch.equal(full.fooled, probed.fooled) and full.fooled.any() and not full.fooled.all()
    assert torch.equal(full.x_adv, probed.x_adv)
    reached = full.queries[:, 1] > 0  # the full ladder searched these points at the top eps, where the probe did
    assert reached.any() and torch.equal(probed.queries[reached], full.queries[reached]), "a probed search started again"
    assert torch.equal(probed.queries[~reached, 0], full.queries[~reached, 0]) and (probed.queries[~reached, 1] <= 21).all()
    tiny = attacks.make("square", queries=150, probe=20).run(model, x, y, 1e-4, norm, rng=rng)
    assert not tiny.fooled.any() and (tiny.queries <= 21).all(), "with nothing broken the probe is all it spends"


def test_square_escalates_only_past_its_share_of_probed_points(mlp):
    """The probe's breaks always count; the full budget runs only when they reach ``escalate``
    of the points probed."""
    model, x, y = mlp
    with torch.no_grad():
        keep = model(x).argmax(1) == y
    x, y = x[keep][:40], y[keep][:40]
    rng = PointRNG.for_points(1, len(y))
    eps = torch.tensor([0.1, 0.15]).expand(len(y), 2)
    low = attacks.make("square", queries=150, probe=20, escalate=0.01).run(model, x, y, eps, Linf, rng=rng)
    high = attacks.make("square", queries=150, probe=20, escalate=1.0).run(model, x, y, eps, Linf, rng=rng)
    assert high.fooled[:, 1].any(), "the probe's breaks count without escalation"
    assert (high.queries <= 21).all() and (high.queries.sum() < low.queries.sum())
    assert (high.fooled <= low.fooled).all() and low.fooled.sum() > high.fooled.sum()


def test_screened_apgd_t_runs_the_targets_whose_short_runs_went_furthest(mlp):
    """With screen and keep, the full runs go to the most promising targets: never weaker than
    the clean top-``keep`` targets alone on this model, and at most every target's strength."""
    model, x, y = mlp
    with torch.no_grad():
        keep = model(x).argmax(1) == y
    x, y = x[keep][:60], y[keep][:60]
    rng = PointRNG.for_points(2, len(y))
    run = lambda **o: attacks.make("apgd-t", steps=20, **o).run(model, x, y, 0.08, Linf, rng=rng).fooled  # noqa: E731
    every, screened, top2 = run(targets=9), run(targets=9, screen=4, keep=2), run(targets=2)
    assert every.sum() >= screened.sum() >= top2.sum() > 0
    with pytest.raises(attacks.OptionError, match="^screen"):
        attacks.make("apgd-t", screen=4)
    with pytest.raises(attacks.OptionError, match="^keep"):
        attacks.make("apgd-t", screen=4, keep=10)


# --------------------------------------------------------------------------------------------
# The cascade


ENSEMBLE = [
    "fgsm",
    {"name": "pgd", "steps": 10},
    {"name": "apgd-ce", "steps": 20},
    {"name": "apgd-t", "steps": 20, "targets": 3},
    {"name": "fab-t", "steps": 20, "targets": 2},
    {"name": "square", "queries": 100},
]
NORMS = {"linf": {"eps": [0, 0.05, 0.1, 0.2]}, "l2": {"eps": [0, 0.5, 1.0, 2.0]}}


def test_the_cascade_gives_the_same_worst_case_and_logs_what_each_attack_adds(mlp):
    model, x, y = mlp
    alone = evaluate(model, x, y, attacks=ENSEMBLE, norms=NORMS, cascade=False)
    cascade = evaluate(model, x, y, attacks=ENSEMBLE, norms=NORMS, cascade=True)
    names = [a if isinstance(a, str) else a["name"] for a in ENSEMBLE]
    n_correct = round(alone[0]["clean_acc"] * N_EVAL)
    for norm, axes in NORMS.items():
        for eps in axes["eps"][1:]:
            worst = by(alone, "worst", norm, eps)
            assert by(cascade, "worst", norm, eps) == worst, (norm, eps)
            # Each attack alone is no stronger than the ensemble.
            assert all(by(alone, a, norm, eps) >= worst for a in names)
            # The cascade's log: each attack's new breaks sum to the ensemble's, its robust
            # accuracy is the ensemble's so far (falling), the last one's is `worst`.
            assert sum(by(cascade, a, norm, eps, "broken") for a in names) == by(cascade, "worst", norm, eps, "broken")
            so_far = [by(cascade, a, norm, eps) for a in names]
            assert so_far == sorted(so_far, reverse=True) and so_far[-1] == worst
            assert by(cascade, "worst", norm, eps, "broken") == n_correct - round(worst * N_EVAL)
    assert all(r["cascade"] for r in cascade) and not any(r["cascade"] for r in alone)
    assert {r["ensemble"] for r in cascade + alone} == {"+".join(names)}


def test_the_default_evaluation_sees_through_masked_gradients(mlp):
    """Logits times 1,000: the same predictions, and a softmax so saturated that cross-entropy's
    gradient vanishes. PGD and APGD-CE then report a robust model; the default ensemble (its
    targeted DLR loss is scale invariant, and Square needs no gradient) reports what the model
    really withstands, as on the unscaled model."""
    model, x, y = mlp
    masked = Scaled(model, 1000.0)
    norms = {"linf": {"eps": [0, 0.1]}}
    plain = evaluate(model, x, y, norms=norms)
    fooled_by_ce = evaluate(masked, x, y, attacks=[{"name": "pgd", "steps": 100}, "apgd-ce"], norms=norms)
    default = evaluate(masked, x, y, norms=norms)
    truth = by(plain, "worst", "linf", 0.1)
    assert truth < 0.5
    assert by(fooled_by_ce, "worst", "linf", 0.1) > truth + 0.3, "the scaled model should mask cross-entropy's gradients"
    assert by(default, "worst", "linf", 0.1) <= truth + 0.02
    on_margin = sum(by(default, a, "linf", 0.1, "broken") for a in ("fmn", "fmn-t", "apgd-t"))
    assert on_margin > by(default, "apgd-ce", "linf", 0.1, "broken")
    # The summary says so: cross-entropy's gradient vanishes (whatever the attacks), and in the
    # default cascade the DLR attack broke far more than cross-entropy. The unscaled model: nothing.
    signs = {name: evaluation_warnings(frame(rows)) for name, rows in (("ce", fooled_by_ce), ("default", default), ("plain", plain))}
    assert any("exactly 0" in w and "add apgd-t or square" in w for w in signs["ce"]), signs["ce"]
    assert any("scale-invariant attacks (DLR, FMN) broke" in w for w in signs["default"]), signs["default"]
    assert signs["plain"] == [], signs["plain"]
    # Masked, and evaluated without a minimal-norm attack: the summary recommends one, or the full
    # AutoAttack for a published figure; the default (it runs FMN) or a list with FAB-T is not told so.
    recommends = lambda lines: [w for w in lines if "`attacks: autoattack`" in w]  # noqa: E731
    assert "+fmn+fmn-t+" in default[0]["ensemble"]
    assert recommends(signs["default"]) == [] and len(recommends(signs["ce"])) == 1
    without = [{**r, "ensemble": r["ensemble"].replace("+fmn+fmn-t+", "+")} for r in default]
    assert len(recommends(evaluation_warnings(frame(without)))) == 1
    with_fab = [{**r, "ensemble": r["ensemble"].replace("+fmn+fmn-t+", "+fab-t+")} for r in default]
    assert recommends(evaluation_warnings(frame(with_fab))) == []
    assert any("scale-invariant attacks (DLR, FMN) broke" in w for w in evaluation_warnings(frame(with_fab)))


def frame(rows) -> pl.DataFrame:
    """The rows as results.parquet holds them (every column of the schema)."""
    return pl.from_arrow(results.to_table([{**r, "label": "model", "trial_id": "t"} for r in rows]))
