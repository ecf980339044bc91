"""Throughput of each attack of the `autoattack` preset (and FMN, of the default's), and what mixed precision changes.

    .venv/bin/python benchmarks/throughput.py [--device cpu] [--points 500] [--precisions float32,bf16] [--threads 2]

On the PGD-trained CNN of benchmarks/autoattack.py (from results/store, else trained there),
the first ``--points`` mnist-5k test images, each attack of `autoattack` and the default's FMN run alone (no cascade)
through the robustness evaluator's ``attack_grid`` at Linf 0.3, at each ``--precisions`` (the
robustness entry's ``precision``: the model under autocast, study.precision).

Columns, per attack and precision: seconds; the model's forward and backward passes per point
(the rows it ran, as AttackBench counts them: ``fwd``, ``bwd``, including one forward per point
to judge the result; an attack that stops a point early spends less); ``img x it/s``, images x
iterations per second, an iteration being a backward pass for the gradient attacks and a query
(forward) for Square; robust accuracy, and for a lower precision its difference from float32 in
points (the effect on the numbers); ``speedup`` against float32 in the same run.
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

from autoattack import load_model  # noqa: E402

from study import data, norms, precision  # noqa: E402
from study.attacks.presets import PRESETS  # noqa: E402
from study.evaluators.robustness import attack_grid  # noqa: E402
from study.rng import PointRNG  # noqa: E402
from study.spec import DataSpec  # noqa: E402
from study.spec.evaluation import AttackSpec  # noqa: E402
from study.train import predict  # noqa: E402

EPS = 0.3
# autoattack's attacks, then those only the default (autoattack-fast) runs: fmn
ATTACKS = PRESETS["autoattack"] + [a for a in PRESETS["autoattack-fast"] if a["name"] not in {b["name"] for b in PRESETS["autoattack"]}]


class Counted(torch.nn.Module):
    """The model, counting the rows of its forward passes with and without autograd (a pass
    with autograd is followed by its backward in every attack here)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.fwd, self.bwd = model, 0, 0
        self.objective = getattr(model, "objective", "cross_entropy")

    def forward(self, x):
        self.fwd += len(x)
        self.bwd += len(x) if torch.is_grad_enabled() and x.requires_grad else 0
        return self.model(x)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--points", type=int, default=500)
    p.add_argument("--precisions", default="float32,bf16")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    ds = data.load(DataSpec(dataset="mnist-5k"))
    x, y = torch.from_numpy(ds.x_test[: args.points]).to(device), torch.from_numpy(ds.y_test[: args.points]).to(device)
    model = load_model("pgd-cnn", ds, device)
    keep = predict(model, x) == y
    x, y = x[keep], y[keep]
    points = keep.nonzero().squeeze(1)
    print(f"pgd-cnn, {len(y)} correctly classified of the first {args.points} points, Linf {EPS}, {device}, {torch.get_num_threads()} threads, torch {torch.__version__}\n")
    print("| attack | precision | seconds | fwd / point | bwd / point | img x it/s | robust acc | vs float32 (points) | speedup |")
    print("|---|---|---|---|---|---|---|---|---|")
    for raw in ATTACKS:
        spec = AttackSpec.model_validate(raw)
        base = None
        for prec in args.precisions.split(","):
            counted = Counted(precision.queried(model, prec))
            rng = PointRNG.for_points(0, args.points, device)[points]
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fooled, _, _ = attack_grid(counted, x, y, [EPS], norms.get("linf"), spec.build(), rng)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            acc = (len(y) - int(fooled[:, 0].sum())) / args.points
            base = base or (seconds, acc)
            diff = f"{(acc - base[1]) * 100:+.1f}" if prec != "float32" else ""
            speed = f"{base[0] / seconds:.2f}x" if prec != "float32" else ""
            print(f"| {spec.name} | {prec} | {seconds:.1f} | {counted.fwd / len(y):.0f} | {counted.bwd / len(y):.0f} | {(counted.bwd or counted.fwd) / seconds:,.0f} | {acc:.1%} | {diff} | {speed} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
