"""Attack throughput and eps-grid evaluation cost on mnist-5k, CPU, no Ray.

Run from the repository root:  .venv/bin/python benchmarks/attacks.py [--threads 1] [--n 1000] [--repeats 3]

What it measures, on the two CNNs of the quickstart (standard, and FGSM-Linf-0.1 adversarially
trained with alpha 0.5), each trained here in-process with the quickstart's seed and settings:

1. Throughput of single attacks run in full (``early_stop=False``, every row takes every step,
   as other attack libraries do): FGSM Linf 0.1, PGD-40 Linf 0.1 and PGD-40 L2 1.0 on the
   ``--n`` test images, beside a baseline timed in the same run: a bare loop of 40 forward +
   backward passes w.r.t. the input of the whole batch (parameters frozen).

   How to read ``vs_bare``: attack time / bare-loop time for the same number of gradient steps
   (40 for PGD-40, 1 for FGSM). 1.00 means the attack costs exactly its forward/backward passes;
   anything above is overhead (random start, sign/normalise, projection, clamping).

2. The quickstart's Linf eps grid (0.05 ... 0.3) for FGSM, BIM-20, PGD-20 and PGD-40, evaluated
   on the same points (those the model classifies correctly, as the evaluator does) three ways:
   ``grid``: ``attack_grid``, the evaluator (the grid as batches of (point, eps) rows; a row
   leaves on success; an adversarial at distance d counts for every eps >= d; shared first step
   without random start; ``batch_rows`` at its CPU default);
   ``separate``: ``attack_each_eps_separately``, a full attack at each eps on its own over the
   whole batch of points, final iterate kept (what users of other attack libraries do);
   ``separate_256``: the same in batches of 256 points (the per-row cost of the grid's batches,
   so ``speedup_256`` is what the algorithm alone saves).

   How to read ``speedup``: separate time / grid time (> 1: the evaluator is faster);
   ``work_ratio``: rows put through forward + backward, separate / grid. The row ``quickstart``
   adds FGSM, BIM-20 and PGD-20: the quickstart evaluator's Linf work for one model.
   The table "cost of one forward + backward per row, by batch size" explains why batch size
   matters on a CPU. ``diff_pts`` is robust accuracy (correct and not fooled, over all ``--n``
   images) of the evaluator minus that of the separate runs, in percentage points; <= 0 means the
   evaluator's attack is at least as strong. Both ways are seeded with 0 and every eps of the
   separate runs re-seeds; random starts still differ where the batches split points differently.

Timings use ``torch.set_num_threads(--threads)``, 1 by default: what one Ray trial with cpu: 1 gets.
Each timing is the fastest of ``--repeats`` runs (3 by default; about 20 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import polars as pl  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from study import attacks  # noqa: E402
from study.attacks.gradient import frozen  # noqa: E402
from study.data import load  # noqa: E402
from study.evaluators.robustness import attack_each_eps_separately, attack_grid  # noqa: E402
from study.norms import L2, Linf  # noqa: E402
from study.rng import PointRNG  # noqa: E402
from study.spec import DataSpec, TrainConfig  # noqa: E402
from study.train import init_model, predict, train  # noqa: E402

LINF_GRID = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3]  # the quickstart's Linf grid without the trivial eps 0
MODELS = {
    "cnn": TrainConfig(model="cnn", epochs=8, lr=2e-3, seed=0),
    "cnn adv=fgsm-linf-0.1": TrainConfig(
        model="cnn", epochs=8, lr=2e-3, seed=0, adversarial={"attack": "fgsm", "norm": "linf", "eps": 0.1, "alpha": 0.5}
    ),
}
SINGLE_ATTACKS = [  # (label, attack name, steps, norm, eps)
    ("fgsm", "fgsm", None, Linf, 0.1),
    ("pgd-40", "pgd", 40, Linf, 0.1),
    ("pgd-40", "pgd", 40, L2, 1.0),
]
GRID_ATTACKS = [("fgsm", "fgsm", None), ("bim-20", "bim", 20), ("pgd-20", "pgd", 20), ("pgd-40", "pgd", 40)]
BARE_STEPS = 40
SEPARATE_BATCH = 256  # points per batch of the cache-friendly separate runs (the evaluator's CPU batch)
QUICKSTART = ("fgsm", "bim-20", "pgd-20")  # the quickstart evaluator's attacks


REPEATS = 3  # set from --repeats in main


def timed(fn, *args, **kwargs):
    """Run ``fn`` REPEATS times; return the first result and the fastest time (least disturbed
    by other processes). Attacks re-seed their generator on every call, so results repeat."""
    out, best = None, float("inf")
    for i in range(REPEATS):
        start = time.perf_counter()
        res = fn(*args, **kwargs)
        best = min(best, time.perf_counter() - start)
        out = res if i == 0 else out
    return out, best


@contextlib.contextmanager
def counting_rows(model):
    """Count the rows the model is run on: {'grad': rows of forward+backward, 'nograd': rows of forward only}."""
    counts = {"grad": 0, "nograd": 0}

    def hook(module, inputs):
        counts["grad" if torch.is_grad_enabled() else "nograd"] += inputs[0].shape[0]

    handle = model.register_forward_pre_hook(hook)
    try:
        yield counts
    finally:
        handle.remove()


def show(title: str, df: pl.DataFrame) -> None:
    print(f"\n{title}")
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True,
                   tbl_formatting="ASCII_MARKDOWN", tbl_width_chars=200, float_precision=3):
        print(df)


def train_models(ds, x_eval, y_eval):
    x, y = torch.from_numpy(ds.x_train), torch.from_numpy(ds.y_train)
    trained, rows = {}, []
    for name, cfg in MODELS.items():
        model = init_model(cfg, ds.input_shape, ds.n_classes)
        out = train(model, cfg, x, y, x_eval, y_eval)
        trained[name] = model
        rows.append(dict(model=name, train_s=out["train_s"], clean_acc=out["clean_acc"]))
    cfg = next(iter(MODELS.values()))
    show(f"Training ({len(y)} images, {cfg.epochs} epochs, batch {cfg.batch_size}, lr {cfg.lr:g}, seed {cfg.seed}):", pl.DataFrame(rows))
    return trained


def bare_loop(model, x, y, steps: int) -> None:
    """``steps`` x (one forward + one backward w.r.t. the input of the whole batch), frozen model."""
    with frozen(model):
        for _ in range(steps):
            xa = x.detach().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(xa), y), xa)


def per_row_cost(name, model, x, y, batches) -> list[dict]:
    """Microseconds per row of one forward + backward at several batch sizes (rows repeat x)."""
    reps = -(-max(batches) // len(y))
    xs, ys = x.repeat(reps, *([1] * (x.dim() - 1))), y.repeat(reps)
    rows = []
    for b in batches:
        steps = max(2, 8192 // b)
        bare_loop(model, xs[:b], ys[:b], 1)  # warm-up
        _, t = timed(bare_loop, model, xs[:b], ys[:b], steps)
        rows.append(dict(model=name, batch_rows=b, us_per_row=1e6 * t / (steps * b)))
    return rows


def robust_acc(model, x_adv, x, y) -> float:
    """Correct on the clean input and on the adversarial one, over all points."""
    return ((predict(model, x) == y) & (predict(model, x_adv) == y)).float().mean().item()


def throughput(name, model, x, y) -> list[dict]:
    n = len(y)
    bare_loop(model, x, y, 2)  # warm-up: first calls allocate
    _, bare_s = timed(bare_loop, model, x, y, BARE_STEPS)
    step_s = bare_s / BARE_STEPS
    rows = [dict(model=name, attack=f"bare {BARE_STEPS} x fwd+bwd", norm="-", eps=None, images_s=n / bare_s,
                 time_s=bare_s, vs_bare=1.0, robust_acc=None)]
    for label, attack_name, steps, norm, eps in SINGLE_ATTACKS:
        attack = attacks.make(attack_name, **({"steps": steps} if attack_name != "fgsm" else {}))
        res, t = timed(attack.run, model, x, y, eps, norm, early_stop=False, rng=PointRNG.for_points(0, n))
        rows.append(dict(model=name, attack=label, norm=norm.name, eps=eps, images_s=n / t, time_s=t,
                         vs_bare=t / (step_s * attack.steps), robust_acc=robust_acc(model, res.x_adv, x, y)))
    return rows


def grid_vs_separate(name, model, x, y):
    """Time, work and robust accuracy of the eps grid: the evaluator's way vs a full attack per eps."""
    n = len(y)
    correct = predict(model, x) == y
    xc, yc = x[correct], y[correct]
    n_correct = len(yc)
    timing, accs = [], []
    for label, attack_name, steps in GRID_ATTACKS:
        attack = attacks.make(attack_name, **({"steps": steps} if attack_name != "fgsm" else {}))
        with counting_rows(model) as ours_rows:
            (ours, _, _), ours_s = timed(attack_grid, model, xc, yc, LINF_GRID, Linf, attack, PointRNG.for_points(0, n_correct))
        with counting_rows(model) as sep_rows:
            sep, sep_s = timed(attack_each_eps_separately, model, xc, yc, LINF_GRID, Linf, attack, 0)
        _, sep256_s = timed(attack_each_eps_separately, model, xc, yc, LINF_GRID, Linf, attack, 0, SEPARATE_BATCH)
        timing.append(dict(model=name, attack=label, points=n_correct, grid_s=ours_s, separate_s=sep_s,
                           separate_256_s=sep256_s, grid_rows=ours_rows["grad"] // REPEATS,
                           separate_rows=sep_rows["grad"] // REPEATS))
        for j, eps in enumerate(LINF_GRID):
            ra_ours = (n_correct - int(ours[:, j].sum())) / n
            ra_sep = (n_correct - int(sep[:, j].sum())) / n
            accs.append(dict(model=name, attack=label, eps=eps, grid=ra_ours, separate=ra_sep, diff_pts=100 * (ra_ours - ra_sep)))
    timing = pl.DataFrame(timing)
    total = timing.filter(pl.col("attack").is_in(QUICKSTART)).select(pl.exclude("model", "attack", "points").sum())
    timing = pl.concat([timing, total.with_columns(model=pl.lit(name), attack=pl.lit("quickstart"), points=pl.lit(n_correct, dtype=pl.Int64))],
                       how="diagonal")
    timing = timing.with_columns(
        speedup=pl.col("separate_s") / pl.col("grid_s"),
        speedup_256=pl.col("separate_256_s") / pl.col("grid_s"),
        work_ratio=pl.col("separate_rows") / pl.col("grid_rows"),
    )
    return timing, accs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 = one Ray trial with cpu: 1)")
    parser.add_argument("--n", type=int, default=1000, help="test images to attack (mnist-5k has 1,000)")
    parser.add_argument("--repeats", type=int, default=3, help="time every measurement this many times, keep the fastest")
    args = parser.parse_args(argv)
    global REPEATS
    REPEATS = args.repeats
    torch.set_num_threads(args.threads)

    ds = load(DataSpec(n_eval=args.n))
    x, y = torch.from_numpy(ds.x_test), torch.from_numpy(ds.y_test)
    print(f"mnist-5k: {len(ds.y_train)} train / {len(y)} attacked test images; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), device cpu, best of {REPEATS} timings")
    models = train_models(ds, x, y)

    rows = [r for name, model in models.items() for r in throughput(name, model, x, y)]
    show(f"Single attacks in full (early_stop=False) on {len(y)} images; vs_bare = time / "
         f"(bare loop time per step x attack steps):", pl.DataFrame(rows))

    n_grid = len(LINF_GRID) * len(y)
    cost = [r for name, model in models.items() for r in per_row_cost(name, model, x, y, [128, 256, 512, len(y), n_grid])]
    show(f"Cost of one forward + backward per row, by batch size ({n_grid} = the whole grid in one batch):", pl.DataFrame(cost))

    timings, accs = [], []
    for name, model in models.items():
        t, a = grid_vs_separate(name, model, x, y)
        timings.append(t)
        accs += a
    timing, accs = pl.concat(timings), pl.DataFrame(accs)
    show(f"Linf eps grid {LINF_GRID}: evaluator (grid) vs a full attack per eps (separate: whole batch; "
         f"separate_256: batches of {SEPARATE_BATCH});\nspeedup = separate_s / grid_s, speedup_256 = separate_256_s / grid_s, "
         "work_ratio = forward+backward rows, separate / grid:", timing)
    for name in models:
        show(f"Robust accuracy, {name} (over {len(y)} images); diff_pts = grid - separate:",
             accs.filter(pl.col("model") == name).drop("model"))

    std = next(iter(models))
    for label in ("quickstart", "pgd-20", "pgd-40"):
        row = timing.filter((pl.col("model") == std) & (pl.col("attack") == label)).row(0, named=True)
        print(f"\nstandard cnn, Linf eps grid, {label}: evaluator {row['speedup']:.2f}x as fast as separate runs "
              f"({row['speedup_256']:.2f}x vs separate runs in batches of {SEPARATE_BATCH}; {row['work_ratio']:.2f}x fewer "
              "forward+backward rows)", end="")
    print(f"\nrobust accuracy, grid - separate, over every model, attack and eps: max {accs['diff_pts'].max():+.1f} points, "
          f"min {accs['diff_pts'].min():+.1f} points")


if __name__ == "__main__":
    main()
