"""Geometry: boundary tilting (Tanay) and minimal adversarial perturbations (study.geometry).

For a linear two-class model f(x) = w . x + b (linear-svm; logreg on two classes), every row
carries the tilting angle theta between w and the nearest-centroid direction c1 - c0 of the
training set, ||c1 - c0|| and Tanay's predicted d_adv = 1/2 ||c1 - c0|| cos(theta), and per
norm the distribution of the exact minimal perturbation of every correctly classified test
point: `closed-form` (|f(x)| / ||w||_dual, no box) and `closed-form-box` (the exact minimum
that keeps x + delta in [0, 1]). For any model, `pgd-bisection` finds each point's minimal
eps by bisection with PGD; on a linear model it should match `closed-form-box`.

Artifacts (study.artifacts), linear two-class models only: `tilting-plane`, a sample of train
and test points projected on the plane spanned by c1 - c0 and w, with the decision line; and
`perturbation`, a few test images with their minimal L2 perturbation (box-constrained).
"""

from __future__ import annotations

import math
from typing import Annotated, Optional

import pyarrow as pa
import torch
from pydantic import Field

from study import geometry, models
from study.registry import Entry, Evaluator
from study.rng import PointRNG
from study.seeds import stream_seed
from study.spec.constraints import NormName, Strict
from study.types import Distinct, NotBool, PosInt


class Bisection(Strict):
    """Minimal eps per point by bisection on eps, each round one batched PGD run."""

    steps: PosInt = 50
    iters: PosInt = 14  # halvings of each point's bracket: about 1e-4 of the starting range
    restarts: PosInt = 1
    n_points: Optional[PosInt] = None  # bisect the first n correctly classified points (all when null)


class Options(Entry):
    """Boundary tilting and minimal perturbations (study.evaluators.geometry). The closed forms
    need a linear two-class model; the PGD bisection runs on any model."""

    norms: Annotated[list[NormName], Field(min_length=1), Distinct] = ["l2", "linf"]
    bisection: Optional[Bisection] = Bisection()  # null: closed forms only
    plane_points: Annotated[int, NotBool, Field(ge=0)] = 400  # per split, projected on the tilting plane
    perturbation_points: Annotated[int, NotBool, Field(ge=0, le=16)] = 3  # test images kept with their minimal L2 perturbation

    def uses_training_split(self) -> bool:
        return True  # class centroids and the tilting plane of the training split

    def n_rows(self, linear_binary: bool = False) -> int:
        methods = (2 if linear_binary else 0) + (self.bisection is not None)
        return methods * len(self.norms)


BOX_LIMIT = {"linf": 1.0}  # the largest useful radius: the box's Linf diameter; L2: sqrt(d)


def evaluate(ctx, axes) -> list[dict]:
    xc = ctx.x[ctx.correct]
    common = dict(evaluator="geometry", n_eval=len(ctx.y), clean_acc=ctx.clean_acc)
    rows = []
    linear = models.binary_linear(ctx.model)
    if linear is not None:
        w, b = (t.to(xc) for t in linear)
        c0, c1 = geometry.centroids(ctx.x_train, ctx.y_train)
        theta = geometry.tilting_angle(w, c1 - c0)
        common.update(theta_deg=theta, centroid_dist=float((c1 - c0).norm()), d_adv_pred=geometry.predicted_d_adv(c0, c1, theta))
        for norm in axes.norms:
            rows.append(_row(common, "closed-form", norm, geometry.min_perturbation_free(w, b, xc, norm)))
            rows.append(_row(common, "closed-form-box", norm, geometry.min_perturbation_box(w, b, xc, norm)[0]))
        _write_plane(ctx, axes, w, b, c0, c1)
        _write_perturbations(ctx, axes, w, b, xc)
    if axes.bisection is not None:
        bis = axes.bisection
        points = xc[: bis.n_points] if bis.n_points else xc
        labels = ctx.y[ctx.correct][: len(points)]
        for norm in axes.norms:
            rng = PointRNG(stream_seed(ctx.seed, "geometry", norm), ctx.correct.nonzero().squeeze(1)[: len(points)])
            hi = BOX_LIMIT.get(norm, math.sqrt(xc[0].numel()))
            found = geometry.minimal_eps_bisection(ctx.model, points, labels, norm, hi=hi, iters=bis.iters, steps=bis.steps, restarts=bis.restarts, rng=rng)
            rows.append(_row(common, "pgd-bisection", norm, found, steps=bis.steps, restarts=bis.restarts))
    return rows


