"""The generative model of natural adversaries: a WGAN-GP generator G and critic, and an inverter I.

G maps z ~ N(0, I) to images in [0, 1]; I maps images back to z. WGAN-GP (Gulrajani et al.
2017): the critic minimises D(G(z)) - D(x) + gp * (||grad D(x_hat)|| - 1)^2 on random
interpolates x_hat, ``critic_steps`` times per generator step. The inverter minimises
mean (x - G(I(x)))^2 + lambda * mean (z - I(G(z)))^2 (Zhao, Dua & Singh 2018; element means as in
their code), either in the same loop, one inverter step after each critic step as the paper's
schedule does (``joint_inverter``), or after the WGAN with G frozen (``inverter_steps``), which
matches I to the final G at a fraction of the cost.

Two architectures: ``conv`` is the paper's (Gulrajani et al.'s MNIST networks, 5 x 5 kernels,
``width`` = their DIM), ``mlp`` fully connected networks sized for a CPU. ``Generative`` bundles
the three networks; ``trained(...)`` gets it from the model store or trains and stores it once
per dataset and config.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from study.store import ModelStore


class _Reshape(nn.Module):
    def __init__(self, *shape):
        super().__init__()
        self.shape = shape

    def forward(self, x):
        return x.reshape(len(x), *self.shape)


class _Crop(nn.Module):
    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, x):
        return x[:, :, : self.size, : self.size]


def _conv_stack(channels: int, width: int) -> list[nn.Module]:
    """28 -> 14 -> 7 -> 4: the critic's (and the inverter's) convolutions."""
    return [
        nn.Conv2d(channels, width, 5, stride=2, padding=2), nn.LeakyReLU(0.2),
        nn.Conv2d(width, 2 * width, 5, stride=2, padding=2), nn.LeakyReLU(0.2),
        nn.Conv2d(2 * width, 4 * width, 5, stride=2, padding=2), nn.LeakyReLU(0.2),
        nn.Flatten(),
    ]


def networks(arch: str, shape: tuple[int, int, int], latent_dim: int, width: int) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(generator, critic, inverter) for images of ``shape`` (C, 28, 28)."""
    c, h, w = shape
    if arch == "conv":
        if (h, w) != (28, 28):
            raise ValueError(f"the conv generative networks take 28 x 28 images, not {h} x {w}")
        gen = nn.Sequential(
            nn.Linear(latent_dim, 4 * 4 * 4 * width), nn.ReLU(), _Reshape(4 * width, 4, 4),
            nn.ConvTranspose2d(4 * width, 2 * width, 5, stride=2, padding=2, output_padding=1), nn.ReLU(), _Crop(7),
            nn.ConvTranspose2d(2 * width, width, 5, stride=2, padding=2, output_padding=1), nn.ReLU(),
            nn.ConvTranspose2d(width, c, 5, stride=2, padding=2, output_padding=1), nn.Sigmoid(),
        )
        critic = nn.Sequential(*_conv_stack(c, width), nn.Linear(4 * width * 16, 1))
        inverter = nn.Sequential(*_conv_stack(c, width), nn.Linear(4 * width * 16, 8 * width), nn.LeakyReLU(0.2), nn.Linear(8 * width, latent_dim))
        return gen, critic, inverter
    d = c * h * w
    gen = nn.Sequential(
        nn.Linear(latent_dim, width), nn.ReLU(), nn.Linear(width, 2 * width), nn.ReLU(),
        nn.Linear(2 * width, d), nn.Sigmoid(), _Reshape(c, h, w),
    )
    critic = nn.Sequential(nn.Flatten(), nn.Linear(d, 2 * width), nn.LeakyReLU(0.2), nn.Linear(2 * width, width), nn.LeakyReLU(0.2), nn.Linear(width, 1))
    inverter = nn.Sequential(nn.Flatten(), nn.Linear(d, 2 * width), nn.LeakyReLU(0.2), nn.Linear(2 * width, width), nn.LeakyReLU(0.2), nn.Linear(width, latent_dim))
    return gen, critic, inverter


class Generative(nn.Module):
    def __init__(self, cfg, shape: tuple[int, int, int]):
        super().__init__()
        self.cfg = cfg
        self.latent_dim = cfg.latent_dim
        self.generator, self.critic, self.inverter = networks(cfg.arch, tuple(shape), cfg.latent_dim, cfg.width)

    @torch.no_grad()
    def generate(self, z: torch.Tensor, batch: int = 4096) -> torch.Tensor:
        return _batched(self.generator, z, batch)

    @torch.no_grad()
    def invert(self, x: torch.Tensor, batch: int = 4096) -> torch.Tensor:
        return _batched(self.inverter, x, batch)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """G(I(x)): the projection onto the generator's manifold (the reconstruction defense)."""
        return self.generate(self.invert(x))


