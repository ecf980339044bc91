"""Robust and non-robust features (Ilyas et al. 2019): training sets rebuilt by a source model.

* ``robust`` (D_R) and ``non-robust`` (D_NR): every training image x becomes x_r, whose
  penultimate-layer representation g(x_r) under the source model matches g(x). Normalised L2
  gradient steps on ||g(x_r) - g(x)||_2 from a start x_0 (``other``: a random training image,
  any class; ``noise``: uniform noise), kept in [0, 1], with the step decaying linearly to 0 so
  the last steps settle instead of circling the optimum. The label stays y. D_R's source is
  adversarially trained, so x_r keeps only the features a robust model uses; D_NR's source is
  standard.
* ``rand`` (D_rand) and ``det`` (D_det): targeted L2 PGD on the standard source, toward t
  drawn uniformly from all classes or t = (y + 1) mod C, within ``eps`` of x; the final iterate
  is labelled t. To a person the images still show y: only non-robust features tie them to t.
* ``shuffled`` (D_shuf), a control for D_R: x plus D_R's change x_r - x of another image
  (a fixed random permutation), kept in [0, 1], labelled y. It changes the images as much as
  D_R does, but the change carries no information about their labels, so a model trained on
  it separates what D_R's robust features buy from what any such change buys (noise
  augmentation also adds robustness).

A constructed set is keyed by its config, its source model's key and the code, kept in the
model store, and built once (``built``); sweeps build every set their grid names before the
trials (study.trial.prepare_features).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from study.norms import L2
from study.store import ModelStore, model_key

KINDS = ("robust", "non-robust", "rand", "det", "shuffled")
NAMES = {None: "D", "robust": "D_R", "non-robust": "D_NR", "rand": "D_rand", "det": "D_det", "shuffled": "D_shuf"}
_TINY = 1e-12


def representation(model: nn.Module) -> nn.Module:
    """g: the model up to its last layer (a registry model is an nn.Sequential ending in the
    read-out)."""
    if not isinstance(model, nn.Sequential) or len(model) < 2:
        raise ValueError(f"{type(model).__name__} has no penultimate layer to match")
    return model[:-1]


def _unit(g: torch.Tensor) -> torch.Tensor:
    return g / g.flatten(1).norm(dim=1).clamp_min(_TINY).view(-1, *([1] * (g.dim() - 1)))


def match(model: nn.Module, x: torch.Tensor, start: torch.Tensor, steps: int, step: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x_r minimising ||g(x_r) - g(x)||_2 from ``start``. Returns (x_r, distance at the start,
    distance at the end), per image."""
    g = representation(model)
    with torch.no_grad():
        goal = g(x).flatten(1)
        before = (g(start).flatten(1) - goal).norm(dim=1)
    xr = start.clone()
    for i in range(steps):
        xr.requires_grad_(True)
        dist = (g(xr).flatten(1) - goal).norm(dim=1)
        (grad,) = torch.autograd.grad(dist.sum(), xr)
        with torch.no_grad():
            xr = (xr - step * (1 - i / steps) * _unit(grad)).clamp(0, 1)
    with torch.no_grad():
        after = (g(xr).flatten(1) - goal).norm(dim=1)
    return xr.detach(), before, after


def targeted(model: nn.Module, x: torch.Tensor, target: torch.Tensor, eps: float, step: float, steps: int) -> torch.Tensor:
    """Targeted L2 PGD: normalised steps down the cross-entropy toward ``target``, projected on
    the eps-ball around x and the [0, 1] box; the final iterate."""
    radius = torch.full((len(x),), eps, device=x.device, dtype=x.dtype)
    xa = x.clone()
    for _ in range(steps):
        xa.requires_grad_(True)
        loss = F.cross_entropy(model(xa), target, reduction="sum")
        (grad,) = torch.autograd.grad(loss, xa)
        with torch.no_grad():
            xa = (x + L2.project(xa - step * _unit(grad) - x, radius)).clamp(0, 1)
    return xa.detach()


