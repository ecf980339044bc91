"""Epsilon measured in a metric-learned embedding (the source text's proposal), for models that
have one (``triplet``); other trials skip this evaluator.

* how well the embedding separates classes: 1-nearest-neighbour accuracy (evaluation images
  against the training images) and the within- and between-class distances of a per-class
  sample of training images (the same sampling as study.evaluators.distances);
* PGD in the embedding's threat model, ||e(x') - e(x)||_2 <= embed_eps, against the model's
  own classifier (study.attacks.embedding: projection by bisection along the perturbation), and
  how large those adversaries are in input space;
* input-space PGD at the usual radii (Linf 0.3, L2 4.5), its final iterates as a user would run
  it, and the fraction of its adversaries whose embedding stays inside each embed_eps ball.

``transfer`` (the study evaluator ``embedding-transfer``, run after the trials) does the last
two for every model of the study in every triplet embedding of it: a CNN's adversaries measured
by a metric it was not trained against.
"""

from __future__ import annotations

import time
from typing import Annotated, Optional

import pyarrow as pa
import torch
from pydantic import Field, model_validator

from study import attacks, norms
from study.attacks.embedding import EmbeddingPGD
from study.evaluators import distances
from study.evaluators.robustness import default_batch_rows
from study.norms import L2, Linf
from study.registry import Entry, Evaluator
from study.rng import PointRNG
from study.seeds import stream_seed
from study.spec.constraints import NormAxes, NormName, eps_bound
from study.train import predict
from study.types import Distinct, NotBool, PosFloat, PosInt


class _Attacks(Entry):
    """The attacks measured in a triplet embedding (study.evaluators.embedding)."""

    eps: Annotated[list[PosFloat], Field(min_length=1), Distinct] = [0.1, 0.25, 0.5, 1.0]  # embedding-space L2 radii (unit-norm embeddings: at most 2)
    steps: PosInt = 40  # embedding-space PGD iterations
    step_size: PosFloat = 0.01  # input-space sign step per iteration (absolute, pixels in [0, 1])
    bisection_steps: PosInt = 12  # halvings of the scale along the perturbation when a step leaves the ball
    input_attacks: Annotated[dict[NormName, NormAxes], Field(min_length=1)] = {"linf": NormAxes(eps=[0.3]), "l2": NormAxes(eps=[4.5])}
    input_steps: PosInt = 40  # PGD iterations of the input-space attacks

    @model_validator(mode="after")
    def _checks(self):
        for name, axes in self.input_attacks.items():
            eps_bound(name, axes.eps, f"input_attacks.{name}.eps")
        return self

    def pair_rows(self) -> int:
        """Rows per (embedding, attacked model): embedding-space PGD per eps, and per input
        attack and eps, its share inside each eps."""
        return len(self.eps) * (1 + sum(len(a.eps) for a in self.input_attacks.values()))


class Options(_Attacks):
    """Epsilon measured in a metric-learned embedding (models with one: triplet): nearest-neighbour
    accuracy, within- and between-class embedding distances, PGD constrained to
    ||e(x') - e(x)||_2 <= eps in embedding space (projection by bisection along the perturbation),
    and how many input-space PGD adversaries stay inside that ball, all against the model's own
    classifier: study.evaluators.embedding. Trials of models without an embedding skip it."""

    per_class: Annotated[int, NotBool, Field(ge=2)] = 100  # images per class for the distance distributions
    n_points: Optional[PosInt] = 500  # attack the first n evaluation points (all when null)

    def some_model_needs(self) -> frozenset[str]:
        return frozenset({"embedding"})  # models without one are skipped

    def uses_training_split(self) -> bool:
        return True  # 1-NN accuracy and distance distributions over training embeddings

    def n_rows(self, linear_binary: bool = False) -> int:
        return 1 + self.pair_rows()


class TransferOptions(_Attacks):
    """Every model of the study measured in every triplet embedding of it, run once after the
    trials (study.evaluators.embedding.transfer): each model attacked by PGD constrained to
    ||e(x') - e(x)||_2 <= eps in the embedding e, and each model's input-space PGD adversaries
    with the share that stays inside each embedding ball."""

    eps: Annotated[list[PosFloat], Field(min_length=1), Distinct] = [0.25, 0.5, 1.0]
    n_points: Optional[PosInt] = 200  # the first n evaluation points (all when null)

    scope = "study"

    def some_model_needs(self) -> frozenset[str]:
        return frozenset({"embedding"})

    def n_rows(self, linear_binary: bool = False) -> int:
        return 0  # its rows are written after the trials

    def study_rows(self, capabilities: list[frozenset[str]]) -> int:
        embeddings = sum("embedding" in c for c in capabilities)
        return embeddings * len(capabilities) * self.pair_rows()  # every (embedding, model) pair


