"""The calibration evaluator (study.evaluators.calibration) on hand-computed answers: the ECE
and NLL of models whose probabilities are known."""

from __future__ import annotations

import math

import polars as pl
import pytest
import torch

from analysis import sections
from study import evaluators, results
from study.evaluators.calibration import expected_calibration_error
from study.spec import SpecError, parse_spec


class Fixed(torch.nn.Module):
    """Predicts the probabilities stored per input: x[:, 0, 0, :C] holds them."""

    def forward(self, x):
        return x[:, 0, 0, :3].log()


def _points(probs: list[list[float]], n_each: list[int]) -> torch.Tensor:
    x = torch.cat([torch.tensor(p).view(1, 1, 1, 3).expand(n, 1, 1, 3) for p, n in zip(probs, n_each)])
    return x.contiguous()


def test_ece_on_known_bins():
    # Half the points at confidence 0.6, all right; half at 0.9, 60% right.
    conf = torch.tensor([0.6] * 10 + [0.9] * 10)
    correct = torch.tensor([True] * 10 + [True] * 6 + [False] * 4)
    assert expected_calibration_error(conf, correct, 10) == pytest.approx(0.5 * 0.4 + 0.5 * 0.3)
    assert expected_calibration_error(conf, correct, 1) == pytest.approx(abs(0.8 - 0.75))  # one bin: accuracy against mean confidence
    # Calibrated in every bin: 0.
    assert expected_calibration_error(torch.tensor([0.5, 0.5, 1.0]), torch.tensor([True, False, True]), 10) == pytest.approx(0.0)


def test_the_evaluator_rows_and_report_section(tmp_path):
    spec = parse_spec({"name": "c", "train": {"model": "cnn"}, "evaluate": [{"evaluator": "calibration", "bins": [1, 10]}]})
    entry = spec.evaluate[0]
    assert entry.n_rows() == 2
    # Confidence 0.8 on class 0 for every point; the first 6 of 10 are class 0: accuracy 0.6.
    x = _points([[0.8, 0.1, 0.1]], [10])
    y = torch.tensor([0] * 6 + [1] * 4)
    ctx = evaluators.EvalContext(model=Fixed(), x=x, y=y, seed=0, x_train=None, y_train=None, trial_id="t", results_uri=str(tmp_path), n_classes=3)
    rows = evaluators.run(ctx, entry)
    nll = -(6 * math.log(0.8) + 4 * math.log(0.1)) / 10
    assert [(r["calibration_bins"], r["clean_acc"]) for r in rows] == [(1, pytest.approx(0.6)), (10, pytest.approx(0.6))]
    assert all(r["ece"] == pytest.approx(0.2) and r["nll_mean"] == pytest.approx(nll) for r in rows)
    # The bin count is an evaluation axis: the two rows have their own keys.
    assert results.row_key("t", rows[0]) != results.row_key("t", rows[1])
    df = pl.from_arrow(results.to_table([{**r, "trial_id": "t", "label": "fixed"} for r in rows]))
    [(title, _, table)] = [t for t in sections.tables(df)]
    assert title == "Calibration" and table.get_column("ece").to_list() == pytest.approx([0.2, 0.2])


def test_bad_bins_are_spec_errors():
    with pytest.raises(SpecError, match=r"evaluate\[0\]\.bins\[0\]: must be > 0"):
        parse_spec({"name": "c", "train": {"model": "cnn"}, "evaluate": [{"evaluator": "calibration", "bins": [0]}]})
