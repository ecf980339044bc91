"""Uncertainty of an MC-dropout model on clean and adversarial inputs (Smith & Gal 2018).

The evaluation images split in two: the first ``baseline`` are a separate clean baseline set;
the rest are the input sets' source points. Input sets: ``clean`` (those points as they are)
and, per configured attack and eps, every point attacked (study.evaluators.inputs: the attack's
final iterate, C&W's closest adversarial, or a natural adversary from the generator's latent
space; points already misclassified are attacked too, as a detector would see them). Attacks
query the model through its ``eot_samples``-draw predictive (study.mc).

Each set's T_max = max(mc_samples) predictive samples are drawn once, in groups of ``GROUP``
each seeded by the set and the group (so are the set's crafted points), and a row for T uses the
first T of them, so the T sweep shows how the estimates settle as samples are added. Per
(set, T): accuracy of the T-sample predictive, mean and median MI, mean SMV, both relative to
the baseline set's mean at the same T, and the AUROC of MI and of SMV separating the clean
points from the set, with DeLong standard errors. The ``uncertainty`` artifact keeps every
point's MI and SMV at T_max (baseline included) for their distributions.
"""

from __future__ import annotations

import json
import math
import time
from typing import Annotated, Optional

import numpy as np
import pyarrow as pa
import torch
from pydantic import Field
from scipy.stats import rankdata

from study import mc, norms
from study.evaluators import inputs
from study.registry import Entry, Evaluator
from study.seeds import stream_seed
from study.spec.evaluation import InputSet
from study.types import Distinct, PosInt


class Options(Entry):
    """MC-dropout uncertainty (study.evaluators.uncertainty): per input set (clean, and each
    attack at each eps) and per number of MC samples T: accuracy, mutual information, softmax
    variance, their ratio to a separate clean baseline set, and clean-vs-adversarial detection
    AUROC by each."""

    mc_samples: Annotated[list[PosInt], Field(min_length=1), Distinct] = [1, 2, 5, 10, 20, 50, 100]
    inputs: list[InputSet] = []
    baseline: PosInt = 300  # the first `baseline` evaluation images: the separate clean baseline set
    eot_samples: PosInt = 10  # MC samples per attack query (expectation over transformation)
    max_rows: Optional[PosInt] = None  # rows (input x sample) per MC forward pass; null: 256 on CPU, 16384 on GPU

    def every_model_needs(self) -> frozenset[str]:
        return frozenset({"stochastic"})

    def uses_training_split(self) -> bool:
        return any(s.name == "natural" for s in self.inputs)  # the generative model trains on it

    def uses_generative(self) -> bool:
        return any(s.name == "natural" for s in self.inputs)

    def attack_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    def data_problem(self, n_eval: int, n_classes: int) -> str | None:
        if self.baseline >= n_eval:
            return f"baseline: {self.baseline} baseline images leave none of the {n_eval} evaluation images to attack (lower baseline or raise data.n_eval)"
        return None

    def n_rows(self, linear_binary: bool = False) -> int:
        return (1 + sum(s.n_sets() for s in self.inputs)) * len(self.mc_samples)