HIST_BINS = 80  # over [0, 2]: distances between unit vectors


@torch.no_grad()
def embeddings(embed, x, batch: int = 4096) -> torch.Tensor:
    """``embed`` (a model's embedding function) over ``x`` in batches."""
    return torch.cat([embed(x[i : i + batch]) for i in range(0, len(x), batch)]) if len(x) else embed(x)


def knn_accuracy(e_query, y_query, e_ref, y_ref, batch: int = 1024) -> float:
    """1-nearest-neighbour accuracy (Euclidean) of the queries against the reference set."""
    nearest = torch.cat([torch.cdist(e_query[i : i + batch], e_ref).argmin(1) for i in range(0, len(e_query), batch)])
    return (y_ref[nearest] == y_query).float().mean().item()


def evaluate(ctx, axes) -> list[dict]:
    model = ctx.model
    start = time.perf_counter()
    n_classes = ctx.n_classes
    e_train = embeddings(model.embed, ctx.x_train)
    knn = knn_accuracy(embeddings(model.embed, ctx.x), ctx.y, e_train, ctx.y_train)

    idx = distances.sample(ctx.y_train, axes.per_class, stream_seed(ctx.seed, "embedding", axes.per_class), n_classes)
    es, ys = e_train[idx], ctx.y_train[idx]
    d = distances.pairwise(es, es, "l2")
    matrix = distances.class_matrix(d, ys, n_classes)
    _write_distances(ctx, d, ys, matrix)
    off = ~torch.eye(n_classes, dtype=torch.bool)
    rows = [dict(
        evaluator="embedding", per_class=axes.per_class, n_eval=len(ctx.y), clean_acc=ctx.clean_acc, knn_acc=knn,
        within_mean=matrix.diagonal().mean().item(), between_mean=matrix[off].mean().item(), eval_s=time.perf_counter() - start,
    )]

    n = axes.n_points or len(ctx.y)
    keep = ctx.correct[:n]
    adversaries = {c: [] for c in ADVERSARY_COLUMNS}
    rows += attack_rows(model, model.embed, ctx.x[:n][keep], ctx.y[:n][keep], keep.nonzero().squeeze(1).cpu(), n, axes, ctx.seed, adversaries)
    for row in rows[1:]:
        row.update(evaluator="embedding", clean_acc=ctx.clean_acc)
    ctx.write_artifact("embedding_adversaries", adversaries)
    return rows


def transfer(ctx, axes: TransferOptions) -> list[dict]:
    """The study evaluator ``embedding-transfer``: every model of the study attacked and
    measured in every model's embedding. One set of rows per (embedding, model) pair; the row's
    trial is the attacked model's, ``source_trial_id`` the embedding's."""
    members, seed = ctx.members, ctx.seed
    n = axes.n_points or len(ctx.y)
    x, y = ctx.x[:n], ctx.y[:n]
    rows = []
    for metric in [m for m in members if hasattr(m.model, "embed")]:
        for target in members:
            correct = predict(target.model, x) == y
            pair = attack_rows(target.model, metric.model.embed, x[correct], y[correct], correct.nonzero().squeeze(1).cpu(), n, axes, stream_seed(seed, metric.trial_id))
            for row in pair:
                row.update(
                    evaluator="embedding-transfer", trial_id=target.trial_id, source_trial_id=metric.trial_id, source_label=metric.label,
                    clean_acc=correct.float().mean().item(),
                )
            rows += pair
    return rows


ADVERSARY_COLUMNS = ("attack", "norm", "eps", "embed_eps", "point", "fooled", "embed_dist", "l2", "linf")


