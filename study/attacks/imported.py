"""A researcher's own attack, named by import path in a spec's ``attacks:`` list.

``{name: mylab.attacks:noise, tries: 20}`` names a function
``noise(model, x, y, eps, norm, tries=10) -> x_adv``: ``eps`` holds one radius per point
(shape N), ``norm`` is ``"linf"`` or ``"l2"``, pixels lie in [0, 1]; with a parameter ``rng``
it also gets the points' ``study.rng.PointRNG`` (random numbers that do not depend on the batch).
Its other keyword arguments are its options. advsweep projects what it returns into each
point's eps ball and the [0, 1] box, so no attack can count a perturbation beyond its eps, and
judges success by the model's own prediction. On an eps ladder a point is attacked at each
level, smallest first, until it breaks; an adversarial found at one eps counts at every larger
one.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch

from study import imports
from study.attacks.gradient import AttackResult, frozen, prepare

_CALL = ("model", "x", "y", "eps", "norm")


@dataclass(frozen=True)
class ImportedAttack:
    path: str
    fn: Callable
    settings: tuple  # (option, value) pairs, sorted
    kind = "bounded"

    def options(self) -> dict:
        return dict(self.settings)

    def _call(self, model, x, y, eps: torch.Tensor, norm, rng) -> torch.Tensor:
        extra = {"rng": rng} if "rng" in inspect.signature(self.fn).parameters else {}
        x_adv = self.fn(model, x, y, eps, norm.name, **self.options(), **extra)
        if not (isinstance(x_adv, torch.Tensor) and x_adv.shape == x.shape):
            got = tuple(x_adv.shape) if isinstance(x_adv, torch.Tensor) else type(x_adv).__name__
            raise TypeError(f"attack {self.path} returned {got}; it must return x_adv shaped like x {tuple(x.shape)}")
        delta = norm.project(x_adv.detach().to(x) - x, eps)
        return (x + delta).clamp(0, 1)

    def __call__(self, model, x, y, eps, norm, rng=None):
        eps = torch.as_tensor(eps, dtype=x.dtype, device=x.device).expand(len(x))
        with frozen(model):
            return self._call(model, x, y, eps, norm, rng)

    def run(self, model, x, y, eps, norm, *, rng=None, early_stop=True, max_rows=None, levels=None) -> AttackResult:
        eps, ladder, rng, levels = prepare(x, eps, rng, levels, early_stop, restarts=1)
        x_adv = x.clone()
        fooled = torch.zeros(eps.shape, dtype=torch.bool, device=x.device)
        step = max_rows or len(x)
        with frozen(model):
            for j in range(eps.shape[1]):
                todo = ((levels > j) & ~fooled[:, j]).nonzero().squeeze(1)
                for pts in todo.split(step):
                    cand = self._call(model, x[pts], y[pts], eps[pts, j], norm, rng[pts].fold(j))
                    with torch.no_grad():
                        hit = model(cand).argmax(1) != y[pts]
                    x_adv[pts[hit]] = cand[hit]
                    fooled[pts[hit], j:] = True
        fooled &= torch.arange(eps.shape[1], device=x.device) < levels[:, None]
        return AttackResult(x_adv, fooled if ladder else fooled[:, 0])


def make(path: str, **options) -> ImportedAttack:
    """The attack at ``path`` with ``options`` (ValueError, one line, when it cannot be called so)."""
    fn = imports.resolve(path)
    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        params = []
    if params[:5] != list(_CALL):
        raise ValueError(f"{path}: an attack is a function {getattr(fn, '__name__', 'fn')}(model, x, y, eps, norm, **options) -> x_adv")
    imports.check_call(fn, path, options, provided=(*_CALL, "rng"))
    for name, value in options.items():
        if not isinstance(value, (bool, int, float, str, type(None))):
            raise ValueError(f"{name}: an option of {path} is a number, string or bool")
    return ImportedAttack(path, fn, tuple(sorted(options.items())))