def evaluate(ctx, axes) -> list[dict]:
    model = ctx.model
    base_x = ctx.x[: axes.baseline]
    x, y = ctx.x[axes.baseline :], ctx.y[axes.baseline :]
    t_max = max(axes.mc_samples)
    attacked = mc.attackable(model, axes.eot_samples)
    draw = _Draws(ctx, axes)
    with torch.random.fork_rng(devices=[]):
        baseline = _scores(draw.samples("baseline", base_x, t_max)[0], axes.mc_samples, y=None)
        probs, sample_s = draw.samples("clean", x, t_max)
        clean = _scores(probs, axes.mc_samples, y)
        sets = [(dict(attack="clean", eps=0.0), x, clean, sample_s)]
        for spec in axes.inputs:
            for one in [spec] if spec.eps is None else [spec.model_copy(update={"eps": [e]}) for e in spec.eps]:
                tag = json.dumps([one.model_dump(mode="json"), axes.eot_samples], sort_keys=True)
                (x_adv, cols, craft_s) = draw.crafted(tag, attacked, x, y, one)
                probs, sample_s = draw.samples(tag, x_adv, t_max)
                sets.append((cols, x_adv, _scores(probs, axes.mc_samples, y), craft_s + sample_s))
    _write_points(ctx, sets, baseline[t_max], t_max)
    rows = []
    for cols, xs, scores, eval_s in sets:
        size = _sizes(xs - x, scores[t_max]["wrong"]) if cols["attack"] != "clean" else {}
        for t in axes.mc_samples:
            s, b, c = scores[t], baseline[t], clean[t]
            row = dict(
                evaluator="uncertainty",
                **cols,
                mc_samples=t,
                eot_samples=axes.eot_samples if cols["attack"] != "clean" else None,
                n_eval=len(y),
                n_baseline=len(base_x),
                clean_acc=1 - c["wrong"].float().mean().item(),
                robust_acc=1 - s["wrong"].float().mean().item(),
                mi_mean=s["mi"].mean().item(),
                mi_median=s["mi"].median().item(),
                smv_mean=s["smv"].mean().item(),
                mi_rel=_ratio(s["mi"].mean().item(), b["mi"].mean().item()),
                smv_rel=_ratio(s["smv"].mean().item(), b["smv"].mean().item()),
                eval_s=eval_s,
                **size,
            )
            if cols["attack"] != "clean":
                row["auroc_mi"], row["auroc_mi_se"] = auroc(c["mi"].numpy(), s["mi"].numpy())
                row["auroc_smv"], row["auroc_smv_se"] = auroc(c["smv"].numpy(), s["smv"].numpy())
            rows.append(row)
    return rows


GROUP = 10  # MC samples per seeded draw: sample t's dropout masks come from group t // GROUP's seed


