"""Model registry: name -> factory(input_shape, n_classes, **hyperparameters) -> nn.Module.

Every model outputs one logit per class. A registration also names the model's training
objective (study.objectives) and whether it only separates two classes. Hyperparameters a
factory takes as keyword arguments (e.g. maxout's ``pieces``) are training axes of the spec
(``MODEL_PARAMS``); a factory's own default applies when the spec leaves one unset.

A user's model is named by import path (``mylab.nets:WideResNet``, or ``torchvision.models:
resnet18``): any callable returning an ``nn.Module`` of [0, 1] images, called with the spec's
keyword arguments (``model_args``) and, where its signature has them, ``num_classes`` /
``n_classes`` and ``input_shape``. ``entry(name)`` gives the registration of either kind.
Input normalisation (``Normalized``) is part of the model, so attacks work in pixel space.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from study import imports
from study.mc import MCDropout

# Training-config fields that are model hyperparameters, passed to the factories that take them.
MODEL_PARAMS = ("pieces", "dropout", "margin", "triplet_loss", "hidden", "channels")


@dataclass(frozen=True)
class Registered:
    factory: Callable[..., nn.Module]
    objective: str = "cross_entropy"
    binary: bool = False  # separates exactly two classes (needs a two-class data filter)
    linear: bool = False  # logits affine in the input: closed-form geometry on two classes
    stochastic: bool = False  # MC dropout kept on at prediction (study.mc)
    embedding: bool = False  # a model of the user's with ``embed(x)`` (a triplet model has one by its objective)
    ensemble: bool = False  # members whose averaged probabilities it predicts with (``Ensemble``)

    def params(self) -> set[str]:
        return set(inspect.signature(self.factory).parameters) & set(MODEL_PARAMS)

    @property
    def embeds(self) -> bool:
        """Whether the model has a metric-learned embedding (``embed``): triplet, or a model of
        the user's that declares one."""
        return self.objective == "triplet" or self.embedding

    @property
    def capabilities(self) -> frozenset[str]:
        """What evaluators may need of a model (an entry's ``every_model_needs`` /
        ``some_model_needs``): ``stochastic``, ``embedding``."""
        return frozenset(c for c, has in (("stochastic", self.stochastic), ("embedding", self.embeds), ("linear", self.linear), ("ensemble", self.ensemble)) if has)


# What a model of the user's may declare (``capabilities = ("stochastic",)`` on its class or
# factory), each checked on the built model before Ray starts (study.preflight).
CAPABILITIES = {
    "stochastic": "MC dropout kept on at prediction (study.mc.MCDropout layers)",
    "embedding": "an embedding, model.embed(x)",
    "linear": "logits affine in the input (the geometry evaluator's closed forms on two classes)",
    "ensemble": "members whose averaged class probabilities it predicts with (model.members: an nn.ModuleList of classifiers)",
}


MODELS: dict[str, Registered] = {}


def register(name: str, objective: str = "cross_entropy", binary: bool = False, linear: bool = False, stochastic: bool = False):
    def deco(factory):
        MODELS[name] = Registered(factory, objective, binary, linear, stochastic)
        return factory

    return deco


# What advsweep passes to an imported model's callable when its signature asks for it.
_PROVIDED = ("num_classes", "n_classes", "input_shape")