def _row(common: dict, method: str, norm: str, dist: torch.Tensor, **settings) -> dict:
    finite = dist[torch.isfinite(dist)].cpu()
    return dict(
        common,
        attack=method,
        norm=norm,
        **settings,
        success_rate=float(len(finite) / len(dist)) if len(dist) else None,
        min_eps_mean=float(finite.mean()) if len(finite) else None,
        min_eps_median=float(finite.median()) if len(finite) else None,
    )


def _sample(n_total: int, k: int, seed: int) -> torch.Tensor:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randperm(n_total, generator=gen)[:k]


def _write_plane(ctx, axes, w, b, c0, c1) -> None:
    if not axes.plane_points:
        return
    cols = {"split": [], "label": [], "u": [], "v": [], "f": []}
    for split, x, y in (("train", ctx.x_train, ctx.y_train), ("test", ctx.x, ctx.y)):
        idx = _sample(len(x), axes.plane_points, ctx.seed).to(x.device)
        uv, line = geometry.tilting_plane(w, b, c0, c1, x[idx])
        cols["split"] += [split] * len(idx)
        cols["label"] += y[idx].tolist()
        cols["u"] += uv[:, 0].tolist()
        cols["v"] += uv[:, 1].tolist()
        cols["f"] += (x[idx].flatten(1) @ w + b).tolist()
    n = len(cols["u"])
    ctx.write_artifact("tilting-plane", {**cols, **{k: [float(v)] * n for k, v in line.items()}})


def _write_perturbations(ctx, axes, w, b, xc) -> None:
    """The first test images with their minimal box-constrained L2 perturbation, as pixels."""
    k = min(axes.perturbation_points, len(xc))
    if not k:
        return
    x = xc[:k]
    dist, delta = geometry.min_perturbation_box(w, b, x, "l2")
    channels, height, width = x.shape[1:]
    cols = {"point": [], "kind": [], "pixels": [], "channels": [], "height": [], "width": [], "l2": []}
    for i in range(k):
        for kind, img in (("x", x[i]), ("delta", delta[i]), ("x_adv", x[i] + delta[i])):
            cols["point"].append(i)
            cols["kind"].append(kind)
            cols["pixels"].append(img.flatten().float().cpu().tolist())
            cols["channels"].append(channels)
            cols["height"].append(height)
            cols["width"].append(width)
            cols["l2"].append(float(dist[i]))
    ctx.write_artifact("perturbation", cols)


COLUMNS = (
    ("theta_deg", pa.float64(), "metric", "geometry, linear two-class models: tilting angle between w and the nearest-centroid direction c1 - c0 (training set), degrees"),
    ("centroid_dist", pa.float64(), "metric", "geometry: ||c1 - c0||_2, the distance between the two training-class centroids"),
    ("d_adv_pred", pa.float64(), "metric", "geometry: Tanay's predicted adversarial distance 1/2 ||c1 - c0|| cos(theta)"),
    ("min_eps_mean", pa.float64(), "metric", "geometry: mean minimal perturbation (in `norm`) that changes the prediction, over the correctly classified points it could change"),
    ("min_eps_median", pa.float64(), "metric", "geometry: median minimal perturbation"),
)
EVALUATOR = Evaluator(Options, evaluate, COLUMNS, report="analysis.report:geometry_section")
