"""The class-conditional generator of unrestricted adversarial examples (Song et al. 2018).

An auxiliary-classifier GAN trained with the Wasserstein loss and gradient penalty, as Song et
al. train theirs (AC-WGAN-GP): the generator G(z, y) takes z ~ N(0, I) and a class y (one-hot,
concatenated to z) and draws an image of that class; the critic has two heads on one body, the
WGAN score and an auxiliary classifier c(x) over the classes. The critic minimises
D(G(z, y)) - D(x) + gp * GP + aux * (CE(c(x), y_x) + CE(c(G(z, y)), y)) and the generator
-D(G(z, y)) + aux * CE(c(G(z, y)), y), with y drawn uniformly over the classes. The networks are
study.generative's (``mlp`` sized for a CPU, ``conv`` Gulrajani et al.'s for 28 x 28 images).
``trained(...)`` gets it from the model store or trains and stores it once per dataset and
config, like the study's generative model.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from study import generative
from study.store import ModelStore


class ACGAN(nn.Module):
    def __init__(self, cfg, shape: tuple[int, int, int], n_classes: int):
        super().__init__()
        self.cfg, self.latent_dim, self.n_classes = cfg, cfg.latent_dim, n_classes
        gen, critic, _ = generative.networks(cfg.arch, tuple(shape), cfg.latent_dim + n_classes, cfg.width)
        self.generator = gen
        self.body = critic[:-1]  # the WGAN critic up to its score layer
        features = critic[-1].in_features
        self.score, self.classifier = nn.Linear(features, 1), nn.Linear(features, n_classes)

    def generate(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """G(z, y), differentiable in z (the latent search steps through it)."""
        return self.generator(torch.cat([z, F.one_hot(y, self.n_classes).to(z.dtype)], dim=1))

    def critic(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(WGAN score (N,), auxiliary class logits (N, C))."""
        h = self.body(x)
        return self.score(h).squeeze(1), self.classifier(h)

    def aux_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(x)[1]


def train(model: ACGAN, x: torch.Tensor, y: torch.Tensor, progress: bool = True) -> dict:
    """Train the generator and the two-headed critic; returns the last losses and seconds."""
    cfg = model.cfg
    gen = torch.Generator(device=x.device).manual_seed(cfg.seed)
    betas = tuple(cfg.betas)
    opt_g = torch.optim.Adam(model.generator.parameters(), lr=cfg.lr, betas=betas)
    critic_params = [*model.body.parameters(), *model.score.parameters(), *model.classifier.parameters()]
    opt_d = torch.optim.Adam(critic_params, lr=cfg.lr, betas=betas)

    def real():
        idx = torch.randint(len(x), (cfg.batch_size,), generator=gen, device=x.device)
        return x[idx], y[idx]

    def fake():
        z = torch.randn(cfg.batch_size, cfg.latent_dim, generator=gen, device=x.device)
        labels = torch.randint(model.n_classes, (cfg.batch_size,), generator=gen, device=x.device)
        return model.generate(z, labels), labels

    score = lambda v: model.critic(v)[0]
    start, out = time.perf_counter(), {}
    model.train()
    bar = tqdm(total=cfg.steps, desc="advsweep AC-GAN", unit="step", disable=not progress, file=sys.stderr, mininterval=5)
    for _ in range(cfg.steps):
        for _ in range(cfg.critic_steps):
            (xr, yr), (xf, yf) = real(), fake()
            xf = xf.detach()
            s_real, c_real = model.critic(xr)
            s_fake, c_fake = model.critic(xf)
            aux = F.cross_entropy(c_real, yr) + F.cross_entropy(c_fake, yf)
            loss_d = s_fake.mean() - s_real.mean() + cfg.gp * generative.gradient_penalty(score, xr, xf, gen) + cfg.aux_weight * aux
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
        xf, yf = fake()
        s_fake, c_fake = model.critic(xf)
        loss_g = -s_fake.mean() + cfg.aux_weight * F.cross_entropy(c_fake, yf)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        out = {"critic_loss": loss_d.item(), "generator_loss": loss_g.item(), "aux_real_acc": (c_real.argmax(1) == yr).float().mean().item()}
        bar.update()
        bar.set_postfix({k: f"{v:.3g}" for k, v in out.items()}, refresh=False)
    bar.close()
    model.eval()
    return {**out, "train_s": time.perf_counter() - start}


def acgan_key(cfg, data_fingerprint: str) -> str:
    """Content hash of what determines the model: its config (seed included), the data, the code."""
    code = hashlib.sha256(Path(__file__).read_bytes() + Path(generative.__file__).read_bytes()).hexdigest()[:12]
    blob = json.dumps({"acgan": cfg.model_dump(mode="json"), "data": data_fingerprint, "code": code}, sort_keys=True)
    return "acgan-" + hashlib.sha256(blob.encode()).hexdigest()[:20]


def trained(cfg, x_train: torch.Tensor, y_train: torch.Tensor, n_classes: int, data_fingerprint: str, store: ModelStore, progress: bool = True) -> tuple[ACGAN, dict]:
    """The AC-GAN for (dataset, config): from the store when it was trained before, else trained
    now and stored. Returns (model in eval mode, metadata incl. key and from_store)."""
    key = acgan_key(cfg, data_fingerprint)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # the initial weights
        model = ACGAN(cfg, tuple(x_train.shape[1:]), n_classes).to(x_train.device)
        meta = store.load(key, model)
        if meta is not None:
            return model.eval().requires_grad_(False), {**meta, "key": key, "from_store": True}
        out = train(model, x_train, y_train, progress)
    meta = {"train_s": out["train_s"], **{k: float(v) for k, v in out.items() if k != "train_s"}}
    store.save(key, model, meta)
    return model.requires_grad_(False), {**meta, "key": key, "from_store": False}


@torch.no_grad()
def class_grid(model: ACGAN, per_class: int, seed: int) -> bytes:
    """PNG: ``per_class`` samples G(z, y) of every class, one row per class."""
    device = next(model.parameters()).device
    z = torch.randn(model.n_classes * per_class, model.latent_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    y = torch.arange(model.n_classes, device=device).repeat_interleave(per_class)
    return generative.image_grid(model.generate(z, y), cols=per_class)