class Ensemble(nn.Module):
    """Members trained separately, predicting by their averaged class probabilities
    (``model: {ensemble: [...]}``; study.train.init_model builds it from the members' configs).
    Its output is the log of that average, so its argmax is the ensemble's class, its softmax
    the averaged probabilities, and cross-entropy on it their negative log-likelihood: every
    attack differentiates through the whole ensemble."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x):
        logp = torch.stack([F.log_softmax(m(x), dim=1) for m in self.members])
        return torch.logsumexp(logp, dim=0) - math.log(len(self.members))


def _ensemble_factory(input_shape, n_classes):
    raise ValueError("an ensemble is built from its members' configs (study.train.init_model)")


def entry(name: str) -> Registered:
    """The registration of a registry model or of an imported one (checked: importable, callable)."""
    if name in MODELS:
        return MODELS[name]
    if imports.is_import_path(name):
        return _imported(name)
    raise ValueError(f"unknown model {name!r} (known: {', '.join(MODELS)}; or a model of yours by import path, e.g. mylab.nets:WideResNet)")


@lru_cache(maxsize=None)
def _imported(path: str) -> Registered:
    fn = imports.resolve(path)

    def factory(input_shape, n_classes, **kwargs):
        params = inspect.signature(fn).parameters if _has_signature(fn) else {}
        given = {"num_classes": n_classes, "n_classes": n_classes, "input_shape": tuple(input_shape)}
        extra = {k: v for k, v in given.items() if k in params and k not in kwargs}
        model = fn(**kwargs, **extra)
        if not isinstance(model, nn.Module):
            raise ValueError(f"{path} returned {type(model).__name__}, not a torch.nn.Module")
        return model

    factory.target = fn
    declared = getattr(fn, "capabilities", ())
    if isinstance(declared, str) or not all(c in CAPABILITIES for c in declared):
        raise ValueError(f"{path}: capabilities must list some of {', '.join(CAPABILITIES)}, got {declared!r}")
    return Registered(factory, stochastic="stochastic" in declared, linear="linear" in declared, embedding="embedding" in declared, ensemble="ensemble" in declared)


def _has_signature(fn) -> bool:
    try:
        inspect.signature(fn)
        return True
    except (TypeError, ValueError):
        return False


def check_args(name: str, args: dict) -> None:
    """An imported model's keyword arguments bind to its callable (ValueError naming the one
    that does not); a registry model takes its hyperparameters as training axes instead."""
    registered = entry(name)
    target = getattr(registered.factory, "target", None)
    if target is None:
        if args:
            raise ValueError(f"{name} is a registry model: set its hyperparameters as training axes or in a model variant, not model_args")
        return
    imports.check_call(target, name, args, provided=_PROVIDED)


def build(name: str, input_shape: tuple[int, ...], n_classes: int, model_args: dict | None = None, normalize: dict | None = None, **params) -> nn.Module:
    registered = entry(name)
    unknown = set(params) - registered.params()
    if unknown:
        raise ValueError(f"model {name!r} takes no {', '.join(sorted(unknown))}")
    if registered.binary and n_classes != 2:
        raise ValueError(f"model {name!r} separates two classes; the data has {n_classes}")
    model = registered.factory(tuple(input_shape), n_classes, **(model_args or {}), **params)
    if normalize is not None:
        model = Normalized(model, normalize["mean"], normalize["std"])
    model.objective = registered.objective
    return model


class Normalized(nn.Module):
    """(x - mean) / std per channel in front of a model, so the model sees its normalised inputs
    while attacks, eps and the [0, 1] box stay in pixel space. Its state dict is the inner
    model's (mean and std are not stored: they are part of the spec)."""

    def __init__(self, inner: nn.Module, mean: list[float], std: list[float]):
        super().__init__()
        self.inner = inner
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x):
        return self.inner((x - self.mean) / self.std)

    def state_dict(self, *args, **kwargs):
        return self.inner.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.inner.load_state_dict(state_dict, strict=strict, assign=assign)


def binary_linear(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(w, b) with f(x) = w . x + b = logit_1(x) - logit_0(x) for a linear two-class model
    (linear-svm, or logreg on two classes); None for any other model."""
    layers = [m for m in model.modules() if not isinstance(m, (nn.Sequential, nn.Flatten, LinearSVM))]
    if len(layers) != 1 or not isinstance(layers[0], nn.Linear):
        return None
    lin = layers[0]
    if isinstance(model, LinearSVM):
        return lin.weight[0].detach(), lin.bias[0].detach()
    if lin.out_features != 2:
        return None
    return (lin.weight[1] - lin.weight[0]).detach(), (lin.bias[1] - lin.bias[0]).detach()


@register("logreg", linear=True)
def logreg(input_shape, n_classes):
    """Multinomial logistic regression (a single linear layer on raw pixels)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), n_classes))


@register("mlp")
def mlp(input_shape, n_classes, hidden=256):
    return _mlp(input_shape, n_classes, hidden, dropout=0.0)


@register("mc-mlp", stochastic=True)
def mc_mlp(input_shape, n_classes, dropout=0.25, hidden=256):
    """The mlp with MC dropout after each hidden layer, kept on at prediction (study.mc)."""
    return _mlp(input_shape, n_classes, hidden, dropout)


