"""Our AutoAttack against the reference, side by side in one run: robust accuracy and time.

    python benchmarks/autoattack.py [--points 500] [--models pgd-cnn,ratio-triplet] [--presets autoattack,autoattack-fast] [--seed 0]

``--seed`` seeds every attack, ours and the reference's: runs with two seeds show how far each
figure moves by chance, the resolution of any comparison between them.

Models (trained here, or loaded from results/store when trained before):

* ``pgd-cnn``: the CNN adversarially trained with PGD at Linf 0.3 (alpha 0.5, 15 epochs) on
  mnist-5k: a robust model whose gradients work;
* ``ratio-triplet``: search_spaces/epsilon.yaml's triplet network with the distance-ratio loss,
  classifying by its class centroids: a saturated softmax masks its cross-entropy gradients.

On the first ``--points`` test images, at Linf 0.1, 0.2, 0.3 and L2 1.5, 3:

* ``reference``: AutoAttack's standard version (APGD-CE, APGD-T with 9 targets, FAB-T with 9
  targets, Square with 5,000 queries; 100 iterations, p_init 0.8, Square's schedule unscaled),
  built from torchattacks' attacks (a port of the original code, which is not on the package
  registries: ``pip install torchattacks --no-deps``), run as AutoAttack runs it: each eps on
  its own, each attack on the points still robust, batches of 250. torchattacks' own
  ``AutoAttack`` class departs from the paper: it builds APGD, APGD-T and FAB with the classes'
  default 10 iterations and rescales Square's schedule; ``--shipped`` adds it as a column too.
* ours: the robustness evaluator with each preset, one cascade per norm over its eps ladder.

Columns: robust accuracy; ours minus the reference (points); seconds; the reference's time over
ours. The benchmark prints; its figures are recorded in docs/benchmarks.md.
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

from study import data  # noqa: E402
from study.evaluators import EvalContext, robustness  # noqa: E402
from study.spec import AdversarialTraining, DataSpec, TrainConfig  # noqa: E402
from study.evaluators.robustness import Options as RobustnessEval  # noqa: E402
from study.store import ModelStore, model_key  # noqa: E402
from study.train import init_model, train  # noqa: E402

POINTS = {"linf": [0.1, 0.2, 0.3], "l2": [1.5, 3.0]}
MODELS = {
    "pgd-cnn": TrainConfig(model="cnn", epochs=15, lr=2e-3, seed=0, adversarial=AdversarialTraining(attack="pgd", norm="linf", eps=0.3, alpha=0.5)),
    "ratio-triplet": TrainConfig(model="triplet", triplet_loss="ratio", epochs=8, lr=2e-3, seed=0),
}


def load_model(name: str, ds, device) -> torch.nn.Module:
    """The model from results/store (the key a sweep would give it), else trained now and stored."""
    cfg = MODELS[name]
    model = init_model(cfg, ds.input_shape, ds.n_classes).to(device)
    store, key = ModelStore(str(ROOT / "results" / "store")), model_key(cfg.model_dump(mode="json"), ds.fingerprint)
    if store.load(key, model) is None:
        t = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
        meta = train(model, cfg, t(ds.x_train), t(ds.y_train), t(ds.x_test), t(ds.y_test))
        store.save(key, model, {"train_s": meta["train_s"]})
        print(f"{name}: trained in {meta['train_s']:.0f} s, clean accuracy {meta['clean_acc']:.3f}", flush=True)
    return model.eval()


def ours(model, x, y, preset: str, seed: int = 0) -> tuple[dict, float]:
    """{(norm, eps): robust accuracy} of the preset's `worst` rows, and the seconds it took."""
    axes = RobustnessEval.model_validate({"evaluator": "robustness", "attacks": preset, "norms": {n: {"eps": e} for n, e in POINTS.items()}})
    ctx = EvalContext(model=model, x=x, y=y, seed=seed, x_train=None, y_train=None, trial_id="benchmark", results_uri=str(ROOT / "results" / "benchmark"))
    start = time.perf_counter()
    rows = robustness.evaluate(ctx, axes)
    return {(r["norm"], r["eps"]): r["robust_acc"] for r in rows if r["attack"] == "worst"}, time.perf_counter() - start


