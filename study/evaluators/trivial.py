"""Trivial adversaries: how much of an eps budget's "robustness" is generalisation.

The source text's condition (2) on eps ("Adversarial Examples: Rethinking the Definition"): a
perturbation must not be able to carry a correctly classified image to a misclassified image of
the same class, or an attack at that eps can succeed without finding anything adversarial: the
model already gets that nearby image of the same digit wrong. Per norm and eps of the grid this
evaluator measures, against the misclassified and correctly classified images of the chosen
pool (``against``: the training split, the evaluation split, or both; predictions as the model
predicts, a stochastic model by its MC predictive):

* ``trivial_rate``: the share of evaluation points that are correctly classified and lie within
  eps of a misclassified image of their own class. That image is an adversarial example at eps
  that needs no attack, so any attack's robust accuracy at eps is at most ``robust_bound`` (the
  share correctly classified and not trivially broken, clean_acc - trivial_rate), a bound from
  the data alone that an attack reporting more has missed;
* ``mistakes_near_same_rate``: the share of the misclassified evaluation points within eps of a
  correctly classified image of their own class (the source text's x_correct -> x_false);
* ``mistakes_near_other_rate``: the share within eps of a correctly classified image of another
  class (a perturbation that size also changes the true class: condition (1)).

Distances are exact (float64, no matrix-product shortcut). Artifact ``trivial_nearest``: per
evaluation point and norm, its class, whether it is correctly classified, and its distance to
the nearest misclassified image of its class, correctly classified image of its class and
correctly classified image of another class among the other images of the pool (inf where
the pool has none).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import pyarrow as pa
import torch
from pydantic import Field, model_validator

from study.evaluators.distances import NORM_P
from study.registry import Entry, Evaluator
from study.spec.constraints import NormAxes, NormName, eps_bound
from study.train import predict


class Options(Entry):
    norms: Annotated[dict[NormName, NormAxes], Field(min_length=1)]  # the eps grid, as the robustness evaluator's
    against: Literal["train", "test", "both"] = "both"  # the pool of images a point's neighbours come from

    @model_validator(mode="after")
    def _bounded(self):
        for name, axes in self.norms.items():
            eps_bound(name, axes.eps, f"norms.{name}.eps")
        return self

    def uses_training_split(self) -> bool:
        return self.against != "test"

    def n_rows(self, linear_binary: bool = False) -> int:
        return sum(len(a.eps) for a in self.norms.values())


COLUMNS = (
    ("trivial_against", pa.string(), "evaluation", "trivial: the pool of neighbouring images (train, test or both splits)"),
    ("trivial_rate", pa.float64(), "metric", "trivial: share of evaluation points correctly classified and within eps of a misclassified image of their own class (an adversarial example that needs no attack)"),
    ("robust_bound", pa.float64(), "metric", "trivial: clean_acc - trivial_rate, the most robust accuracy any attack can report at this eps"),
    ("mistakes_near_same_rate", pa.float64(), "metric", "trivial: share of misclassified evaluation points within eps of a correctly classified image of their own class (null: no mistakes)"),
    ("mistakes_near_other_rate", pa.float64(), "metric", "trivial: share of misclassified evaluation points within eps of a correctly classified image of another class (null: no mistakes)"),
    ("n_mistakes", pa.int64(), "metric", "trivial: misclassified evaluation points"),
)


def nearest(x, y, pool_x, pool_y, pool_correct, norm: str, self_at: int | None = None, chunk: int = 256) -> torch.Tensor:
    """(3, N) float64: each point's distance under ``norm`` to the nearest other pool image that
    is misclassified and of its class, correctly classified and of its class, and correctly
    classified and of another class (inf where there is none). ``self_at``: where the points
    themselves start in the pool (they are no neighbours of their own). ``chunk`` points at a time."""
    p = NORM_P[norm]
    pool = pool_x.flatten(1).double()
    groups = (lambda same: same & ~pool_correct, lambda same: same & pool_correct, lambda same: ~same & pool_correct)
    out = []
    for start in range(0, len(x), chunk):
        rows, ys = x[start : start + chunk].flatten(1).double(), y[start : start + chunk]
        d = torch.cdist(rows, pool, p=p, compute_mode="donot_use_mm_for_euclid_dist")
        if self_at is not None:
            i = torch.arange(len(rows), device=d.device)
            d[i, self_at + start + i] = math.inf
        same = ys[:, None] == pool_y[None, :]
        out.append(torch.stack([d.masked_fill(~g(same), math.inf).amin(1) for g in groups]))
    return torch.cat(out, 1)


def evaluate(ctx, options: Options) -> list[dict]:
    correct = ctx.correct
    parts = {"train": (ctx.x_train, ctx.y_train, None), "test": (ctx.x, ctx.y, correct)}
    chosen = ("train", "test") if options.against == "both" else (options.against,)
    pool_x = torch.cat([parts[s][0] for s in chosen])
    pool_y = torch.cat([parts[s][1] for s in chosen])
    pool_correct = torch.cat([parts[s][2] if parts[s][2] is not None else predict(ctx.model, parts[s][0]) == parts[s][1] for s in chosen])
    self_at = len(ctx.y_train) if options.against == "both" else 0 if options.against == "test" else None
    n, wrong = len(ctx.y), ~correct
    rows, art = [], {k: [] for k in ("norm", "point", "class", "correct", "mistaken_same", "correct_same", "correct_other")}
    for norm, axes in options.norms.items():
        mistaken_same, correct_same, correct_other = nearest(ctx.x, ctx.y, pool_x, pool_y, pool_correct, norm, self_at).cpu()
        c, w = correct.cpu(), wrong.cpu()
        for eps in axes.eps:
            trivial = c & (mistaken_same <= eps)
            rows.append(dict(
                evaluator="trivial", norm=norm, eps=float(eps), trivial_against=options.against, n_eval=n, clean_acc=ctx.clean_acc,
                trivial_rate=trivial.double().mean().item(), robust_bound=(c & ~trivial).double().mean().item(), n_mistakes=int(w.sum()),
                mistakes_near_same_rate=(correct_same[w] <= eps).double().mean().item() if w.any() else None,
                mistakes_near_other_rate=(correct_other[w] <= eps).double().mean().item() if w.any() else None,
            ))
        art["norm"] += [norm] * n
        art["point"] += list(range(n))
        art["class"] += ctx.y.tolist()
        art["correct"] += correct.tolist()
        art["mistaken_same"] += mistaken_same.tolist()
        art["correct_same"] += correct_same.tolist()
        art["correct_other"] += correct_other.tolist()
    ctx.write_artifact("trivial_nearest", art)
    return rows



def table(rows, df):
    """Per model, norm and eps: the bound beside the robust accuracy the study's attacks reached
    there (``worst`` over each robustness entry's attacks, where it attacked at that eps)."""
    import polars as pl

    attacked = df.filter(pl.col("evaluator") == "robustness", pl.col("attack") == "worst", pl.col("eps_rule").is_null())
    attacked = attacked.group_by("trial_id", "norm", "eps").agg(pl.col("robust_acc").min().alias("attacked_acc"))
    return (
        rows.join(attacked, on=["trial_id", "norm", "eps"], how="left")
        .sort("label", "trivial_against", "norm", "eps")
        .select(
            "label", pl.col("trivial_against").alias("against"), "norm", "eps", pl.col("clean_acc").round(3), pl.col("trivial_rate").round(3),
            pl.col("robust_bound").round(3), pl.col("attacked_acc").round(3), pl.col("mistakes_near_same_rate").round(3).alias("mistakes_near_same"),
            pl.col("mistakes_near_other_rate").round(3).alias("mistakes_near_other"),
        )
    )


def chart(rows, df):
    """robust_bound and the attacks' robust accuracy against eps, one panel per norm."""
    import altair as alt

    data = table(rows, df).unpivot(index=["label", "against", "norm", "eps"], on=["robust_bound", "attacked_acc"], variable_name="measure", value_name="accuracy")
    data = data.drop_nulls("accuracy")
    base = alt.Chart(alt.Data(values=data.to_dicts())).mark_line(point=True).encode(
        x=alt.X("eps:Q"), y=alt.Y("accuracy:Q", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("label:N"), strokeDash=alt.StrokeDash("measure:N", sort=["robust_bound", "attacked_acc"]),
        tooltip=["label:N", "against:N", "eps:Q", "measure:N", alt.Tooltip("accuracy:Q", format=".3f")],
    ).properties(width=260, height=200)
    return base.facet(column=alt.Column("norm:N"), row=alt.Row("against:N")) if data.get_column("against").n_unique() > 1 else base.facet(column=alt.Column("norm:N"))


def report(rows, inputs) -> list[tuple]:
    what = (
        "The source text's condition (2): per eps, trivial_rate is the share of evaluation points that are correctly classified and lie within eps of a "
        "misclassified image of their own class (from the training and/or evaluation split, `against`): an adversarial example that needs no attack. "
        "So no attack can leave more robust accuracy than robust_bound = clean_acc - trivial_rate; attacked_acc is what the study's attacks left (worst "
        "case, where they ran at that eps). mistakes_near_same / mistakes_near_other: the share of misclassified points within eps of a correctly "
        "classified image of their own class / of another class."
    )
    return [
        ("Trivial adversaries: generalisation errors an eps can reach", what, table(rows, inputs.df)),
        ("trivial-bound", "Trivial adversaries: the bound beside the attacks", "robust_bound (from the data alone) and the robust accuracy the study's attacks left, per eps.", chart(rows, inputs.df)),
    ]


EVALUATOR = Evaluator(Options, evaluate, COLUMNS, report)