def targets(kind: str, y: torch.Tensor, n_classes: int, generator: torch.Generator) -> torch.Tensor:
    """D_rand: uniform over all classes (so t carries no information about y); D_det: (y + 1) mod C."""
    if kind == "det":
        return (y + 1) % n_classes
    return torch.randint(n_classes, y.shape, generator=generator).to(y.device)


def shuffle_changes(x: torch.Tensor, matched: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """D_shuf: every x plus the change ``matched`` - x of another image (a random permutation),
    kept in [0, 1]."""
    perm = torch.randperm(len(x), generator=generator).to(x.device)
    return (x + (matched - x)[perm]).clamp(0, 1)


def matched_set(cfg):
    """The D_R whose changes a ``shuffled`` set permutes: the same matching settings."""
    return cfg.model_copy(update={"kind": "robust"})


def source_name(kind: str) -> str:
    """Which source model of the spec's ``features:`` section builds a set of ``kind``."""
    return "robust" if kind in ("robust", "shuffled") else "standard"


def name(train_set) -> str:
    """A set's short name: D (the dataset's own split), D_R, D_NR, D_rand eps=3, ..., with every
    setting off its kind's default (D_R start=noise), so two sets never share a name."""
    if train_set is None:
        return NAMES[None]
    default = type(train_set)(kind=train_set.kind, eps=train_set.eps)
    parts = [NAMES[train_set.kind]] + ([f"eps={train_set.eps:g}"] if train_set.eps is not None else [])
    for field in ("start", "steps", "step"):
        value = getattr(train_set, field)
        if value != getattr(default, field):
            parts.append(f"{field}={value:g}" if isinstance(value, float) else f"{field}={value}")
    return " ".join(parts)


def construct(cfg, source: nn.Module, x: torch.Tensor, y: torch.Tensor, n_classes: int, seed: int, batch: int = 500, progress: bool = True, matched: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The constructed set (x', y') of ``cfg`` (a spec.TrainSet) from training data (x, y), and
    its statistics: target_rate / rep_reduction, l2_mean, label_agreement. A ``shuffled`` set
    takes its D_R's images as ``matched``."""
    if cfg.kind == "shuffled":
        if matched is None:
            raise ValueError("a shuffled set needs the images of its D_R (matched)")
        out = shuffle_changes(x, matched, torch.Generator().manual_seed(seed))
        return out, y.clone(), {"n": len(x), "l2_mean": (out - x).flatten(1).norm(dim=1).mean().item(), "label_agreement": 1.0, "target_rate": None, "rep_reduction": None}
    was_training = source.training
    source.eval()
    gen = torch.Generator().manual_seed(seed)
    n = len(x)
    if cfg.kind in ("rand", "det"):
        new_y = targets(cfg.kind, y, n_classes, gen)
    else:
        new_y = y.clone()
        if cfg.start == "other":
            start = x[torch.randperm(n, generator=gen).to(x.device)]
        else:
            start = torch.rand(x.shape, generator=gen).to(x)
    out, before, after = torch.empty_like(x), torch.empty(n, device=x.device), torch.empty(n, device=x.device)
    bar = tqdm(total=n, desc=f"building {NAMES[cfg.kind]}", unit="img", disable=not progress, mininterval=2)
    for i in range(0, n, batch):
        sl = slice(i, i + batch)
        if cfg.kind in ("rand", "det"):
            out[sl] = targeted(source, x[sl], new_y[sl], cfg.eps, cfg.step, cfg.steps)
        else:
            out[sl], before[sl], after[sl] = match(source, x[sl], start[sl], cfg.steps, cfg.step)
        bar.update(len(x[sl]))
    bar.close()
    source.train(was_training)
    stats = {
        "n": n,
        "l2_mean": (out - x).flatten(1).norm(dim=1).mean().item(),
        "label_agreement": (new_y == y).float().mean().item(),
        "target_rate": None,
        "rep_reduction": None,
    }
    with torch.no_grad():
        if cfg.kind in ("rand", "det"):
            pred = torch.cat([source(out[i : i + batch]).argmax(1) for i in range(0, n, batch)])
            stats["target_rate"] = (pred == new_y).float().mean().item()
        else:
            stats["rep_reduction"] = 1 - after.mean().item() / before.mean().item()
    return out, new_y, stats


class _Set(nn.Module):
    """A constructed set as buffers, so the model store keeps it (atomic writes, weights_only loads)."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.register_buffer("x", torch.zeros(shape))
        self.register_buffer("y", torch.zeros(shape[0], dtype=torch.int64))


def set_key(spec, train_set, data_fingerprint: str) -> str:
    """Content hash of what determines a constructed set: its config, its source model's store
    key (the spec's ``features:`` config of it and the data), the data it rebuilds, the study
    seed and this code."""
    source = getattr(spec.features, source_name(train_set.kind))
    code = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    blob = json.dumps(
        {"set": train_set.model_dump(mode="json"), "source": model_key(source.model_dump(mode="json"), data_fingerprint), "data": data_fingerprint, "seed": spec.seed, "code": code},
        sort_keys=True,
    )
    return "set-" + hashlib.sha256(blob.encode()).hexdigest()[:20]


def fit_fingerprint(spec, train_set, data_fingerprint: str) -> str:
    """The identity of what a trial's model is trained on, for its store key: the dataset's
    fingerprint, or the constructed set's key."""
    return data_fingerprint if train_set is None else set_key(spec, train_set, data_fingerprint)


def stored(key: str, shape: tuple[int, ...], store: ModelStore, device) -> tuple[torch.Tensor, torch.Tensor, dict] | None:
    """The constructed set ``key`` (its images of ``shape``) from the store, or None."""
    holder = _Set(shape).to(device)
    meta = store.load(key, holder)
    return None if meta is None else (holder.x, holder.y, {**meta, "from_store": True})


def built(cfg, key: str, source: nn.Module, x: torch.Tensor, y: torch.Tensor, n_classes: int, seed: int, store: ModelStore, progress: bool = True, matched: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The constructed set from the store, or built now and stored. Returns (x', y', metadata)."""
    found = stored(key, tuple(x.shape), store, x.device)
    if found is not None:
        return found
    holder = _Set(tuple(x.shape)).to(x.device)
    start = time.perf_counter()
    xs, ys, stats = construct(cfg, source, x, y, n_classes, seed, progress=progress, matched=matched)
    meta = {**stats, "build_s": time.perf_counter() - start}
    holder.x.copy_(xs)
    holder.y.copy_(ys)
    store.save(key, holder, meta)
    return xs, ys, {**meta, "from_store": False}


def sample_grid(x: torch.Tensor, x_new: torch.Tensor, y_new: torch.Tensor, y: torch.Tensor, per_class: int = 1, scale: int = 2) -> bytes:
    """PNG: one column per class (its first ``per_class`` images), originals above their
    constructed images, each constructed image's label written under it."""
    from PIL import Image, ImageDraw, ImageFont

    cols = [i for c in torch.unique(y).tolist() for i in torch.nonzero(y == c).flatten()[:per_class].tolist()]
    h, w = x.shape[-2:]
    cell_w, cell_h, text = w * scale + 4, h * scale + 4, 14
    canvas = Image.new("RGB", (len(cols) * cell_w + 4, 2 * cell_h + text + 4), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for k, i in enumerate(cols):
        for r, img in enumerate((x[i], x_new[i])):
            arr = (img.detach().cpu().clamp(0, 1).expand(3, -1, -1).permute(1, 2, 0).numpy() * 255 + 0.5).astype("uint8")
            canvas.paste(Image.fromarray(arr).resize((w * scale, h * scale), Image.NEAREST), (4 + k * cell_w, 4 + r * cell_h))
        draw.text((4 + k * cell_w + w * scale // 2 - 3, 4 + 2 * cell_h), str(int(y_new[i])), fill=(0, 0, 0), font=font)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()
