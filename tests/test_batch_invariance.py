"""A point's attack does not depend on the other points in its batch.

On a confident float32 model the input gradient of a point's cross-entropy is tiny. Taken from
the batch's *mean* loss it shrinks further with the rows in flight (256 on a CPU, 16,384 on a
GPU), and an L2 step normalised with a floor of 1e-12 shrinks with it: PGD then reported more
robustness in big batches than alone. Every attack must give each point the same outcome with
one row in flight, 7, or thousands.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from study import attacks, data
from study.norms import L2, Linf
from study.rng import PointRNG
from study.spec import DataSpec

N_SMALL = 150  # the points attacked alone and in batches of 7
N_LARGE = 2000  # ... and with all of these in flight at once


@pytest.fixture(scope="module")
def confident():
    """A float32 MLP trained on mnist-5k, its logits then scaled by 5 (the same predictions, a
    saturated softmax: most points' gradients are below 1e-12), and the images it classifies
    correctly among all 5,000. PGD-20 L2 at eps 0.5 on its first 300 gave 86.3% robust accuracy
    alone and 89.0% with every point in flight under the mean-loss gradient."""
    ds = data.load(DataSpec(dataset="mnist-5k"))
    x = torch.cat([torch.from_numpy(ds.x_train), torch.from_numpy(ds.x_test)])
    y = torch.cat([torch.from_numpy(ds.y_train), torch.from_numpy(ds.y_test)])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        for _ in range(25):
            for idx in torch.randperm(4000).split(100):
                opt.zero_grad()
                nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
    model.eval()
    with torch.no_grad():
        model[3].weight.mul_(5.0)
        model[3].bias.mul_(5.0)
        correct = model(x).argmax(1) == y
    return model, x[correct], y[correct]


def test_the_model_is_confident_enough_for_the_bug_to_show(confident):
    """Most points' loss gradient is far below 1e-12 x the 4,000 rows in flight: the mean-loss
    bug would shrink their L2 steps."""
    model, x, y = confident
    xs = x[:2000].clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(xs), y[:2000], reduction="sum")
    (grad,) = torch.autograd.grad(loss, xs)
    tiny = grad.flatten(1).norm(dim=1) / len(x) < 1e-12
    assert tiny.float().mean() > 0.2, tiny.float().mean()


@pytest.mark.parametrize(
    "name,options,norm,eps",
    [
        ("pgd", dict(steps=20), L2, 0.5),
        ("pgd", dict(steps=20), Linf, 0.05),
        ("apgd-ce", dict(steps=20), L2, 0.5),
        ("apgd-t", dict(steps=10, targets=2), L2, 0.5),
        ("fab-t", dict(steps=10, targets=2), L2, 0.5),
        ("fmn", dict(steps=20), L2, 0.5),
        ("fmn-t", dict(steps=20, targets=2), Linf, 0.05),
        ("square", dict(queries=60), Linf, 0.1),
        ("square", dict(queries=60), L2, 1.0),
    ],
)
def test_a_point_gets_the_same_outcome_in_any_batch(confident, name, options, norm, eps):
    model, x, y = confident
    attack = attacks.make(name, **options)
    rng = PointRNG.for_points(3, len(y))
    everyone = attack.run(model, x[:N_LARGE], y[:N_LARGE], eps, norm, rng=rng[:N_LARGE], max_rows=8192).fooled[:N_SMALL]
    sevens = attack.run(model, x[:N_SMALL], y[:N_SMALL], eps, norm, rng=rng[:N_SMALL], max_rows=7).fooled
    alone = attack.run(model, x[:N_SMALL], y[:N_SMALL], eps, norm, rng=rng[:N_SMALL], max_rows=1).fooled
    assert 0 < alone.sum() < N_SMALL, "the setting should break some points and not others"
    assert torch.equal(alone, sevens), f"{name}: batches of 7 differ from one row in flight at points {(alone ^ sevens).nonzero().squeeze(1).tolist()}"
    assert torch.equal(alone, everyone), f"{name}: {N_LARGE} rows in flight differ from one at points {(alone ^ everyone).nonzero().squeeze(1).tolist()}"
