"""Robustness: every attack x norm x eps, plus a `worst` row per (norm, eps).

Per (attack, norm), the whole epsilon grid is one batched attack over rows (point, eps): a row
stops when it is misclassified, and a point broken at eps_i is broken at every larger eps
(see study.attacks.gradient). Only points the model classifies correctly are attacked.
"""

from __future__ import annotations

import hashlib
import time

import torch

from study import attacks, norms, objectives
from study.attacks.gradient import frozen
from study.norms import L2, Linf
from study.train import predict


def evaluate(ctx, axes) -> list[dict]:
    model, x, y = ctx.model, ctx.x, ctx.y
    n = len(y)
    xc, yc = x[ctx.correct], y[ctx.correct]
    clean_acc = ctx.clean_acc
    rows = []
    for norm_name, norm_axes in axes.norms.items():
        norm = norms.get(norm_name)
        grid = sorted(e for e in norm_axes.eps if e > 0)
        broken_by_any = torch.zeros(len(yc), len(grid), dtype=torch.bool)
        total_s = 0.0
        for attack_name in axes.attacks:
            attack = attacks.make(attack_name, steps=axes.steps, step_size=axes.step_size, restarts=axes.restarts)
            gen = torch.Generator(device=x.device).manual_seed(stream_seed(ctx.seed, attack_name, norm_name))
            start = time.perf_counter()
            fooled, deltas = attack_grid(model, xc, yc, grid, norm, attack, gen, axes.batch_rows)
            eval_s = time.perf_counter() - start
            total_s += eval_s
            broken_by_any |= fooled
            axes_cols = dict(attack=attack_name, steps=attack.steps, step_size=attack.step_size, restarts=attack.restarts)
            rows += _rows(norm_name, norm_axes.eps, grid, fooled, deltas, n, clean_acc, eval_s, axes_cols)
        rows += _rows(norm_name, norm_axes.eps, grid, broken_by_any, None, n, clean_acc, total_s, dict(attack="worst"))
    return rows


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
        zeros = torch.zeros(len(y))
        return torch.zeros(len(y), len(grid), dtype=torch.bool), {"l2": zeros, "linf": zeros, "confidence": zeros}
    batch_rows = batch_rows or (16384 if x.is_cuda else 256)
    eps = torch.tensor(grid, dtype=x.dtype, device=x.device).expand(len(y), len(grid))
    res = attack.run(model, x, y, eps, norm, generator=generator, max_rows=batch_rows)
    delta = res.x_adv - x
    return res.fooled.cpu(), {"l2": L2.measure(delta).cpu(), "linf": Linf.measure(delta).cpu(), "confidence": confidence(model, res.x_adv).cpu()}


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


def _rows(norm_name, eps_list, grid, fooled, deltas, n, clean_acc, eval_s, axes_cols):
    n_correct = fooled.shape[0]
    out = []
    for eps in sorted(eps_list):
        row = dict(evaluator="robustness", norm=norm_name, eps=float(eps), n_eval=n, clean_acc=clean_acc, eval_s=eval_s, **axes_cols)
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


def stream_seed(seed: int, *names: str) -> int:
    """An RNG seed per stream (e.g. attack and norm), so results do not depend on the order they run in."""
    return int.from_bytes(hashlib.sha256(repr((seed, *names)).encode()).digest()[:7], "big")
