"""A norm is one complete object (study.norms): its dual, its largest eps, its measure and the
size columns it gives the results schema; checked on hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from study import geometry, norms, results
from study.spec import SpecError, parse_spec


def test_measures_and_size_columns_on_known_perturbations():
    # Two perturbations of a 1 x 2 x 2 image: (3, 4, 0, 0) has L2 5 and Linf 4; (1, 1, 1, 1), L2 2 and Linf 1.
    delta = torch.tensor([[3.0, 4.0, 0.0, 0.0], [1.0, -1.0, 1.0, -1.0]]).view(2, 1, 2, 2)
    m = norms.measures(delta)
    assert m["l2"].tolist() == [5.0, 2.0] and m["linf"].tolist() == [4.0, 1.0]
    assert norms.sizes(delta) == {"linf_mean": 2.5, "linf_median": 1.0, "l2_mean": 3.5, "l2_median": 2.0}


def test_every_norm_gives_the_schema_its_size_columns():
    names = set(results.schema().names)
    for norm in norms.NORMS.values():
        for column, *_ in norm.size_columns():
            assert column in names
        assert {f"{norm.name}_mean", f"{norm.name}_median"} <= names


@pytest.mark.parametrize("name, expected", [("l2", 5.0 / math.sqrt(1 + 4)), ("linf", 5.0 / 3.0)])
def test_the_linear_boundary_distance_divides_by_the_dual_norm(name, expected):
    # f(x) = w.x + b with w = (1, 2), b = -5, at x = 0: |f| = 5; the L2 distance is 5 / ||w||_2,
    # the Linf distance 5 / ||w||_1 (the dual norms).
    w, b = torch.tensor([1.0, 2.0]), torch.tensor(-5.0)
    x = torch.zeros(1, 2)
    assert geometry.min_perturbation_free(w, b, x, name).item() == pytest.approx(expected)
    assert norms.get(name).dual == {"l2": 2.0, "linf": 1.0}[name]


def test_the_eps_bound_is_the_norms_own():
    base = {"name": "s", "train": {"model": "logreg"}, "evaluate": [{"evaluator": "robustness", "attacks": ["fgsm"], "norms": {"linf": {"eps": [0.1, 1.5]}}}]}
    with pytest.raises(SpecError, match=r"evaluate\[0\]\.norms\.linf\.eps\[1\]: linf eps must be <= 1"):
        parse_spec(base)
    assert norms.Linf.max_eps == 1.0 and norms.L2.max_eps is None
    parse_spec({**base, "evaluate": [{"evaluator": "robustness", "attacks": ["fgsm"], "norms": {"l2": {"eps": [0.1, 15.0]}}}]})