def _mlp(input_shape, n_classes, hidden, dropout):
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), hidden),
        nn.ReLU(),
        *_mc_dropout(dropout),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        *_mc_dropout(dropout),
        nn.Linear(hidden, n_classes),
    )


def _mc_dropout(p: float) -> list[nn.Module]:
    return [MCDropout(p)] if p > 0 else []


class ChannelsLast(nn.Module):
    """Channels-last activations: about 1.5x faster convolutions on CPU for these small nets."""

    def forward(self, x):
        return x.contiguous(memory_format=torch.channels_last)


@register("cnn")
def cnn(input_shape, n_classes, channels=16, hidden=128):
    """Small LeNet-style network: two 5x5 conv + max-pool stages (channels / 2, then
    ``channels``), one dense layer of ``hidden`` units.

    Sized for a 2-core laptop (96-97% on mnist-5k after 8 epochs); the attack loop's cost is
    dominated by its forward/backward passes, so width is the quickstart's main time knob."""
    return _cnn(input_shape, n_classes, channels, hidden, dropout=0.0)


@register("mc-cnn", stochastic=True)
def mc_cnn(input_shape, n_classes, dropout=0.25, channels=16, hidden=128):
    """The cnn with MC dropout after each conv stage and the hidden layer, kept on at
    prediction: a Bayesian CNN in Gal's approximation (study.mc)."""
    return _cnn(input_shape, n_classes, channels, hidden, dropout)


