"""Trivial adversaries (the source text's condition (2)): known answers on images whose distances
are exact, and the bound it gives checked against a real attack."""

from __future__ import annotations

import pytest
import torch

from study.evaluators import EvalContext
from study.evaluators.trivial import Options, evaluate
from study.spec import SpecError, parse_spec


class MeanThreshold(torch.nn.Module):
    """Class 1 when the image's mean pixel exceeds 0.5, else class 0."""

    def forward(self, x):
        m = x.flatten(1).mean(1)
        return torch.stack([0.5 - m, m - 0.5], 1)


def flat(*values):
    """2 x 2 images of one grey level each: their Linf distance is the levels' difference, L2 twice it."""
    return torch.tensor(values, dtype=torch.float32)[:, None, None, None].expand(-1, 1, 2, 2).contiguous()


# Evaluation split: A 0.125 and B 0.25 (class 0, right), C 0.625 (class 0, called 1), D 0.875 (class 1,
# right), E 0.4375 (class 1, called 0). Training split: F 0.3125 (class 0, right), G 0.5625 (class 0, called 1).
X, Y = flat(0.125, 0.25, 0.625, 0.875, 0.4375), torch.tensor([0, 0, 0, 1, 1])
X_TRAIN, Y_TRAIN = flat(0.3125, 0.5625), torch.tensor([0, 0])
EPS = [0.0, 0.1875, 0.25, 0.3125, 0.375, 0.4375, 0.5, 1.0]


def rows(against, norms=None, tmp_path=None):
    ctx = EvalContext(model=MeanThreshold(), x=X, y=Y, seed=0, x_train=X_TRAIN, y_train=Y_TRAIN, trial_id="t", results_uri=str(tmp_path), n_classes=2)
    options = Options(evaluator="trivial", against=against, norms=norms or {"linf": {"eps": EPS}})
    return {(r["norm"], r["eps"]): r for r in evaluate(ctx, options)}


@pytest.mark.parametrize("against, trivial, near_same, near_other", [
    # The evaluation split alone. Correct points and their nearest same-class mistake: A-C 0.5,
    # B-C 0.375, D-E 0.4375. Mistakes and their nearest correct image of their class: C-B 0.375,
    # E-D 0.4375; of the other class: C-D 0.25, E-B 0.1875.
    ("test", [0, 0, 0, 0, 1, 2, 3, 3], [0, 0, 0, 0, 1, 2, 2, 2], [0, 1, 2, 2, 2, 2, 2, 2]),
    # The training split alone: its mistake G is 0.4375 from A and 0.3125 from B, its correct F
    # 0.3125 from C; nothing of class 1 is in it.
    ("train", [0, 0, 0, 1, 1, 2, 2, 2], [0, 0, 0, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1, 1, 1]),
    ("both", [0, 0, 0, 1, 1, 3, 3, 3], [0, 0, 0, 1, 1, 2, 2, 2], [0, 1, 2, 2, 2, 2, 2, 2]),
])
def test_known_answers(tmp_path, against, trivial, near_same, near_other):
    got = rows(against, tmp_path=tmp_path)
    for i, eps in enumerate(EPS):
        r = got[("linf", eps)]
        assert r["clean_acc"] == pytest.approx(3 / 5)
        assert r["n_mistakes"] == 2
        assert r["trivial_rate"] == pytest.approx(trivial[i] / 5), eps
        assert r["robust_bound"] == pytest.approx((3 - trivial[i]) / 5)
        assert r["mistakes_near_same_rate"] == pytest.approx(near_same[i] / 2), eps
        assert r["mistakes_near_other_rate"] == pytest.approx(near_other[i] / 2), eps


def test_l2_distances_are_the_norm_of_the_whole_image(tmp_path):
    """Four pixels: L2 is twice the grey-level difference, so L2 eps 0.75 is Linf eps 0.375."""
    got = rows("test", {"l2": {"eps": [0.74, 0.75, 0.875]}}, tmp_path)
    assert [got[("l2", e)]["trivial_rate"] for e in (0.74, 0.75, 0.875)] == pytest.approx([0, 1 / 5, 2 / 5])


def test_artifact_holds_each_points_nearest_distances(tmp_path):
    from analysis.load import read_artifact

    rows("both", tmp_path=tmp_path)
    art = read_artifact(str(tmp_path), "trivial_nearest").sort("point")
    # C's nearest misclassified class-0 image is G (itself excluded); E is class 1's only mistake.
    assert art.get_column("mistaken_same").to_list() == pytest.approx([0.4375, 0.3125, 0.0625, 0.4375, float("inf")])
    assert art.get_column("correct").to_list() == [True, True, False, True, False]


@pytest.mark.parametrize("entry, field", [
    ({"norms": {"linf": {"eps": [1.5]}}}, "norms.linf.eps[0]"),
    ({"norms": {"l3": {"eps": [0.1]}}}, "norms"),
    ({"norms": {"linf": {"eps": [-0.1]}}}, "norms.linf.eps"),
    ({"norms": {"linf": {"eps": [0.1]}}, "against": "val"}, "against"),
])
def test_bad_entries_name_the_field(entry, field):
    with pytest.raises(SpecError, match=f"evaluate\\[0\\].*{field.split('[')[0]}"):
        parse_spec({"name": "t", "train": {"model": "mlp"}, "evaluate": [{"evaluator": "trivial", **entry}]})


def test_robust_accuracy_above_the_bound_is_a_sign_of_a_broken_evaluation(tmp_path):
    """The toy data's bound at Linf 0.375 is 2/5 (B is broken by C without an attack). A robustness
    row claiming 3/5 there is flagged; one at 2/5, or on other points, is not."""
    import polars as pl

    from analysis.evaluation import evaluation_warnings
    from study import results

    bound = rows("test", tmp_path=tmp_path)[("linf", 0.375)]
    assert bound["robust_bound"] == pytest.approx(2 / 5)

    def frame(robust_acc, n_eval=5):
        attacked = dict(evaluator="robustness", attack="worst", ensemble="fgsm", cascade=False, norm="linf", eps=0.375, robust_acc=robust_acc, clean_acc=0.6, n_eval=n_eval)
        return pl.from_arrow(results.to_table([{**r, "label": "toy", "trial_id": "t"} for r in (attacked, bound)]))

    (sign,) = evaluation_warnings(frame(3 / 5))
    assert "0.600 at linf 0.375 is above 0.400" in sign
    assert evaluation_warnings(frame(2 / 5)) == []
    assert evaluation_warnings(frame(3 / 5, n_eval=4)) == []
