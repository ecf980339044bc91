"""The eps ladder climbed bottom-up (every attack's default) against top-down (APGD's ``ladder: top-down``): the cost, and the points lost.

    .venv/bin/python benchmarks/ladder_order.py [--points 500] [--models pgd-cnn,ratio-triplet] [--threads 2]

Bottom-up, an attack's ladder takes every point at the smallest eps first and only the points
still robust on to the next: a break at eps e is a break at every larger eps, so nothing found is
ever assumed, and a robust point pays for every level. Top-down takes each point at the largest
eps first and lower only where that broke it: a robust point pays once, but a point the attack
fails at a large eps is taken as robust at every smaller one, which an attack (not the truth)
can violate.

For APGD-CE (the cascade's first attack) and the default's screened APGD-T, each run alone as
the evaluator runs it (one ladder call, 256 points in flight) in both orders, on the
benchmark models of benchmarks/autoattack.py at Linf 0.1, 0.2, 0.3 and L2 1.5, 3, on the first
``--points`` mnist-5k test images: the points each order breaks at each eps (``lost``: broken
bottom-up, not top-down), the model's passes (rows, forward and backward) and seconds of each
order, and top-down's share of bottom-up's passes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from autoattack import POINTS, load_model  # noqa: E402
from throughput import Counted  # noqa: E402

from study import attacks, data, norms  # noqa: E402
from study.attacks.presets import PRESETS  # noqa: E402
from study.rng import PointRNG  # noqa: E402
from study.spec import DataSpec  # noqa: E402
from study.train import predict  # noqa: E402

ATTACKS = [a for a in PRESETS["autoattack-fast"] if a["name"] in ("apgd-ce", "apgd-t")]


ORDERS = ("bottom-up", "top-down")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--points", type=int, default=500)
    p.add_argument("--models", default="pgd-cnn,ratio-triplet")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ds = data.load(DataSpec(dataset="mnist-5k"))
    print(f"{args.points} points, {args.threads} threads, torch {torch.__version__}\n")
    print("| model | attack | norm | broken bottom-up | broken top-down | lost | passes bottom-up | passes top-down | top-down / bottom-up | s bottom-up | s top-down |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        model = load_model(name, ds, "cpu")
        x, y = torch.from_numpy(ds.x_test[: args.points]), torch.from_numpy(ds.y_test[: args.points])
        correct = predict(model, x) == y
        x, y = x[correct], y[correct]
        rng = PointRNG.for_points(0, args.points)[correct.nonzero().squeeze(1)]
        for spec in ATTACKS:
            for norm, ladder in POINTS.items():
                ladder = sorted(ladder)
                eps = torch.tensor(ladder).expand(len(y), len(ladder))
                cells = {}
                for order in ORDERS:
                    counted = Counted(model)
                    start = time.perf_counter()
                    fooled = attacks.make(**{**spec, "ladder": order}).run(counted, x, y, eps, norms.NORMS[norm], rng=rng, max_rows=256).fooled
                    cells[order] = dict(zip(ladder, fooled.sum(0).tolist())), counted.fwd + counted.bwd, time.perf_counter() - start
                (up, up_rows, up_s), (down, down_rows, down_s) = (cells[o] for o in ORDERS)
                show = lambda b: " / ".join(f"{b[e]}" for e in ladder)  # noqa: E731
                lost = " / ".join(f"{up[e] - down[e]}" for e in ladder)
                print(f"| {name} | {spec['name']} | {norm} {'/'.join(f'{e:g}' for e in ladder)} | {show(up)} | {show(down)} | {lost} | {up_rows:,} | {down_rows:,} | {down_rows / up_rows:.2f} | {up_s:.1f} | {down_s:.1f} |", flush=True)


if __name__ == "__main__":
    main()