def _cnn(input_shape, n_classes, channels, hidden, dropout):
    depth, height, width = input_shape
    c1, c2 = max(1, channels // 2), channels
    return nn.Sequential(
        ChannelsLast(),
        nn.Conv2d(depth, c1, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        *_mc_dropout(dropout),
        nn.Conv2d(c1, c2, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        *_mc_dropout(dropout),
        nn.Flatten(),
        nn.Linear(c2 * (height // 4) * (width // 4), hidden),
        nn.ReLU(),
        *_mc_dropout(dropout),
        nn.Linear(hidden, n_classes),
    ).to(memory_format=torch.channels_last)


@register("resnet18")
def resnet18(input_shape, n_classes):
    """torchvision's ResNet-18 in its small-image form (3 x 3 stem, stride 1, no max-pool, as for
    CIFAR-10), as a Sequential of the body (to the pooled 512 features) and the read-out, so its
    penultimate layer is ``model[:-1]`` like every registry model's."""
    from torchvision.models import resnet18 as tv_resnet18

    body = tv_resnet18(num_classes=n_classes)
    body.conv1 = nn.Conv2d(input_shape[0], 64, 3, stride=1, padding=1, bias=False)
    body.maxpool = nn.Identity()
    head, body.fc = body.fc, nn.Identity()
    return nn.Sequential(body, head)


class LinearSVM(nn.Module):
    """f(x) = w . x + b, output as the two logits (-f/2, f/2): argmax is the sign of f."""

    def __init__(self, n_inputs: int):
        super().__init__()
        self.linear = nn.Linear(n_inputs, 1)

    def forward(self, x):
        f = self.linear(x.flatten(1))
        return torch.cat([-f / 2, f / 2], dim=1)


@register("linear-svm", objective="hinge", binary=True, linear=True)
def linear_svm(input_shape, n_classes):
    """Linear support-vector machine: hinge loss; its L2 penalty is the `l2` training axis."""
    return LinearSVM(math.prod(input_shape))


class Maxout(nn.Module):
    """A dense maxout layer: each unit is the max of `pieces` affine pieces (Goodfellow et al. 2013)."""

    def __init__(self, n_in: int, units: int, pieces: int):
        super().__init__()
        self.units, self.pieces = units, pieces
        self.linear = nn.Linear(n_in, units * pieces)

    def forward(self, x):
        return self.linear(x).view(len(x), self.units, self.pieces).amax(2)


@register("maxout")
def maxout(input_shape, n_classes, pieces=5, units=240):
    """Two maxout layers and a linear read-out: piecewise linear, like Goodfellow's MNIST maxout net."""
    return nn.Sequential(
        nn.Flatten(),
        Maxout(math.prod(input_shape), units, pieces),
        Maxout(units, units, pieces),
        nn.Linear(units, n_classes),
    )


class RBF(nn.Module):
    """One Gaussian prototype per class with a learned centre and per-input widths:
    logit_k = -sum_i beta_ki (x_i - c_ki)^2, so p_k = exp(logit_k) is 1 at the centre and falls
    off with distance. Far from every prototype, every class has a low probability."""

    def __init__(self, n_inputs: int, n_classes: int):
        super().__init__()
        self.centres = nn.Parameter(torch.rand(n_classes, n_inputs))
        # Initial precision 4/d: a typical initial logit of about -1 on [0, 1] images.
        self.log_precision = nn.Parameter(torch.full((n_classes, n_inputs), math.log(4.0 / n_inputs)))

    def forward(self, x):
        x = x.flatten(1)
        beta = self.log_precision.exp()
        # sum_i beta_ki (x_i - c_ki)^2 expanded into matrix products: no batch x class x input tensor.
        return -(x.square() @ beta.T - 2 * x @ (beta * self.centres).T + (beta * self.centres.square()).sum(1))


@register("rbf", objective="one_vs_rest")
def rbf(input_shape, n_classes):
    return RBF(math.prod(input_shape), n_classes)


class Triplet(nn.Module):
    """A metric-learned embedding e(x) on the unit sphere (an embedding network trained with a
    triplet loss), which classifies by the nearest class centroid of its training embeddings:
    logit_k = -SCALE ||e(x) - mu_k||^2. So it is trained as a metric and attacked, evaluated
    and predicted like any classifier. ``fit_centroids`` (the training loop calls it after every
    epoch) sets the centroids; they are a buffer, stored with the weights."""

    SCALE = 10.0  # softmax temperature of the centroid logits: squared distances are <= 4

    def __init__(self, body: nn.Module, dim: int, n_classes: int, margin: float, loss: str):
        super().__init__()
        self.body, self.margin, self.loss = body, margin, loss
        self.register_buffer("centroids", torch.zeros(n_classes, dim))

    def embed(self, x):
        return F.normalize(self.body(x), dim=1)

    def forward(self, x):
        return -self.SCALE * (self.embed(x)[:, None, :] - self.centroids).square().sum(2)

    @torch.no_grad()
    def fit_centroids(self, x, y, batch: int = 4096):
        was_training = self.training
        self.eval()
        e = torch.cat([self.embed(x[i : i + batch]) for i in range(0, len(x), batch)])
        self.centroids.copy_(torch.stack([e[y == k].mean(0) if (y == k).any() else self.centroids[k] for k in range(len(self.centroids))]))
        self.train(was_training)

    def triplet_loss(self, emb, y):
        """Triplets drawn inside the batch: every anchor with a random positive (same class, not
        itself) and a random negative (another class); anchors with neither are left out.
        ``margin``: mean max(0, |a - p|^2 - |a - n|^2 + margin) (Schroff et al.). ``ratio``:
        d+ = softmax(|a - p|, |a - n|)_1, loss d+^2 + (d- - 1)^2 (Hoffer & Ailon)."""
        same = y[:, None] == y[None, :]
        positive = same & ~torch.eye(len(y), dtype=torch.bool, device=y.device)
        anchors = positive.any(1) & (~same).any(1)
        pick = lambda mask: torch.where(mask, torch.rand(mask.shape, device=y.device), -1.0).argmax(1)
        a, p, n = emb[anchors], emb[pick(positive)[anchors]], emb[pick(~same)[anchors]]
        d_ap, d_an = (a - p).square().sum(1), (a - n).square().sum(1)
        if self.loss == "margin":
            return F.relu(d_ap - d_an + self.margin).mean()
        d_plus, d_minus = torch.stack([d_ap, d_an], 1).clamp_min(1e-12).sqrt().softmax(1).unbind(1)
        return (d_plus.square() + (d_minus - 1).square()).mean()


@register("triplet", objective="triplet")
def triplet(input_shape, n_classes, margin=0.2, triplet_loss="margin", dim=32, channels=32, hidden=128):
    """A triplet network: the cnn's layers as the embedding network (output ``dim``, normalised),
    classifying by nearest class centroid. ``margin`` and ``triplet_loss`` are training axes."""
    return Triplet(_cnn(input_shape, dim, channels, hidden, dropout=0.0), dim, n_classes, margin, triplet_loss)


# Last, so the error messages list the models first: an ensemble is built from their configs.
MODELS["ensemble"] = Registered(_ensemble_factory, ensemble=True)