def attack_rows(model, embed, xc, yc, points, n, axes, seed: int, adversaries: dict | None = None) -> list[dict]:
    """``model`` attacked at its correctly classified points ``xc`` (their evaluation indices
    ``points``, of ``n``) with the threat model measured by ``embed``: PGD constrained in the
    embedding per embed_eps, and input-space PGD per (norm, eps) with the share of its
    adversaries inside each embed_eps. Per-point outcomes go to ``adversaries`` when given."""
    max_rows = default_batch_rows(xc)
    rows = []

    def record(attack, norm, eps, embed_eps, fooled, dist, delta):
        if adversaries is None:
            return
        for c, v in (("attack", attack), ("norm", norm), ("eps", eps), ("embed_eps", embed_eps)):
            adversaries[c] += [v] * len(points)
        adversaries["point"] += points.tolist()
        adversaries["fooled"] += fooled.cpu().tolist()
        adversaries["embed_dist"] += dist.cpu().tolist()
        adversaries["l2"] += L2.measure(delta).cpu().tolist()
        adversaries["linf"] += Linf.measure(delta).cpu().tolist()

    pgd = EmbeddingPGD(axes.steps, axes.step_size, axes.bisection_steps)
    for embed_eps in sorted(axes.eps):
        t = time.perf_counter()
        res = pgd.run(model, embed, xc, yc, embed_eps, max_rows)
        delta = res.x_adv - xc
        record("embedding-pgd", None, None, embed_eps, res.fooled, res.dist, delta)
        rows.append(dict(
            attack="embedding-pgd", embed_eps=embed_eps, steps=axes.steps, step_size=axes.step_size,
            **_outcome(res.fooled, res.dist, delta, n), n_eval=n, eval_s=time.perf_counter() - t,
        ))

    e_clean = embeddings(embed, xc)
    for norm_name, norm_axes in axes.input_attacks.items():
        attack = attacks.make("pgd", steps=axes.input_steps)
        for eps in sorted(norm_axes.eps):
            t = time.perf_counter()
            rng = PointRNG(stream_seed(seed, "embedding", norm_name, eps), points.to(xc.device))
            x_adv = torch.cat([attack(model, xc[i : i + max_rows], yc[i : i + max_rows], eps, norms.get(norm_name), rng=rng[i : i + max_rows]) for i in range(0, len(yc), max_rows)]) if len(yc) else xc
            fooled = predict(model, x_adv) != yc
            dist = (embeddings(embed, x_adv) - e_clean).norm(dim=1)
            delta = x_adv - xc
            record("pgd", norm_name, eps, None, fooled, dist, delta)
            outcome = _outcome(fooled, dist, delta, n)
            for embed_eps in sorted(axes.eps):
                inside = (dist[fooled] <= embed_eps).float().mean().item() if fooled.any() else None
                rows.append(dict(
                    attack="pgd", norm=norm_name, eps=float(eps), embed_eps=embed_eps, steps=attack.steps, step_size=attack.step_size,
                    restarts=attack.restarts, inside_rate=inside, **outcome, n_eval=n, eval_s=time.perf_counter() - t,
                ))
    return rows


def _outcome(fooled, dist, delta, n) -> dict:
    """Accuracy over all n points (those attacked are the correct ones) and the sizes of the
    successful adversaries, in the embedding and in input space."""
    out = dict(robust_acc=(len(fooled) - int(fooled.sum())) / n, success_rate=fooled.float().mean().item() if len(fooled) else None)
    if fooled.any():
        out.update(
            embed_dist_mean=dist[fooled].mean().item(),
            l2_mean=L2.measure(delta[fooled]).mean().item(),
            linf_mean=Linf.measure(delta[fooled]).mean().item(),
        )
    return out


def _write_distances(ctx, d, ys, matrix) -> None:
    """The embedding's class x class mean distances and the histograms of its within- and
    between-class pairwise distances (i != j)."""
    n_classes = len(matrix)
    ctx.write_artifact("embedding_class_distances", {
        "class_a": [a for a in range(n_classes) for _ in range(n_classes)],
        "class_b": [b for _ in range(n_classes) for b in range(n_classes)],
        "mean": matrix.flatten().tolist(),
    })
    same = ys[:, None] == ys[None, :]
    pairs = torch.triu(torch.ones_like(same), diagonal=1)
    edges = torch.linspace(0, 2, HIST_BINS + 1, dtype=torch.float64)
    cols = {"kind": [], "bin_lo": [], "bin_hi": [], "count": []}
    for kind, mask in (("within", same & pairs), ("between", ~same & pairs)):
        counts = torch.histc(d[mask].clamp(0, 2), bins=HIST_BINS, min=0, max=2)
        cols["kind"] += [kind] * HIST_BINS
        cols["bin_lo"] += edges[:-1].tolist()
        cols["bin_hi"] += edges[1:].tolist()
        cols["count"] += counts.long().tolist()
    ctx.write_artifact("embedding_distances", cols)


COLUMNS = (
    ("knn_acc", pa.float64(), "metric", "embedding: 1-nearest-neighbour accuracy in the embedding (evaluation images against the training images)"),
    ("inside_rate", pa.float64(), "metric", "embedding: fraction of the input-space adversaries (attack, norm, eps) whose embedding stays within embed_eps of the clean point's"),
    ("embed_dist_mean", pa.float64(), "metric", "embedding: mean ||e(x_adv) - e(x)||_2 of the successful adversaries"),
)
EVALUATOR = Evaluator(Options, evaluate, COLUMNS, report="analysis.report:embedding_section")
TRANSFER = Evaluator(TransferOptions, transfer, COLUMNS, report="analysis.report:embedding_transfer_section")
