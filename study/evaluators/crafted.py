"""The source text's crafted images: two classes in one picture, inside a "small" Linf ball.

x = x0 + eps * sign(x1), clipped to [0, 1], with x0 and x1 test images of different classes:
every pixel that is ink in x1 is brightened by eps, so the crafted image carries x1's shape
and stays within Linf distance eps of x0. At the customary eps = 0.3 (and already at 0.2) a
person sees both digits, so a model that answers x1's class is not fooled by an imperceptible
change: a threat model with that eps counts as adversarial inputs whose true class is unclear.

x0 and x1 are the first ``per_class`` evaluation images of each class (the same images for
every model); every ordered pair of classes a != b, every image i of a with every image j of b.
Rows, one per eps: the fraction classified as x0's class (``robust_acc``) and as x1's
(``target_rate``), the model's mean confidence, and the crafted images' L2 / Linf from x0.

Artifacts: ``crafted`` (per crafted image: its classes, i and j (ranks within their class),
point_a / point_b (their evaluation indices), prediction and confidence) and ``crafted_images``
(the first image of each class, and its crafted image with the first image of every other
class at every eps, as pixels).
"""

from __future__ import annotations

import time
from typing import Annotated

import pyarrow as pa
import torch
from pydantic import Field

from study.evaluators.robustness import confidence
from study.norms import L2, Linf
from study.registry import Entry, Evaluator
from study.train import predict
from study.types import Distinct, NotBool, PosInt


class Options(Entry):
    """The source text's crafted images x0 + eps * sign(x1), clipped to [0, 1], for every ordered
    pair of classes (x0 and x1 test images of different classes), classified by the model:
    study.evaluators.crafted."""

    eps: Annotated[list[Annotated[float, NotBool, Field(gt=0, le=1)]], Field(min_length=1), Distinct] = [0.1, 0.2, 0.3]
    per_class: PosInt = 10  # test images per class; every pair of images of different classes is crafted

    def n_rows(self, linear_binary: bool = False) -> int:
        return len(self.eps)


BATCH = 8192  # crafted images per forward pass


def craft(x0: torch.Tensor, x1: torch.Tensor, eps: float) -> torch.Tensor:
    """x0 + eps * sign(x1), clipped to [0, 1], in x0's dtype (broadcasting x0 against x1), with
    |x - x0| <= eps holding exactly when measured in float64 from the stored values."""
    target = (x0.double() + eps * torch.sign(x1).double()).clamp(0, 1)
    x = target.to(x0.dtype)
    # Rounding to x0's dtype can land past x0 + eps (0.7 + 0.3 in float32 overshoots by 1e-8).
    # The rounded value is within half a spacing of the target, so the next value toward x0 is inside.
    over = (x.double() - x0.double()).abs() > eps
    return torch.where(over, torch.nextafter(x, x0.expand_as(x)), x)


