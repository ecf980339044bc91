"""Robustness at a per-class eps (the robustness evaluator's `per_class_eps`), on small models:
deterministic and MC-dropout, every point at its class's suggested radius."""

from __future__ import annotations

import pytest
import torch

from analysis.load import read_artifact
from study import models
from study.evaluators import EvalContext, distances, robustness
from study.spec.constraints import NormAxes
from study.evaluators.robustness import PerClassEps
from study.evaluators.robustness import Options as RobustnessEval


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = (torch.rand(n, 1, 6, 6, generator=g) * 0.5 + y.view(-1, 1, 1, 1) * 0.2).clamp(0, 1)
    return x, y


@pytest.mark.parametrize("model_name", ["logreg", "mc-mlp"])
def test_per_class_rows_and_artifact(model_name, tmp_path):
    torch.manual_seed(0)
    model = models.build(model_name, (1, 6, 6), 3).eval()
    x_train, y_train = _data(60, 0)
    x, y = _data(30, 1)
    ctx = EvalContext(model=model, x=x, y=y, seed=0, x_train=x_train, y_train=y_train, trial_id="t", results_uri=str(tmp_path))
    axes = RobustnessEval(
        evaluator="robustness", attacks=["fgsm", {"name": "pgd", "steps": 3}], norms={"l2": NormAxes(eps=[0, 0.5])}, eot_samples=2,
        per_class_eps=PerClassEps(quantiles=[0.2, 0.8], fraction=0.5, per_class=10),
    )
    rows = robustness.evaluate(ctx, axes)
    assert len(rows) == axes.n_rows()
    ruled = [r for r in rows if r.get("eps_rule")]
    assert len(ruled) == 2 * 2 * 3  # quantiles x rules x (fgsm, pgd, worst)
    suggested = distances.class_eps(x_train, y_train, 3, "l2", 10, [0.2, 0.8], 0.5, seed=0)
    art = read_artifact(str(tmp_path), "class_eps_robustness")
    for qi, q in enumerate([0.2, 0.8]):
        mean_eps = suggested[qi][y].mean().item()
        for rule, column in (("per-class", "acc_per_class"), ("uniform", "acc_uniform")):
            worst = next(r for r in ruled if r["eps_quantile"] == q and r["eps_rule"] == rule and r["attack"] == "worst")
            assert worst["eps"] == pytest.approx(mean_eps)
            per_class = art.filter((art["quantile"] == q) & (art["attack"] == "worst")).sort("class")
            assert per_class["eps"].to_list() == pytest.approx(suggested[qi].tolist())
            # Class accuracies, weighted by class size, give the row's accuracy.
            assert worst["robust_acc"] == pytest.approx((per_class[column] * per_class["n"]).sum() / per_class["n"].sum())
            # A point survives the worst case only if it survives every attack.
            others = [r["robust_acc"] for r in ruled if r["eps_quantile"] == q and r["eps_rule"] == rule and r["attack"] != "worst"]
            assert worst["robust_acc"] <= min(others)