def _batched(net: nn.Module, v: torch.Tensor, batch: int) -> torch.Tensor:
    # range(max(len, 1)): an empty input still makes one (empty) call, so the result has its shape.
    return torch.cat([net(v[i : i + batch]) for i in range(0, max(len(v), 1), batch)])


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    alpha = torch.rand(len(real), *([1] * (real.dim() - 1)), generator=gen, device=real.device)
    x_hat = (real + alpha * (fake - real)).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).square().mean()


def inverter_loss(model: Generative, x: torch.Tensor, z: torch.Tensor, lam: float) -> torch.Tensor:
    return (x - model.generator(model.inverter(x))).square().mean() + lam * (z - model.inverter(model.generator(z))).square().mean()


def train(model: Generative, x: torch.Tensor, progress: bool = True) -> dict:
    """Train G and the critic (WGAN-GP), then or meanwhile the inverter; returns losses and seconds."""
    cfg = model.cfg
    gen = torch.Generator(device=x.device).manual_seed(cfg.seed)
    betas = tuple(cfg.betas)
    opt_g = torch.optim.Adam(model.generator.parameters(), lr=cfg.lr, betas=betas)
    opt_d = torch.optim.Adam(model.critic.parameters(), lr=cfg.lr, betas=betas)
    opt_i = torch.optim.Adam(model.inverter.parameters(), lr=cfg.lr, betas=betas)

    def batch():
        return x[torch.randint(len(x), (cfg.batch_size,), generator=gen, device=x.device)]

    def noise():
        return torch.randn(cfg.batch_size, cfg.latent_dim, generator=gen, device=x.device)

    def inverter_step():
        loss = inverter_loss(model, batch(), noise(), cfg.inverter_lambda)
        opt_i.zero_grad(set_to_none=True)
        loss.backward()
        opt_i.step()
        return loss.item()

    start = time.perf_counter()
    out = {}
    model.train()
    bar = tqdm(total=cfg.steps + cfg.inverter_steps, desc="advsweep generative model", unit="step", disable=not progress, file=sys.stderr, mininterval=5)
    for _ in range(cfg.steps):
        for _ in range(cfg.critic_steps):
            real, fake = batch(), model.generator(noise()).detach()
            loss_d = model.critic(fake).mean() - model.critic(real).mean() + cfg.gp * gradient_penalty(model.critic, real, fake, gen)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            if cfg.joint_inverter:
                out["inverter_loss"] = inverter_step()
        loss_g = -model.critic(model.generator(noise())).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        out.update(critic_loss=loss_d.item(), generator_loss=loss_g.item())
        bar.update()
        bar.set_postfix({k: f"{v:.3g}" for k, v in out.items()}, refresh=False)
    model.generator.requires_grad_(False)  # the inverter's phase: G frozen
    for _ in range(cfg.inverter_steps):
        out["inverter_loss"] = inverter_step()
        bar.update()
        bar.set_postfix(inverter_loss=f"{out['inverter_loss']:.3g}", refresh=False)
    model.generator.requires_grad_(True)
    bar.close()
    model.eval()
    return {**out, "train_s": time.perf_counter() - start}


def generative_key(cfg, data_fingerprint: str) -> str:
    """Content hash of what determines the model: its config (seed included), the data, the code."""
    code = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    blob = json.dumps({"generative": cfg.model_dump(mode="json"), "data": data_fingerprint, "code": code}, sort_keys=True)
    return "gen-" + hashlib.sha256(blob.encode()).hexdigest()[:20]


def trained(cfg, x_train: torch.Tensor, data_fingerprint: str, store: ModelStore, progress: bool = True) -> tuple[Generative, dict]:
    """The generative model for (dataset, config): from the store when it was trained before,
    else trained now and stored. Returns (model in eval mode, metadata incl. key and from_store)."""
    key = generative_key(cfg, data_fingerprint)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # the initial weights
        model = Generative(cfg, tuple(x_train.shape[1:])).to(x_train.device)
        meta = store.load(key, model)
        if meta is not None:
            return model.eval(), {**meta, "key": key, "from_store": True}
        out = train(model, x_train, progress)
    meta = {"train_s": out["train_s"], **{k: float(v) for k, v in out.items() if k.endswith("_loss")}}
    store.save(key, model, meta)
    return model, {**meta, "key": key, "from_store": False}


def image_grid(images: torch.Tensor, cols: int) -> bytes:
    """PNG bytes of images (N, C, H, W) in [0, 1], ``cols`` per row, 2 px gaps."""
    from PIL import Image

    n, c, h, w = images.shape
    rows = -(-n // cols)
    canvas = torch.ones(c, rows * (h + 2) + 2, cols * (w + 2) + 2)
    for i, img in enumerate(images.detach().cpu().clamp(0, 1)):
        r, k = divmod(i, cols)
        canvas[:, 2 + r * (h + 2) : 2 + r * (h + 2) + h, 2 + k * (w + 2) : 2 + k * (w + 2) + w] = img
    arr = (canvas.permute(1, 2, 0).squeeze(-1).numpy() * 255 + 0.5).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()
