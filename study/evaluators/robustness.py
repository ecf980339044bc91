"""Robustness: every attack x norm x eps, plus a `worst` row per (norm, eps).

Per (attack, norm), the whole epsilon grid is one batched attack over rows (point, eps): a row
stops when it is misclassified, and a point broken at eps_i is broken at every larger eps
(see study.attacks.gradient). Only points the model classifies correctly are attacked.
C&W is unbounded: its search runs once per model and is counted at every eps (any norm) its
adversarials fit. A stochastic (MC-dropout) model is attacked through its ``eot_samples``-draw
MC predictive (study.mc.attackable), without early stop (``attack_stochastic``), and a success
counts only where its own prediction is wrong.

With ``per_class_eps``, each class c is also attacked at its own eps_c (study.evaluators.
distances: a fraction of a quantile of its training images' distances to the nearest image of
another class), next to every point at one uniform eps with the same mean over the evaluated
points: the same total budget, spread by class or evenly.
"""

from __future__ import annotations

import dataclasses
import time

import torch

from study import attacks, mc, norms, objectives
from study.attacks.cw import CarliniWagnerL2
from study.attacks.gradient import AttackResult, frozen
from study.evaluators import distances
from study.norms import L2, Linf
from study.seeds import stream_seed
from study.train import predict


def evaluate(ctx, axes) -> list[dict]:
    x, y = ctx.x, ctx.y
    n = len(y)
    xc, yc = x[ctx.correct], y[ctx.correct]
    clean_acc = ctx.clean_acc
    stochastic = mc.is_stochastic(ctx.model)
    model = mc.attackable(ctx.model, axes.eot_samples)
    eot = dict(eot_samples=axes.eot_samples) if stochastic else {}
    searches = {}  # norm-free searches (C&W): run once, judged in every norm
    rows = []
    for norm_name, norm_axes in axes.norms.items():
        norm = norms.get(norm_name)
        grid = sorted(e for e in norm_axes.eps if e > 0)
        broken_by_any = torch.zeros(len(yc), len(grid), dtype=torch.bool)
        total_s = 0.0
        for attack_name in axes.attacks:
            attack = make_attack(attack_name, axes)
            gen = torch.Generator(device=x.device).manual_seed(stream_seed(ctx.seed, attack_name, norm_name))
            start = time.perf_counter()
            if isinstance(attack, CarliniWagnerL2):
                if attack_name not in searches:
                    searches[attack_name] = attack.closest(model, xc, yc, axes.batch_rows or default_batch_rows(x))
                fooled, deltas = judge(model, xc, yc, grid, norm, *searches[attack_name])
            elif stochastic:
                fooled, deltas = attack_stochastic(model, xc, yc, grid, norm, attack, gen, axes.batch_rows)
            else:
                fooled, deltas = attack_grid(model, xc, yc, grid, norm, attack, gen, axes.batch_rows)
            eval_s = time.perf_counter() - start
            total_s += eval_s
            broken_by_any |= fooled
            rows += _rows(norm_name, norm_axes.eps, grid, fooled, deltas, n, clean_acc, eval_s, {**attack_columns(attack), **eot})
        rows += _rows(norm_name, norm_axes.eps, grid, broken_by_any, None, n, clean_acc, total_s, dict(attack="worst", **eot))
    if axes.per_class_eps is not None:
        rows += per_class_eps(ctx, axes, model, xc, yc, stochastic, eot)
    return rows


