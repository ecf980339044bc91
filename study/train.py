"""The one training loop: the model's objective, L2 penalties, optional adversarial training.

J is the model's training loss (study.objectives: cross-entropy, hinge, one-vs-rest, triplet), plus
``l2`` * ||W||^2 over weight matrices and kernels (biases excluded: the SVM's lambda), plus
Adam's ``weight_decay`` on every parameter. Adversarial training minimises
alpha * J(x) + (1 - alpha) * J(x_adv) (Goodfellow et al.), with x_adv from FGSM or PGD at the
configured eps and norm (or, as the paper's control, x plus random noise of that size:
``noise-sign``, ``noise-uniform``); alpha = 1 is standard training and alpha = 0 pure
adversarial training. Everything is seeded by the config's seed.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Callable

import torch

from study import attacks, mc, models, norms, objectives
from study.rng import PointRNG
from study.seeds import stream_seed
from study.spec import TrainConfig
from study.spec.training import NOISE


def init_model(cfg: TrainConfig, input_shape, n_classes: int) -> torch.nn.Module:
    if cfg.members is not None:
        model = models.Ensemble([init_model(m, input_shape, n_classes) for m in cfg.member_configs()])
        model.objective = "cross_entropy"
        return model
    params = {name: getattr(cfg, name) for name in models.MODEL_PARAMS if getattr(cfg, name) is not None}
    normalize = cfg.normalize.model_dump() if cfg.normalize is not None else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return models.build(cfg.model, input_shape, n_classes, model_args=cfg.model_args, normalize=normalize, **params)


def weight_penalty(model: torch.nn.Module) -> torch.Tensor:
    """||W||^2 summed over the weights of linear and convolution layers (not biases, not e.g.
    the RBF's centres and widths)."""
    return sum(p.square().sum() for name, p in model.named_parameters() if name.endswith("weight") and p.dim() > 1)


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    """Predicted classes; a stochastic (MC-dropout) model predicts with its MC predictive."""
    if mc.is_stochastic(model):
        return mc.sample_probs(model, x, mc.PREDICTION_SAMPLES).mean(1).argmax(1)
    was_training = model.training
    model.eval()
    out = torch.cat([model(x[i : i + batch]).argmax(1) for i in range(0, len(x), batch)])
    model.train(was_training)
    return out


def accuracy(model, x, y) -> float:
    return (predict(model, x) == y).float().mean().item()


def noisy(kind: str, model, x: torch.Tensor, y: torch.Tensor, eps: float, norm, rng: PointRNG) -> torch.Tensor:
    """Goodfellow et al.'s control for adversarial training: x plus random noise of the threat's
    size, in the [0, 1] box, the model unused. ``noise-sign``: +-eps per pixel with equal odds
    (a corner of the Linf ball); ``noise-uniform``: uniform in the eps ball of ``norm`` (Linf:
    U(-eps, eps) per pixel). Drawn per training image from ``rng`` (its index and epoch)."""
    if kind == "noise-sign":
        delta = eps * rng.signs(x.shape[1:], "noise-sign", dtype=x.dtype)
    else:
        delta = norm.random_start(rng, x.shape[1:], torch.full((len(x),), float(eps), dtype=x.dtype, device=x.device), "noise-uniform")
    return (x + delta.to(x.device)).clamp(0, 1)


def train(
    model: torch.nn.Module,
    cfg: TrainConfig,
    x: torch.Tensor,
    y: torch.Tensor,
    x_eval: torch.Tensor,
    y_eval: torch.Tensor,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> dict:
    """Train in place; report {train_loss, clean_acc} after every epoch. Returns final metrics."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # dropout masks come from the global generator
        return _train(model, cfg, x, y, x_eval, y_eval, on_epoch)


def _train(model, cfg, x, y, x_eval, y_eval, on_epoch) -> dict:
    # The batch order is drawn on the CPU (indices); an adversary's random starts come from a
    # PointRNG keyed by each training image's index, on whatever device the data is.
    order = torch.Generator(device="cpu").manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batches = -(-len(x) // cfg.batch_size)
    # Cosine decay to 0 over all steps: Adam's steps shrink with it, so a convex objective (the
    # SVM's) converges instead of hovering at a noise floor of about lr per coordinate.
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * batches) if cfg.lr_schedule == "cosine" else None
    adv = cfg.adversarial
    if adv is not None:
        attack = partial(noisy, adv.attack) if adv.attack in NOISE else attacks.make(adv.attack, **adv.attack_options())
        norm = norms.get(adv.norm)
    start = time.perf_counter()
    metrics = {}
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        total, count = 0.0, 0
        adversary = PointRNG(stream_seed(cfg.seed, "adversarial-training", epoch), torch.arange(len(x), device=x_eval.device))
        for idx in torch.randperm(len(x), generator=order).split(cfg.batch_size):
            xb, yb = x[idx.to(x.device)].to(x_eval.device), y[idx.to(y.device)].to(x_eval.device)
            if adv is None or adv.alpha == 1:
                loss = objectives.training_loss(model, xb, yb)
            else:
                x_adv = attack(model, xb, yb, adv.eps, norm, rng=adversary[idx.to(x_eval.device)])
                loss = (1 - adv.alpha) * objectives.training_loss(model, x_adv, yb)
                if adv.alpha > 0:
                    loss = loss + adv.alpha * objectives.training_loss(model, xb, yb)
            if cfg.l2:
                loss = loss + cfg.l2 * weight_penalty(model)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if schedule:
                schedule.step()
            total += loss.item() * len(idx)
            count += len(idx)
        if isinstance(model, models.Triplet):
            model.fit_centroids(x, y)  # its classifier: the class centroids of this epoch's embeddings
        metrics = {"epoch": epoch, "train_loss": total / count, "clean_acc": accuracy(model, x_eval, y_eval)}
        if on_epoch:
            on_epoch(epoch, metrics)
    model.eval()
    return {**metrics, "train_s": time.perf_counter() - start}
