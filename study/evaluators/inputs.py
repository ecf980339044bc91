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

from study import attacks, norms
from study.evaluators import natural
from study.seeds import stream_seed
from study.norms import L2


def craft(model, x, y, spec, seed: int, stream: str, generative=None):
    """(eps, x_adv, row columns, seconds) per set of one InputSet ``spec``."""
    start = time.perf_counter()
    if spec.attack == "natural":
        with torch.no_grad():
            x_adv, _ = natural.adversaries(lambda inputs: model(inputs).argmax(1), generative, x, y, spec.search, seed)
        s = spec.search
        yield None, x_adv, dict(attack="natural", latent_search=s.kind, latent_samples=s.samples, latent_rounds=s.rounds, latent_dr=s.dr), time.perf_counter() - start
        return
    if spec.attack == "cw":
        attack = attacks.make("cw", **spec.cw.attack_options())
        x_adv = attack(model, x, y, math.inf, L2)  # unbounded: the closest adversarial found
        cols = dict(attack="cw", norm="l2", steps=attack.steps, step_size=attack.step_size, restarts=1, kappa=attack.confidence, search_steps=attack.search_steps)
        yield None, x_adv, cols, time.perf_counter() - start
        return
    attack = attacks.make(spec.attack, steps=spec.steps, step_size=spec.step_size)
    norm = norms.get(spec.norm)
    for eps in spec.eps:
        gen = torch.Generator(device=x.device).manual_seed(stream_seed(seed, stream, spec.attack, spec.norm, eps))
        start = time.perf_counter()
        x_adv = attack(model, x, y, eps, norm, generator=gen)
        cols = dict(attack=attack.name, norm=spec.norm, steps=attack.steps, step_size=attack.step_size, restarts=attack.restarts)
        yield float(eps), x_adv, cols, time.perf_counter() - start