def per_class_eps(ctx, axes, model, xc, yc, stochastic, eot) -> list[dict]:
    """Rows (and the ``class_eps_robustness`` artifact) of every attack at the per-class eps
    and at the uniform eps with the same mean, per norm and quantile."""
    pc = axes.per_class_eps
    n, n_classes = len(ctx.y), int(ctx.y_train.max()) + 1
    class_n = torch.bincount(ctx.y.cpu(), minlength=n_classes)
    art = {c: [] for c in ("norm", "quantile", "fraction", "attack", "class", "eps", "eps_uniform", "n", "acc_per_class", "acc_uniform")}
    rows = []
    for norm_name in pc.norms:
        norm = norms.get(norm_name)
        suggested = distances.class_eps(ctx.x_train, ctx.y_train, n_classes, norm_name, pc.per_class, pc.quantiles, pc.fraction, ctx.seed)
        for eps_c, q in zip(suggested.to(ctx.x.device, ctx.x.dtype), pc.quantiles):
            uniform = eps_c[ctx.y].mean()  # the same mean over the evaluated points
            rules = {"per-class": eps_c[yc], "uniform": uniform.expand(len(yc))}
            common = dict(eps=uniform.item(), eps_quantile=q, eps_fraction=pc.fraction, per_class=pc.per_class)
            broken = {rule: torch.zeros(len(yc), dtype=torch.bool) for rule in rules}
            by_attack = {}
            for attack_name in axes.attacks:
                attack = make_attack(attack_name, axes)
                for rule, eps in rules.items():
                    gen = torch.Generator(device=ctx.x.device).manual_seed(stream_seed(ctx.seed, attack_name, norm_name, "per-class-eps", q, rule))
                    start = time.perf_counter()
                    fooled, deltas = attack_points(model, xc, yc, eps, norm, attack, gen, stochastic, axes.batch_rows)
                    broken[rule] |= fooled[:, 0]
                    by_attack[attack_name, rule] = fooled[:, 0]
                    rows += _rows(norm_name, [1.0], [1.0], fooled, deltas, n, ctx.clean_acc, time.perf_counter() - start, {**attack_columns(attack), **eot}, {**common, "eps_rule": rule})
            for rule, fooled in broken.items():
                by_attack["worst", rule] = fooled
                rows += _rows(norm_name, [1.0], [1.0], fooled[:, None], None, n, ctx.clean_acc, None, dict(attack="worst", **eot), {**common, "eps_rule": rule})
            for attack_name in [*axes.attacks, "worst"]:
                acc = {rule: _class_accuracy(by_attack[attack_name, rule], yc, class_n) for rule in rules}
                for k in range(n_classes):
                    values = (norm_name, q, pc.fraction, attack_name, k, eps_c[k].item(), uniform.item(), int(class_n[k]), acc["per-class"][k], acc["uniform"][k])
                    for column, v in zip(art, values):
                        art[column].append(v)
    ctx.write_artifact("class_eps_robustness", art)
    return rows


def attack_points(model, x, y, eps, norm, attack, generator, stochastic, batch_rows=None):
    """Every point at its own radius ``eps`` (P,): ``fooled`` (P x 1) and ``deltas`` as
    ``attack_grid`` returns them."""
    if not len(y):
        return _nothing(0, 1)
    if stochastic:
        return attack_stochastic(model, x, y, [eps], norm, attack, generator, batch_rows)
    res = attack.run(model, x, y, eps[:, None], norm, generator=generator, max_rows=batch_rows or default_batch_rows(x))
    return _outcome(model, x, y, res)


def _class_accuracy(fooled, yc, class_n) -> list[float | None]:
    """Per class, robust accuracy over all its evaluation points (the attacked ones are those
    it classified correctly)."""
    survived = torch.bincount(yc[~fooled.to(yc.device)].cpu(), minlength=len(class_n))
    return [survived[k].item() / int(class_n[k]) if class_n[k] else None for k in range(len(class_n))]


def make_attack(name: str, axes):
    """The attack ``name`` with the evaluator's settings (C&W has its own, under ``cw``)."""
    if name == "cw":
        return attacks.make(name, **axes.cw.attack_options())
    return attacks.make(name, steps=axes.steps, step_size=axes.step_size, restarts=axes.restarts)


def attack_columns(attack) -> dict:
    cols = dict(attack=attack.name, steps=attack.steps, step_size=attack.step_size, restarts=attack.restarts)
    if isinstance(attack, CarliniWagnerL2):
        cols.update(kappa=attack.confidence, search_steps=attack.search_steps)
    return cols


def judge(model, x, y, grid, norm, x_best, found):
    """A norm-free search's closest adversarials (C&W) counted at every eps of ``grid`` they fit."""
    if not grid or not len(y):
        return _nothing(len(y), len(grid))
    res = CarliniWagnerL2.against(x, x_best, found, torch.tensor(grid, dtype=x.dtype, device=x.device).expand(len(y), len(grid)), norm)
    return _outcome(model, x, y, res)


def _outcome(model, x, y, res, verify=True):
    """``fooled`` (P x L) and, per point, the adversarial's L2 and Linf size and the model's
    confidence there. A stochastic model's successes are re-checked with its own prediction
    (study.mc.PREDICTION_SAMPLES draws): a success on the few draws of one attack query may not
    survive the full predictive."""
    fooled = res.fooled
    if verify and isinstance(model, mc.Predictive):
        fooled = fooled & (predict(model.model, res.x_adv) != y)[:, None]
    delta = res.x_adv - x
    return fooled.cpu(), {"l2": L2.measure(delta).cpu(), "linf": Linf.measure(delta).cpu(), "confidence": confidence(model, res.x_adv).cpu()}


