"""MC-dropout prediction: T samples in one batched pass against a loop of T passes.

Run from the repository root:  .venv/bin/python benchmarks/mc_samples.py [--threads 1] [--repeats 3] [--device cpu]

For the two MC-dropout models (mc-cnn and mc-mlp, dropout 0.25, untrained: the cost does not
depend on the weights), N inputs and T samples per input, it times:

``loop``: ``study.mc.sample_probs_loop``, the usual way: T forward passes over the batch of N
inputs (the baseline, timed in the same run);
``batched``: ``study.mc.sample_probs``, what advsweep uses: the inputs repeated T times along the
batch, the layers before the first dropout run once per input, passes of at most 256 rows on a
CPU (16384 on a GPU).

``speedup`` = loop time / batched time (> 1: batched is faster). Both draw the same number of
samples (N x T x classes); their values are equal in distribution, not bitwise.
Each timing is the fastest of ``--repeats`` runs. ``--device cuda`` runs the same on a GPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import polars as pl  # noqa: E402
import torch  # noqa: E402

from study import mc, models  # noqa: E402


def fastest(fn, repeats: int, device: str) -> float:
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for name in ("mc-cnn", "mc-mlp"):
        model = models.build(name, (1, 28, 28), 10, dropout=0.25).to(args.device).eval()
        for n, t in ((1000, 20), (1000, 100), (64, 100), (8, 100)):
            x = torch.rand(n, 1, 28, 28, device=args.device)
            mc.sample_probs(model, x, t)  # warm up both paths (kernel selection, allocator)
            mc.sample_probs_loop(model, x, t)
            loop = fastest(lambda: mc.sample_probs_loop(model, x, t), args.repeats, args.device)
            batched = fastest(lambda: mc.sample_probs(model, x, t), args.repeats, args.device)
            rows.append(dict(model=name, n=n, T=t, loop_s=round(loop, 4), batched_s=round(batched, 4), speedup=round(loop / batched, 2)))
            print(rows[-1], flush=True)
    with pl.Config(tbl_rows=-1, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        print(f"\nT MC-dropout samples per input, {args.device}, {args.threads} thread(s); fastest of {args.repeats}")
        print(pl.DataFrame(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
