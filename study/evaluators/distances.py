"""How far apart the data's images are: what an eps budget should be measured against.

Per (norm, per_class): ``per_class`` images of every class are sampled (seeded, the same sample
for every norm), and their pairwise distances under L0 (pixels that differ), L1, L2 and Linf give
the class x class matrix of mean distances (the diagonal: mean within-class distance over pairs
of distinct images) and each image's distance to the nearest sampled image of another class.
The source text's point: within-class distances need not be smaller than between-class ones, and
a fixed eps (Linf 0.3, L2 4.5) can exceed what separates two classes. The per-class eps
suggestion eps_c = fraction x the q-quantile of class c's nearest-other-class distances is a
radius that stays well inside most of that class's gaps; the robustness evaluator attacks at it
(``class_eps``, from the training split: the same sample and numbers this evaluator reports for
the same seed, norm and per_class).

Rows, one per (norm, per_class, quantile): the suggestions' mean over classes (``eps``), their
min and max, the matrix's within- and between-class means, how many classes are closer to
themselves than to every other class, and the mean nearest-other-class distance.

Artifacts: ``class_distances`` (every cell of the matrix, with its pair count),
``nearest_other`` (per sampled image) and ``class_eps`` (per class and quantile).
"""

from __future__ import annotations

import math
import time
from typing import Annotated, Literal

import pyarrow as pa
import torch
from pydantic import Field

from study.names import DISTANCE_NORMS
from study.registry import Entry, Evaluator
from study.seeds import stream_seed
from study.spec.constraints import Quantile
from study.types import Distinct, NotBool


class Options(Entry):
    """Class x class mean pairwise distances of sampled images under L0, L1, L2 and Linf, each
    image's distance to the nearest image of another class, and per-class eps suggestions
    (``fraction`` x the ``quantiles`` of that distribution per class): study.evaluators.distances."""

    norms: Annotated[list[Literal[DISTANCE_NORMS]], Field(min_length=1), Distinct] = list(DISTANCE_NORMS)
    per_class: Annotated[list[Annotated[int, NotBool, Field(ge=2)]], Field(min_length=1), Distinct] = [100]  # images sampled per class
    quantiles: Annotated[list[Quantile], Field(min_length=1), Distinct] = [0.1, 0.5]
    fraction: Annotated[float, NotBool, Field(gt=0, le=1)] = 0.5
    split: Literal["train", "test"] = "train"

    def uses_training_split(self) -> bool:
        return self.split == "train"

    def n_rows(self, linear_binary: bool = False) -> int:
        return len(self.norms) * len(self.per_class) * len(self.quantiles)


NORM_P = {"l0": 0.0, "l1": 1.0, "l2": 2.0, "linf": math.inf}


def pairwise(a: torch.Tensor, b: torch.Tensor, norm: str, chunk: int = 1024) -> torch.Tensor:
    """(N, M) float64 distances between the rows of ``a`` and ``b`` (images, flattened) under
    ``norm``; ``chunk`` rows of ``a`` at a time, so memory stays bounded."""
    p = NORM_P[norm]
    a, b = a.flatten(1).double(), b.flatten(1).double()
    # No matrix-product shortcut for L2 (|a|^2 + |b|^2 - 2ab): it cancels, so identical images
    # would come out a little apart; the direct form is exact at 0 and agrees with a plain loop.
    return torch.cat([torch.cdist(rows, b, p=p, compute_mode="donot_use_mm_for_euclid_dist") for rows in a.split(chunk)])


def sample(y: torch.Tensor, per_class: int, seed: int, n_classes: int) -> torch.Tensor:
    """Indices of ``per_class`` images of every class (all of a class's images when it has fewer),
    drawn without replacement from a generator seeded with ``seed``, grouped by class in class
    order. A class needs 2 images: one has no within-class distance."""
    gen = torch.Generator().manual_seed(seed)
    y = y.cpu()
    out = []
    for c in range(n_classes):
        idx = (y == c).nonzero().squeeze(1)
        if len(idx) < 2:
            raise ValueError(f"distances: class {c} has {len(idx)} image(s); sampling needs at least 2 per class")
        out.append(idx[torch.randperm(len(idx), generator=gen)[:per_class]].sort().values)
    return torch.cat(out)