def evaluate(ctx, axes) -> list[dict]:
    n_classes = ctx.n_classes
    y = ctx.y.cpu()
    points = {c: (y == c).nonzero().squeeze(1)[: axes.per_class] for c in range(n_classes)}
    points = {c: p for c, p in points.items() if len(p)}  # a class without evaluation images crafts nothing
    classes = list(points)
    if len(classes) < 2:
        raise ValueError(f"crafted: needs evaluation images of two classes; found them of {classes}")
    cols = {k: [] for k in ("eps", "class_a", "class_b", "i", "j", "point_a", "point_b", "pred", "confidence")}
    images = {k: [] for k in ("kind", "eps", "class_a", "class_b", "pixels", "pred", "confidence", "channels", "height", "width")}
    first = ctx.x[[points[c][0].item() for c in classes]]
    _images(images, "x0", None, classes, classes, first, predict(ctx.model, first), confidence(ctx.model, first))
    rows = []
    for eps in axes.eps:
        start = time.perf_counter()
        stats = {k: [] for k in ("a", "b", "pred", "confidence", "linf", "l2")}
        for a in classes:
            others = [b for b in classes if b != a]
            x1_points = torch.cat([points[b] for b in others])
            x1_class = torch.cat([torch.full((len(points[b]),), b) for b in others])
            x1_rank = torch.cat([torch.arange(len(points[b])) for b in others])
            x1 = ctx.x[x1_points.to(ctx.x.device)]
            step = max(1, BATCH // len(x1_points))
            for i0 in range(0, len(points[a]), step):
                x0 = ctx.x[points[a][i0 : i0 + step].to(ctx.x.device)]
                # Row r is x0[r // n] crafted with x1[r % n], n = len(x1).
                x = craft(x0[:, None], x1[None], eps).flatten(0, 1)
                pred, conf = predict(ctx.model, x).cpu(), confidence(ctx.model, x).cpu()
                delta = x - x0.repeat_interleave(len(x1), 0)
                k = len(x0)
                b = x1_class.repeat(k)
                stats["a"].append(torch.full_like(b, a))
                stats["b"].append(b)
                stats["pred"].append(pred)
                stats["confidence"].append(conf)
                stats["linf"].append(Linf.measure(delta).cpu())
                stats["l2"].append(L2.measure(delta).cpu())
                cols["eps"] += [float(eps)] * len(x)
                cols["class_a"] += [a] * len(x)
                cols["class_b"] += b.tolist()
                cols["i"] += torch.arange(i0, i0 + k).repeat_interleave(len(x1)).tolist()
                cols["j"] += x1_rank.repeat(k).tolist()
                cols["point_a"] += points[a][i0 : i0 + step].repeat_interleave(len(x1)).tolist()
                cols["point_b"] += x1_points.repeat(k).tolist()
                cols["pred"] += pred.tolist()
                cols["confidence"] += conf.tolist()
                if i0 == 0:  # the first image of a, with the first of every other class
                    firsts = (x1_rank == 0).nonzero().squeeze(1)
                    _images(images, "crafted", float(eps), [a] * len(firsts), x1_class[firsts].tolist(), x[firsts], pred[firsts], conf[firsts])
        eval_s = time.perf_counter() - start
        s = {k: torch.cat(v) for k, v in stats.items()}
        n = len(s["pred"])
        rows.append(dict(
            evaluator="crafted",
            attack=None,
            norm="linf",
            eps=float(eps),
            per_class=axes.per_class,
            n_eval=n,
            robust_acc=float((s["pred"] == s["a"]).double().mean()),
            target_rate=float((s["pred"] == s["b"]).double().mean()),
            adv_confidence_mean=float(s["confidence"].mean()),
            linf_mean=float(s["linf"].mean()),
            l2_mean=float(s["l2"].mean()),
            clean_acc=ctx.clean_acc,
            eval_s=eval_s,
        ))
    ctx.write_artifact("crafted", cols)
    ctx.write_artifact("crafted_images", images)
    return rows


def _images(cols: dict, kind: str, eps, class_a, class_b, x, pred, conf) -> None:
    channels, height, width = x.shape[1:]
    for k in range(len(x)):
        cols["kind"].append(kind)
        cols["eps"].append(eps)
        cols["class_a"].append(class_a[k])
        cols["class_b"].append(class_b[k])
        cols["pixels"].append(x[k].flatten().cpu().tolist())
        cols["pred"].append(int(pred[k]))
        cols["confidence"].append(float(conf[k]))
        cols["channels"].append(channels)
        cols["height"].append(height)
        cols["width"].append(width)


COLUMNS = (
    ("target_rate", pa.float64(), "metric", "crafted: fraction of the crafted images x0 + eps sign(x1) classified as x1's class (`robust_acc`: as x0's)"),
)
EVALUATOR = Evaluator(Options, evaluate, COLUMNS, report="analysis.report:crafted_section")