def attack_stochastic(model, x, y, grid, norm, attack, generator, batch_rows=None):
    """``attack_grid`` for a stochastic model (``model``: its mc.Predictive). Early stop would end
    a point's attack on one lucky draw of the predictive, so every eps gets full attacks (each
    restart its own run), judged afterwards by the model's own prediction. A point fooled at some
    eps is not attacked at the larger ones: its adversarial lies in their balls and counts there.
    A grid entry may be a tensor of per-point radii (per-class eps)."""
    single = dataclasses.replace(attack, restarts=1)
    step = batch_rows or default_batch_rows(x)
    fooled = torch.zeros(len(y), len(grid), dtype=torch.bool, device=x.device)
    x_adv = x.clone()
    for j, eps in enumerate(grid):
        for _ in range(attack.restarts):
            todo = (~fooled[:, j]).nonzero().squeeze(1)
            for pts in todo.split(step):
                cand = single(model, x[pts], y[pts], eps[pts] if torch.is_tensor(eps) else eps, norm, generator=generator)
                hit = predict(model.model, cand) != y[pts]
                x_adv[pts[hit]] = cand[hit]
                fooled[pts[hit], j:] = True
    return _outcome(model, x, y, AttackResult(x_adv, fooled), verify=False)


def _nothing(n_points: int, n_levels: int):
    zeros = torch.zeros(n_points)
    return torch.zeros(n_points, n_levels, dtype=torch.bool), {"l2": zeros, "linf": zeros, "confidence": zeros}


def attack_grid(model, x, y, grid, norm, attack, generator, batch_rows=None):
    """Attack every point at every eps of ``grid`` (ascending) in one batched call.

    Returns ``fooled`` (P x L bool) and ``deltas`` ({'l2', 'linf'}: per point, the size of the
    adversarial counted at every eps where the point is fooled, and 'confidence': the model's
    probability of the class it predicts there). ``batch_rows`` (points in
    flight) defaults by device: on a CPU, batches that keep the activations in cache run about
    twice as fast per row as batches of thousands (benchmarks/attacks.py measures it); a GPU
    wants large batches.
    """
    if not grid or not len(y):
        return _nothing(len(y), len(grid))
    eps = torch.tensor(grid, dtype=x.dtype, device=x.device).expand(len(y), len(grid))
    res = attack.run(model, x, y, eps, norm, generator=generator, max_rows=batch_rows or default_batch_rows(x))
    return _outcome(model, x, y, res)


def default_batch_rows(x: torch.Tensor) -> int:
    return 16384 if x.is_cuda else 256


@torch.no_grad()
def confidence(model, x, batch: int = 4096) -> torch.Tensor:
    """The model's probability of the class it predicts, per point (study.objectives)."""
    with frozen(model):
        return torch.cat([objectives.probabilities(model, model(x[i : i + batch])).amax(1) for i in range(0, len(x), batch)])


def attack_each_eps_separately(model, x, y, grid, norm, attack, seed: int, batch_size: int | None = None):
    """The reference way (as with other attack libraries): a full attack at every eps on its
    own, keeping each final iterate, over batches of ``batch_size`` points (all at once when
    None). Every eps starts from a generator seeded with ``seed``, so in one batch its random
    starts are those ``attack_grid`` draws from the same seed. Returns ``fooled`` (P x L bool).
    Used by the benchmark and by the tests that check ``attack_grid`` is never weaker."""
    batch_size = batch_size or len(y)
    cols = []
    for eps in grid:
        generator = torch.Generator(device=x.device).manual_seed(seed)
        fooled = []
        for i in range(0, len(y), batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            x_adv = attack.run(model, xb, yb, eps, norm, early_stop=False, generator=generator).x_adv
            fooled.append((predict(model, x_adv) != yb).cpu())
        cols.append(torch.cat(fooled))
    return torch.stack(cols, dim=1)


def _rows(norm_name, eps_list, grid, fooled, deltas, n, clean_acc, eval_s, axes_cols, override=None):
    """One row per eps of ``eps_list``; ``override`` replaces columns (per-class eps rows, whose
    one 'eps' is a per-point radius)."""
    n_correct = fooled.shape[0]
    out = []
    for eps in sorted(eps_list):
        row = dict(evaluator="robustness", norm=norm_name, eps=float(eps), n_eval=n, clean_acc=clean_acc, eval_s=eval_s, **axes_cols)
        row.update(override or {})
        if eps == 0:
            row.update(robust_acc=clean_acc, success_rate=0.0)
        else:
            j = grid.index(eps)
            f = fooled[:, j]
            row.update(robust_acc=(n_correct - int(f.sum())) / n, success_rate=float(f.float().mean()) if n_correct else None)
            if deltas is not None and f.any():
                for name in ("l2", "linf"):
                    vals = deltas[name][f]
                    row[f"{name}_mean"] = float(vals.mean())
                    row[f"{name}_median"] = float(vals.median())
                row["adv_confidence_mean"] = float(deltas["confidence"][f].mean())
        out.append(row)
    return out
