"""docs/extending.md's worked example, run as the page says: a small ResNet trained with plain
torch on 3 x 32 x 32 images, its state_dict evaluated by `advsweep run` from an ImageFolder
under the default evaluation, and the report written."""

from __future__ import annotations

import subprocess
import sys

import polars as pl
import pytest
import torch

from jobs import cli
from study import checkpoints
from tests import doc_example


def test_the_worked_example_runs_as_written(ray_session, tmp_path, monkeypatch, capsys):
    doc_example.write(tmp_path)
    trained = subprocess.run([sys.executable, "train_elsewhere.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr[-2000:]
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    doc_example.forget_mylab()

    assert cli.main(["run", "study.yaml", "--dry-run"]) == 0
    assert "my-resnet: 1 trials, 1 checkpoint evaluated as it is; rows depend on mylab.metrics:margin" in capsys.readouterr().out  # as the page shows
    assert cli.main(["run", "study.yaml"]) == 0
    assert "Evaluator mylab.metrics:margin:" in capsys.readouterr().out
    assert cli.main(["report", "results/my-resnet"]) == 0
    page = (tmp_path / "report" / "my-resnet" / "index.html").read_text()
    assert "Evaluator mylab.metrics:margin" in page and "margin_below_1" in page

    df = pl.read_parquet(tmp_path / "results" / "my-resnet" / "results.parquet")
    assert df.height == 24 + 2 * 3 + 1 and set(df["model"]) == {"mylab.nets:SmallResNet"}
    assert set(df["model_args"]) == {'{"num_classes": 4, "width": 8}'}
    assert set(df["checkpoint_sha256"]) == {checkpoints.digest((tmp_path / "runs" / "smallresnet.pt").read_bytes())}
    default = pl.col("ensemble") == "apgd-ce+fmn+fmn-t+apgd-t+square"
    worst = df.filter(default & (pl.col("attack") == "worst") & (pl.col("norm") == "linf")).sort("eps")
    # The noise attack's rows: within eps, and no stronger than the default evaluation at that eps.
    noise = df.filter(pl.col("attack") == "mylab.attacks:noise").sort("eps")
    assert noise["attack_options"].to_list() == ["mylab.attacks:noise(tries=20)"] * 2 and noise["eps"].to_list() == [0.1, 0.2]
    assert all(m is None or m <= e * (1 + 1e-5) for m, e in zip(noise["linf_mean"], noise["eps"]))
    at_01 = df.filter(default & (pl.col("attack") == "worst") & (pl.col("eps") == 0.1) & (pl.col("norm") == "linf"))["robust_acc"][0]
    assert noise["robust_acc"][0] >= at_01
    # Known answer at eps 0: the clean accuracy of the saved weights on the PNGs, computed here.
    from mylab import data, nets

    model = nets.SmallResNet(num_classes=4, width=8)
    model.load_state_dict(torch.load(tmp_path / "runs" / "smallresnet.pt", weights_only=True))
    x, y = data.make(60, seed=2)  # the images written to images/test
    mean, std = torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1), torch.tensor([0.3, 0.35, 0.4]).view(1, 3, 1, 1)
    with torch.no_grad():
        clean = (model.eval()((torch.from_numpy(x).float() / 255 - mean) / std).argmax(1) == torch.from_numpy(y)).float().mean().item()
    assert worst["robust_acc"][0] == pytest.approx(clean, abs=1e-9) and clean >= 0.9
    # The margin evaluator's row: its option as an axis, its measurements, computed here again.
    mine = df.filter(pl.col("evaluator") == "mylab.metrics:margin")
    # ImageFolder order: class folders, then file names; the first 50 are the first 50 of that order.
    order = sorted(range(60), key=lambda i: (int(y[i]), i))[:50]
    with torch.no_grad():
        logits = model(((torch.from_numpy(x[order]).float() / 255 - mean) / std))
    target = torch.from_numpy(y[order])[:, None]
    margins = logits.gather(1, target).squeeze(1) - logits.scatter(1, target, float("-inf")).amax(1)
    assert mine.height == 1 and mine["n_points"][0] == 50
    assert mine["margin_mean"][0] == pytest.approx(margins.mean().item(), rel=1e-5)
    assert mine["margin_below_1"][0] == pytest.approx((margins < 1).float().mean().item())
    assert worst["robust_acc"].to_list() == sorted(worst["robust_acc"].to_list(), reverse=True)
    doc_example.forget_mylab()
