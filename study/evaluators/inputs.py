"""Input sets of the uncertainty and reconstruction evaluators: points attacked per `InputSet`.

Every given point is attacked (points already misclassified too, as a detector or a defense
would see them): a pixel-space attack at each eps (its final iterate), C&W unbounded (its
closest adversarial), or a natural-adversary search in the generator's latent space (G(z*)
where it found one, else the reconstruction G(I(x)) it started from). ``model`` is what the
attacks query: a stochastic model comes wrapped in its MC predictive (study.mc.attackable).
"""

from __future__ import annotations

import math
import time

import torch

from study import norms
from study.evaluators import natural
from study.evaluators.robustness import typed_columns
from study.norms import L2
from study.rng import PointRNG
from study.seeds import stream_seed


def craft(model, x, y, spec, seed: int, stream: str, generative=None):
    """(eps, x_adv, row columns, seconds) per set of one InputSet ``spec``."""
    start = time.perf_counter()
    if spec.name == "natural":
        with torch.no_grad():
            x_adv, _ = natural.adversaries(lambda inputs: model(inputs).argmax(1), generative, x, y, spec.search, seed)
        s = spec.search
        yield None, x_adv, dict(attack="natural", latent_search=s.kind, latent_samples=s.samples, latent_rounds=s.rounds, latent_dr=s.dr), time.perf_counter() - start
        return
    attack = spec.attack.build()
    typed = dict(attack=spec.name, attack_options=spec.attack.describe(), **typed_columns(attack))
    if spec.name == "cw":
        x_adv = attack(model, x, y, math.inf, L2)  # unbounded: the closest adversarial found
        yield None, x_adv, dict(typed, norm="l2"), time.perf_counter() - start
        return
    norm = norms.get(spec.norm)
    for eps in spec.eps:
        rng = PointRNG.for_points(stream_seed(seed, stream, spec.name, spec.norm, eps), len(x), x.device)
        start = time.perf_counter()
        x_adv = attack(model, x, y, eps, norm, rng=rng)
        yield float(eps), x_adv, dict(typed, norm=spec.norm), time.perf_counter() - start