def reference_attacks(model, norm: str, eps: float, shipped: bool, seed: int):
    import torchattacks as ta

    name = {"linf": "Linf", "l2": "L2"}[norm]
    if shipped:
        return [ta.AutoAttack(model, norm=name, eps=eps, version="standard", n_classes=10, seed=seed)]
    return [
        ta.APGD(model, norm=name, eps=eps, steps=100, n_restarts=1, loss="ce", seed=seed),
        ta.APGDT(model, norm=name, eps=eps, steps=100, n_restarts=1, n_classes=10, seed=seed),
        ta.FAB(model, norm=name, eps=eps, steps=100, n_restarts=1, multi_targeted=True, n_classes=10, seed=seed),
        ta.Square(model, norm=name, eps=eps, n_queries=5000, n_restarts=1, p_init=0.8, resc_schedule=False, seed=seed),
    ]


def reference(model, x, y, shipped: bool = False, batch: int = 250, seed: int = 0) -> tuple[dict, float]:
    """AutoAttack's cascade at each eps on its own: {(norm, eps): robust accuracy}, seconds."""
    out, start = {}, time.perf_counter()
    with torch.no_grad():
        robust = model(x).argmax(1) == y
    for norm, grid in POINTS.items():
        for eps in grid:
            left = robust.clone()
            for attack in reference_attacks(model, norm, eps, shipped, seed):
                idx = left.nonzero().squeeze(1)
                for part in idx.split(batch):
                    adv = attack(x[part], y[part])
                    with torch.no_grad():
                        left[part[model(adv).argmax(1) != y[part]]] = False
            out[norm, eps] = left.float().mean().item()
    return out, time.perf_counter() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--points", type=int, default=500)
    p.add_argument("--models", default="pgd-cnn,ratio-triplet")
    p.add_argument("--presets", default="autoattack,autoattack-fast")
    p.add_argument("--shipped", action="store_true", help="also run torchattacks' AutoAttack class as shipped")
    p.add_argument("--no-reference", action="store_true", help="only ours (no torchattacks needed)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0, help="the seed of every attack, ours and the reference's (their spread across seeds is the resolution of a comparison)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    ds = data.load(DataSpec(dataset="mnist-5k"))
    x, y = torch.from_numpy(ds.x_test[: args.points]).to(device), torch.from_numpy(ds.y_test[: args.points]).to(device)
    presets = args.presets.split(",")
    print(f"{args.points} points on {device}, seed {args.seed}, torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    for name in args.models.split(","):
        model = load_model(name, ds, device)
        results = {}
        for preset in presets:
            results[preset] = ours(model, x, y, preset, args.seed)
            print(f"  ours {preset}: {results[preset][1]:.0f} s", flush=True)
        if not args.no_reference:
            results["reference"] = reference(model, x, y, seed=args.seed)
            print(f"  reference: {results['reference'][1]:.0f} s", flush=True)
            if args.shipped:
                results["shipped"] = reference(model, x, y, shipped=True, seed=args.seed)
                print(f"  torchattacks AutoAttack as shipped: {results['shipped'][1]:.0f} s", flush=True)
        table(name, results, presets)
    return 0


def table(name: str, results: dict, presets: list[str]) -> None:
    columns = [c for c in ("reference", "shipped", *presets) if c in results]
    print(f"\n{name}: robust accuracy (worst case over the ensemble), points = ours - reference")
    print("| norm | eps | " + " | ".join(columns) + (" | " + " | ".join(f"{p} - ref" for p in presets) if "reference" in results else "") + " |")
    print("|---" * (2 + len(columns) + (len(presets) if "reference" in results else 0)) + "|")
    for norm, grid in POINTS.items():
        for eps in grid:
            accs = [results[c][0][norm, eps] for c in columns]
            diffs = [100 * (results[p][0][norm, eps] - results["reference"][0][norm, eps]) for p in presets] if "reference" in results else []
            print(f"| {norm} | {eps:g} | " + " | ".join(f"{a:.1%}" for a in accs) + "".join(f" | {d + 0.0:+.1f}" for d in diffs) + " |")
    times = " | ".join(f"{results[c][1]:.0f} s" for c in columns)
    print(f"| time | | {times} |" + ("".join(f" {results['reference'][1] / results[p][1]:.1f}x |" for p in presets) if "reference" in results else ""))


if __name__ == "__main__":
    sys.exit(main())
