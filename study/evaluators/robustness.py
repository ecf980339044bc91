"""Robustness: every attack x norm x eps, plus a `worst` row per (norm, eps).

Per (attack, norm), the whole epsilon grid is one batched attack over rows (point, eps): a row
stops when it is misclassified, and a point broken at eps_i is broken at every larger eps
(see study.attacks.gradient). Only points the model classifies correctly are attacked.
"""

from __future__ import annotations

import hashlib
import time

import torch

from study import attacks, norms
from study.norms import L2, Linf
from study.train import predict


def evaluate(ctx, axes) -> list[dict]:
    model, x, y = ctx.model, ctx.x, ctx.y
    n = len(y)
    correct = predict(model, x) == y
    xc, yc = x[correct], y[correct]
    clean_acc = correct.float().mean().item()
    rows = []
    for norm_name, norm_axes in axes.norms.items():
        norm = norms.get(norm_name)
        grid = sorted(e for e in norm_axes.eps if e > 0)
        broken_by_any = torch.zeros(len(yc), len(grid), dtype=torch.bool)
        total_s = 0.0
        for attack_name in axes.attacks:
            attack = attacks.make(attack_name, steps=axes.steps, step_size=axes.step_size, restarts=axes.restarts)
            gen = torch.Generator(device=x.device).manual_seed(_stream_seed(ctx.seed, attack_name, norm_name))
            start = time.perf_counter()
            fooled, deltas = attack_grid(model, xc, yc, grid, norm, attack, gen, axes.batch_rows)
            eval_s = time.perf_counter() - start
            total_s += eval_s
            broken_by_any |= fooled
            axes_cols = dict(attack=attack_name, steps=attack.steps, step_size=attack.step_size, restarts=attack.restarts)
            rows += _rows(norm_name, norm_axes.eps, grid, fooled, deltas, n, clean_acc, eval_s, axes_cols)
        rows += _rows(norm_name, norm_axes.eps, grid, broken_by_any, None, n, clean_acc, total_s, dict(attack="worst"))
    return rows


def attack_grid(model, x, y, grid, norm, attack, generator, batch_rows=8192):
    """Attack every point at every eps of ``grid`` (ascending) in batched calls.

    Returns ``fooled`` (P x L bool) and ``deltas`` ({'l2', 'linf'}: P x L perturbation sizes).
    """
    n_levels = len(grid)
    fooled = torch.zeros(len(y), n_levels, dtype=torch.bool)
    deltas = {"l2": torch.zeros(len(y), n_levels), "linf": torch.zeros(len(y), n_levels)}
    if n_levels == 0 or len(y) == 0:
        return fooled, deltas
    per_chunk = max(1, batch_rows // n_levels)
    eps_grid = torch.tensor(grid, dtype=x.dtype, device=x.device)
    for start in range(0, len(y), per_chunk):
        xb, yb = x[start : start + per_chunk], y[start : start + per_chunk]
        p = len(yb)
        rows_x = xb.repeat(n_levels, *([1] * (xb.dim() - 1)))  # level-major: row = level * p + point
        rows_y = yb.repeat(n_levels)
        group = torch.arange(p, device=x.device).repeat(n_levels)
        level = torch.arange(n_levels, device=x.device).repeat_interleave(p)
        res = attack.run(model, rows_x, rows_y, eps_grid[level], norm, group=group, level=level, generator=generator)
        delta = res.x_adv - rows_x
        fooled[start : start + p] = res.fooled.view(n_levels, p).T.cpu()
        deltas["l2"][start : start + p] = L2.measure(delta).view(n_levels, p).T.cpu()
        deltas["linf"][start : start + p] = Linf.measure(delta).view(n_levels, p).T.cpu()
    return fooled, deltas


def attack_each_eps_separately(model, x, y, grid, norm, attack, seed: int):
    """The reference way (as with other attack libraries): a full attack at every eps on its
    own, keeping each final iterate. Every eps starts from a generator seeded with ``seed``, so
    its random starts are those ``attack_grid`` draws from the same seed. Returns ``fooled``
    (P x L bool). Used by the benchmark and by the tests that check ``attack_grid`` is never
    weaker."""
    cols = []
    for eps in grid:
        generator = torch.Generator(device=x.device).manual_seed(seed)
        x_adv = attack.run(model, x, y, eps, norm, early_stop=False, generator=generator).x_adv
        cols.append((predict(model, x_adv) != y).cpu())
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
                for name, d in deltas.items():
                    vals = d[f, j]
                    row[f"{name}_mean"] = float(vals.mean())
                    row[f"{name}_median"] = float(vals.median())
        out.append(row)
    return out


def _stream_seed(seed: int, *names: str) -> int:
    """An RNG seed per (attack, norm) so results do not depend on the order attacks run in."""
    return int.from_bytes(hashlib.sha256(repr((seed, *names)).encode()).digest()[:7], "big")