class _Draws:
    """Every input set's crafted points and MC samples, each seeded on its own (the set and the
    group of samples), so a set does not depend on the others or on T_max: through the trial's
    evaluation store (``ctx.cache``), a new set, attack or eps crafts only itself, and a larger
    T_max draws only the samples beyond those stored."""

    def __init__(self, ctx, axes):
        self.ctx, self.axes = ctx, axes
        self.cache = getattr(ctx, "cache", None)
        # What every set's numbers depend on besides its own identity (the split, the chunking).
        self.common = [axes.baseline, axes.max_rows or (16384 if ctx.x.is_cuda else 256)]

    def _stored(self, kind: str, tag: str):
        if self.cache is None:
            return None, None
        key = self.cache.key("runs", "uncertainty", kind, self.common, tag)
        return key, None if self.cache.fresh else self.cache.store.load_run(key)

    def samples(self, tag: str, x: torch.Tensor, t_max: int) -> tuple[torch.Tensor, float]:
        """(N, T, C) probabilities, T = t_max rounded up to whole groups, and the seconds spent."""
        start = time.perf_counter()
        key, found = self._stored("samples", tag)
        have = torch.from_numpy(found["probs"]).to(x.device) if found is not None else x.new_zeros((len(x), 0, 0))
        groups = [have] if have.shape[1] else []
        for g in range(have.shape[1] // GROUP, math.ceil(t_max / GROUP)):
            torch.manual_seed(stream_seed(self.ctx.seed, "uncertainty", tag, "samples", g))
            groups.append(mc.sample_probs(self.ctx.model, x, GROUP, self.common[1]))
        probs = torch.cat(groups, 1) if len(groups) > 1 else groups[0]
        if key is not None and probs.shape[1] > have.shape[1]:
            self.cache.store.save_run(key, {"probs": probs.cpu().numpy()})
            self.cache.count("runs_computed")
        elif key is not None:
            self.cache.count("runs_reused")
        return probs, time.perf_counter() - start

    def crafted(self, tag: str, model, x, y, spec) -> tuple[torch.Tensor, dict, float]:
        """One input set of ``spec`` (one eps): its points, row columns and crafting seconds."""
        key, found = self._stored("crafted", tag)
        if found is not None:
            self.cache.count("runs_reused")
            return torch.from_numpy(found["x"]).to(x.device), json.loads(str(found["cols"])), float(found["seconds"])
        torch.manual_seed(stream_seed(self.ctx.seed, "uncertainty", tag, "craft"))  # the dropout masks while attacking
        ((eps, x_adv, cols, craft_s),) = inputs.craft(model, x, y, spec, self.ctx.seed, "uncertainty", self.ctx.generative)
        cols = {**cols, "eps": eps}
        if key is not None:
            self.cache.store.save_run(key, {"x": x_adv.cpu().numpy(), "cols": np.array(json.dumps(cols)), "seconds": np.array(craft_s)})
            self.cache.count("runs_computed")
        return x_adv, cols, craft_s


def _write_points(ctx, sets, baseline: dict, t_max: int) -> None:
    """The ``uncertainty`` artifact: MI and SMV of every point of every set (and of the
    baseline set) at T_max, for their distributions."""
    parts = [("baseline", None, baseline["mi"], baseline["smv"], torch.zeros_like(baseline["mi"], dtype=torch.bool))]
    parts += [(cols["attack"], cols["eps"], s[t_max]["mi"], s[t_max]["smv"], s[t_max]["wrong"]) for cols, _, s, _ in sets]
    columns = {"input_set": [], "eps": [], "point": [], "mi": [], "smv": [], "wrong": []}
    for name, eps, mi, smv, wrong in parts:
        columns["input_set"] += [name] * len(mi)
        columns["eps"] += [eps] * len(mi)
        columns["point"] += list(range(len(mi)))
        columns["mi"] += mi.tolist()
        columns["smv"] += smv.tolist()
        columns["wrong"] += wrong.tolist()
    columns["mc_samples"] = [t_max] * len(columns["point"])
    ctx.write_artifact("uncertainty", columns)


def _scores(probs: torch.Tensor, mc_samples, y) -> dict:
    """Per T: MI and SMV per point from the first T samples, and which points the T-sample
    predictive gets wrong."""
    out = {}
    for t in mc_samples:
        p = probs[:, :t]
        out[t] = {"mi": mc.mutual_information(p).cpu(), "smv": mc.softmax_variance(p).cpu()}
        if y is not None:
            out[t]["wrong"] = (p.mean(1).argmax(1) != y).cpu()
    return out


def _sizes(delta: torch.Tensor, fooled: torch.Tensor) -> dict:
    """Perturbation sizes over the points the set fools (as the robustness rows report them)."""
    fooled = fooled.to(delta.device)
    if not fooled.any():
        return {}
    return norms.sizes(delta[fooled])


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def auroc(negatives: np.ndarray, positives: np.ndarray) -> tuple[float, float]:
    """(AUROC, DeLong standard error) of a score separating positives from negatives: the
    probability that a random positive scores above a random negative, ties counting one half
    (DeLong, DeLong & Clarke-Pearson 1988, with midranks)."""
    m, n = len(positives), len(negatives)
    ranks = rankdata(np.concatenate([positives, negatives]))
    pos_ranks, neg_ranks = ranks[:m], ranks[m:]
    # Per positive: the fraction of negatives below it; per negative: the fraction of positives above.
    v_pos = (pos_ranks - rankdata(positives)) / n
    v_neg = 1 - (neg_ranks - rankdata(negatives)) / m
    auc = float(v_pos.mean())
    var = v_pos.var(ddof=1) / m + v_neg.var(ddof=1) / n if m > 1 and n > 1 else math.nan
    return auc, float(math.sqrt(var))


COLUMNS = (
    ("n_baseline", pa.int64(), "metric", "uncertainty: images in the separate clean baseline set (the first evaluation images; the input sets use the rest)"),
    ("mi_mean", pa.float64(), "metric", "uncertainty: mean mutual information H[mean_t p_t] - mean_t H[p_t] over the input set (nats)"),
    ("mi_median", pa.float64(), "metric", "uncertainty: median mutual information"),
    ("smv_mean", pa.float64(), "metric", "uncertainty: mean softmax variance sum_c var_t p_t(c) (population variance over the T samples)"),
    ("mi_rel", pa.float64(), "metric", "uncertainty: mi_mean / the clean baseline set's mean MI at the same T (null when that is 0)"),
    ("smv_rel", pa.float64(), "metric", "uncertainty: smv_mean / the clean baseline set's mean SMV at the same T"),
    ("auroc_mi", pa.float64(), "metric", "uncertainty: AUROC of MI separating this input set from the clean inputs of the same points (0.5: no better than chance)"),
    ("auroc_mi_se", pa.float64(), "metric", "uncertainty: standard error of auroc_mi (DeLong)"),
    ("auroc_smv", pa.float64(), "metric", "uncertainty: AUROC of SMV, clean vs this input set"),
    ("auroc_smv_se", pa.float64(), "metric", "uncertainty: standard error of auroc_smv (DeLong)"),
)
EVALUATOR = Evaluator(Options, evaluate, COLUMNS, report="analysis.report:uncertainty_section")
