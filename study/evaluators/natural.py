"""Natural adversaries (Zhao, Dua & Singh 2018): latent-space searches against the trial's model.

For the correctly classified points among the first ``n_points``: z0 = I(x), then each search
(kind x samples per round x dr) runs once to the largest round budget and is read after every
budget (study.attacks.latent), so success is non-decreasing in the budget. Per budget: success
rate, the latent distance ||z* - z0|| of the adversaries found, the classifier queries spent per
point, and the input-space L2 / Linf of G(z*) - x and of G(z*) - G(I(x)) (how far the adversary
is from the point's own reconstruction: the change the search made, without the generator's
reconstruction error), and ``recon_acc``, the accuracy on the reconstructions G(I(x)) (a point
whose reconstruction is misclassified is an adversary at latent distance 0). The model is only
queried for labels (black-box).

Artifacts (``point``: the evaluation index, so models pair up): ``natural`` (per searched point
at the largest budget: found, latent distance, queries) and ``natural_images`` (the first
``examples`` searched points: x, G(I(x)) and the adversary, as pixels).
"""

from __future__ import annotations

import itertools
import time
from typing import Annotated, Literal, Optional

import pyarrow as pa
import torch
from pydantic import Field, model_validator

from study import norms
from study.attacks.latent import LatentResult, LatentSearch
from study.names import LATENT_KINDS
from study.norms import L2, Linf
from study.registry import Entry, Evaluator
from study.seeds import stream_seed
from study.spec.evaluation import LatentSearchSpec
from study.train import predict
from study.types import Distinct, NotBool, PosFloat, PosInt


class Options(Entry):
    """Natural adversaries (study.evaluators.natural): latent-space searches around I(x) for the
    correctly classified points, per search kind x samples per round x dr x round budget."""

    search: Annotated[list[Literal[LATENT_KINDS]], Field(min_length=1), Distinct] = list(LATENT_KINDS)
    samples: Annotated[list[PosInt], Field(min_length=1), Distinct] = [64]
    rounds: Annotated[list[PosInt], Field(min_length=1), Distinct] = [1, 3, 10, 30, 100]  # budgets: one search, stopped after each
    dr: Annotated[list[PosFloat], Field(min_length=1), Distinct] = [0.1]
    h0: PosFloat = 10.0  # hybrid: the first coarse range
    stop: PosInt = 5  # hybrid: rounds without improvement that end a phase
    n_points: Optional[PosInt] = 200  # search from the first n evaluation points (all when null)
    examples: Annotated[int, NotBool, Field(ge=0, le=16)] = 8  # points kept as images (x, G(I(x)), adversary)

    @model_validator(mode="after")
    def _checks(self):
        for i, dr in enumerate(self.dr):
            if self.h0 <= dr and "hybrid" in self.search:
                raise ValueError(f"dr[{i}]: must be < h0 ({self.h0:g}) for the hybrid search")
        return self

    def searches(self):
        """One LatentSearchSpec per (kind, samples, dr), run to the largest budget."""
        for kind, n, dr in itertools.product(self.search, self.samples, self.dr):
            yield LatentSearchSpec(kind=kind, samples=n, rounds=max(self.rounds), dr=dr, h0=self.h0, stop=self.stop)

    def uses_training_split(self) -> bool:
        return True  # the generative model trains on it

    def uses_generative(self) -> bool:
        return True

    def n_rows(self, linear_binary: bool = False) -> int:
        return len(self.search) * len(self.samples) * len(self.dr) * len(self.rounds)


def search(classify, generative, x, y, spec, seed: int, budgets=None, max_rows: int = 4096) -> dict[int, LatentResult]:
    """Run one latent search (a LatentSearchSpec) from I(x) for points labelled ``y``."""
    gen = torch.Generator(device=x.device).manual_seed(stream_seed(seed, "natural", spec.kind, spec.samples, spec.dr))
    latent = LatentSearch(**spec.model_dump())
    return latent.run(classify, generative.generate, generative.invert(x), y, generator=gen, budgets=budgets, max_rows=max_rows)