def class_matrix(d: torch.Tensor, ys: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(C, C) mean distance between the sampled images of class a and of class b, from their
    (n, n) pairwise distances ``d``; the diagonal averages over pairs of distinct images only."""
    onehot = torch.nn.functional.one_hot(ys, n_classes).to(d)
    off_diagonal = d * ~torch.eye(len(d), dtype=torch.bool, device=d.device)  # an image is no pair with itself
    sums = onehot.T @ off_diagonal @ onehot
    return sums / pair_counts(ys, n_classes).to(d)


def pair_counts(ys: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(C, C) number of pairs each cell of ``class_matrix`` averages over."""
    n = torch.bincount(ys, minlength=n_classes).double()
    return torch.outer(n, n) - torch.diag(n)


def nearest_other(d: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Each sampled image's distance to the nearest sampled image of another class."""
    return d.masked_fill(ys[:, None] == ys[None, :], math.inf).amin(1)


def eps_suggestions(nearest: torch.Tensor, ys: torch.Tensor, n_classes: int, quantiles, fraction: float) -> torch.Tensor:
    """(len(quantiles), C): eps_c = fraction x the q-quantile (linear interpolation) of class c's
    nearest-other-class distances."""
    return fraction * _class_quantiles(nearest, ys, n_classes, quantiles)


def _class_quantiles(nearest, ys, n_classes, quantiles) -> torch.Tensor:
    q = torch.tensor(list(quantiles), dtype=torch.float64, device=nearest.device)
    return torch.stack([torch.quantile(nearest[ys == c].double(), q) for c in range(n_classes)], dim=1)


def class_eps(x, y, n_classes: int, norm: str, per_class: int, quantiles, fraction: float, seed: int) -> torch.Tensor:
    """Per-class eps suggestions (len(quantiles), C) for images ``x`` labelled ``y``: the numbers
    ``evaluate`` reports on the same split for the same seed, norm and per_class."""
    idx = sample(y, per_class, stream_seed(seed, "distances", per_class), n_classes).to(y.device)
    ys = y[idx]
    return eps_suggestions(nearest_other(pairwise(x[idx], x[idx], norm), ys), ys, n_classes, quantiles, fraction)


def evaluate(ctx, axes) -> list[dict]:
    x, y = (ctx.x_train, ctx.y_train) if axes.split == "train" else (ctx.x, ctx.y)
    n_classes = ctx.n_classes
    off = ~torch.eye(n_classes, dtype=torch.bool)
    rows = []
    cells = {k: [] for k in ("split", "norm", "per_class", "class_a", "class_b", "mean", "n_pairs")}
    nearest_cols = {k: [] for k in ("split", "norm", "per_class", "class", "point", "dist")}
    eps_cols = {k: [] for k in ("split", "norm", "per_class", "quantile", "fraction", "class", "quantile_dist", "eps")}
    for per_class in axes.per_class:
        idx = sample(y, per_class, stream_seed(ctx.seed, "distances", per_class), n_classes).to(y.device)
        xs, ys = x[idx], y[idx]
        counts = pair_counts(ys, n_classes).cpu()
        for norm in axes.norms:
            start = time.perf_counter()
            d = pairwise(xs, xs, norm)
            m = class_matrix(d, ys, n_classes).cpu()
            near = nearest_other(d, ys)
            qdist = _class_quantiles(near, ys, n_classes, axes.quantiles).cpu()
            eps = axes.fraction * qdist  # == eps_suggestions(...): the numbers class_eps returns
            near = near.cpu()
            eval_s = time.perf_counter() - start
            diag = m.diagonal()
            # A class is closer to itself than to others when its diagonal cell beats its row's smallest off-diagonal cell.
            within_smaller = diag < m.masked_fill(~off, math.inf).amin(1)
            for k, q in enumerate(axes.quantiles):
                rows.append(dict(
                    evaluator="distances",
                    norm=norm,
                    per_class=per_class,
                    eps_quantile=float(q),
                    eps_fraction=float(axes.fraction),
                    eps=float(eps[k].mean()),
                    eps_min=float(eps[k].min()),
                    eps_max=float(eps[k].max()),
                    within_mean=float(diag.mean()),
                    between_mean=float(m[off].mean()),
                    within_smaller_rate=float(within_smaller.double().mean()),
                    nearest_other_mean=float(near.mean()),
                    n_eval=len(idx),
                    clean_acc=ctx.clean_acc,
                    eval_s=eval_s,
                ))
                for c in range(n_classes):
                    _append(eps_cols, split=axes.split, norm=norm, per_class=per_class, quantile=float(q), fraction=float(axes.fraction),
                            **{"class": c}, quantile_dist=float(qdist[k, c]), eps=float(eps[k, c]))
            for a in range(n_classes):
                for b in range(n_classes):
                    _append(cells, split=axes.split, norm=norm, per_class=per_class, class_a=a, class_b=b, mean=float(m[a, b]), n_pairs=int(counts[a, b]))
            k = len(idx)
            nearest_cols["split"] += [axes.split] * k
            nearest_cols["norm"] += [norm] * k
            nearest_cols["per_class"] += [per_class] * k
            nearest_cols["class"] += ys.tolist()
            nearest_cols["point"] += idx.tolist()  # the image's index in the split
            nearest_cols["dist"] += near.tolist()
    ctx.write_artifact("class_distances", cells)
    ctx.write_artifact("nearest_other", nearest_cols)
    ctx.write_artifact("class_eps", eps_cols)
    return rows


def _append(cols: dict, **values) -> None:
    for k, v in values.items():
        cols[k].append(v)


COLUMNS = (
    ("within_smaller_rate", pa.float64(), "metric", "distances: fraction of classes whose within-class mean distance is below their mean distance to every other class"),
    ("nearest_other_mean", pa.float64(), "metric", "distances: mean over the sampled images of the distance to the nearest sampled image of another class"),
    ("eps_min", pa.float64(), "metric", "distances: the smallest per-class eps suggestion (`eps` is their mean over classes)"),
    ("eps_max", pa.float64(), "metric", "distances: the largest per-class eps suggestion"),
)
EVALUATOR = Evaluator(Options, evaluate, COLUMNS, report="analysis.report:distances_section")