def adversaries(classify, generative, x, y, spec, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, found) for an input set: G(z*) where the search found an adversary, else the
    reconstruction G(I(x)), the closest natural image to x the search starts from."""
    res = search(classify, generative, x, y, spec, seed)[spec.rounds]
    return generative.generate(res.z), res.found


def evaluate(ctx, axes) -> list[dict]:
    g = ctx.generative
    n = min(axes.n_points or len(ctx.y), len(ctx.y))
    correct = ctx.correct[:n]
    index = correct.nonzero().squeeze(1).tolist()  # the searched points' evaluation indices: artifacts pair across models
    x, y = ctx.x[:n][correct], ctx.y[:n][correct]
    recon_all = g.reconstruct(ctx.x[:n])
    recon = recon_all[correct]
    # Points whose reconstruction the model already gets wrong are adversaries at latent distance 0.
    recon_acc = (predict(ctx.model, recon_all) == ctx.y[:n]).float().mean().item()
    classify = lambda inputs: predict(ctx.model, inputs)  # noqa: E731 -- the black box: labels only
    rows, finals = [], []
    for spec in axes.searches():
        start = time.perf_counter()
        snaps = search(classify, g, x, y, spec, ctx.seed, budgets=sorted(axes.rounds))
        eval_s = time.perf_counter() - start
        for r, res in snaps.items():
            rows.append(dict(
                evaluator="natural",
                attack="natural",
                latent_search=spec.kind,
                latent_samples=spec.samples,
                latent_rounds=r,
                latent_dr=spec.dr,
                n_eval=n,
                clean_acc=correct.float().mean().item(),
                recon_acc=recon_acc,
                robust_acc=(len(y) - res.found.sum().item()) / n,
                success_rate=res.success_rate if len(y) else None,
                **_distances(g, res, x, recon),
                queries_mean=res.queries.float().mean().item() if len(y) else None,
                queries_median=res.queries.float().median().item() if len(y) else None,
                eval_s=eval_s,
            ))
        finals.append((spec, snaps[spec.rounds]))
    _write_points(ctx, finals, index)
    _write_images(ctx, axes.examples, x, y, recon, finals, g, index)
    return rows


def _distances(g, res: LatentResult, x, recon) -> dict:
    if not res.found.any():
        return {}
    found = res.found.to(x.device)
    x_nat = g.generate(res.z[found])
    dist = res.dist[res.found]
    to_x, to_recon = (x_nat - x[found]), (x_nat - recon[found])
    return dict(
        latent_dist_mean=dist.mean().item(),
        latent_dist_median=dist.median().item(),
        **norms.sizes(to_x),
        recon_l2_mean=L2.measure(to_recon).mean().item(),
        recon_linf_mean=Linf.measure(to_recon).mean().item(),
    )


def _write_points(ctx, searches, index: list[int]) -> None:
    cols = {k: [] for k in ("latent_search", "latent_samples", "latent_dr", "latent_rounds", "point", "found", "latent_dist", "queries")}
    for spec, res in searches:
        k = len(res.found)
        cols["latent_search"] += [spec.kind] * k
        cols["latent_samples"] += [spec.samples] * k
        cols["latent_dr"] += [spec.dr] * k
        cols["latent_rounds"] += [spec.rounds] * k
        cols["point"] += index
        cols["found"] += res.found.tolist()
        cols["latent_dist"] += [None if d != d else d for d in res.dist.tolist()]  # nan: not found
        cols["queries"] += res.queries.tolist()
    ctx.write_artifact("natural", cols)


def _write_images(ctx, k: int, x, y, recon, searches, g, index: list[int]) -> None:
    """x, G(I(x)) and the adversary G(z*) of the first ``k`` points, per search kind (its first
    samples/dr setting, at the largest budget), with the model's prediction on each."""
    k = min(k, len(y))
    if not k:
        return
    channels, height, width = x.shape[1:]
    cols = {c: [] for c in ("latent_search", "point", "kind", "pixels", "label", "pred", "latent_dist", "channels", "height", "width")}
    seen = set()
    for spec, res in searches:
        if spec.kind in seen:
            continue
        seen.add(spec.kind)
        found = res.found[:k].to(x.device)
        adv = torch.where(found[:, None, None, None], g.generate(res.z[:k]), torch.full_like(x[:k], float("nan")))
        for kind, imgs in (("x", x[:k]), ("reconstruction", recon[:k]), ("natural", adv)):
            preds = predict(ctx.model, torch.nan_to_num(imgs)).tolist()
            for i in range(k):
                cols["latent_search"].append(spec.kind)
                cols["point"].append(index[i])
                cols["kind"].append(kind)
                cols["pixels"].append(imgs[i].flatten().cpu().tolist())
                cols["label"].append(int(y[i]))
                cols["pred"].append(None if kind == "natural" and not found[i] else preds[i])
                d = res.dist[i].item()
                cols["latent_dist"].append(d if kind == "natural" and d == d else None)
                cols["channels"].append(channels)
                cols["height"].append(height)
                cols["width"].append(width)
    ctx.write_artifact("natural_images", cols)


COLUMNS = (
    ("latent_dist_mean", pa.float64(), "metric", "natural: mean ||z* - I(x)||_2 of the adversaries found (latent space); unrestricted: mean ||z* - z0||_2 of the successes"),
    ("latent_dist_median", pa.float64(), "metric", "natural: median latent distance"),
    ("recon_l2_mean", pa.float64(), "metric", "natural: mean L2 of G(z*) - G(I(x)), the adversary's distance from the point's own reconstruction (`l2_mean` is from x)"),
    ("recon_linf_mean", pa.float64(), "metric", "natural: mean Linf of G(z*) - G(I(x))"),
)
EVALUATOR = Evaluator(Options, evaluate, COLUMNS, report="analysis.report:natural_section")
