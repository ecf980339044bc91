"""Attacks by name, each with its own published defaults and options.

Every attack has ``run(model, x, y, eps, norm, *, rng, early_stop, max_rows, levels)`` returning
an ``AttackResult`` (eps per point, or an ascending ladder per point; ``levels`` stops each
point's ladder early, for a cascade), a plain call for training and input sets, ``options()``
(the settings its rows record) and a ``kind``: *bounded* attacks search inside the eps ball
(FGSM, BIM, PGD, APGD, Square), *minimal* ones for the closest adversarial, which one run judges
at every eps (FAB, FMN, C&W).

A factory's keyword arguments are the attack's options, typed and with the published defaults;
``make`` validates them (``OptionError`` names the option), so a spec checks an attack's options
by building it.
"""

from __future__ import annotations

import inspect

from pydantic import ValidationError, validate_call

from study import imports
from study.attacks import imported
from study.attacks.apgd import APGD_ATTACKS
from study.attacks.cw import CW_ATTACKS
from study.attacks.fab import FAB_ATTACKS
from study.attacks.fmn import FMN_ATTACKS
from study.attacks.gradient import GRADIENT_ATTACKS, AttackResult, GradientAttack
from study.attacks.square import SQUARE_ATTACKS

FAMILIES = {**GRADIENT_ATTACKS, **APGD_ATTACKS, **FAB_ATTACKS, **FMN_ATTACKS, **SQUARE_ATTACKS, **CW_ATTACKS}
ATTACKS = tuple(FAMILIES)
MINIMAL = ("fab-t", "fmn", "fmn-t", "cw")  # minimal-norm: one search, judged at every eps
NORM_FREE = ("cw",)  # searches one norm (L2) and is judged in every norm
NO_FINAL_ITERATE = ("apgd-t",)  # one run per target: no single iterate to hand a plain call


class OptionError(ValueError):
    """An attack option that cannot be used; the message starts with the option's name."""


def option_names(name: str) -> list[str]:
    return list(inspect.signature(FAMILIES[name]).parameters)


def make(name: str, **options):
    """Attack ``name`` with ``options`` (its factory's keywords; defaults for the rest), or a
    researcher's attack by import path (study.attacks.imported)."""
    if imports.is_import_path(name):
        try:
            return imported.make(name, **options)
        except ValueError as e:
            raise OptionError(str(e)) from None
    try:
        factory = FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown attack {name!r} (known: {', '.join(ATTACKS)}; or one of yours by import path, e.g. mylab.attacks:noise)") from None
    for option in options:
        if option not in option_names(name):
            raise OptionError(f"{option}: {name} takes no {option} (its options: {', '.join(option_names(name)) or 'none'})")
    try:
        return validate_call(factory)(**options)
    except ValidationError as e:
        err = e.errors()[0]
        raise OptionError(f"{'.'.join(map(str, err['loc'])) or name}: {_short(err)}") from None
    except ValueError as e:  # a check across options, in the factory; its message names the option
        raise OptionError(str(e)) from None


def _short(err: dict) -> str:
    ctx, kind = err.get("ctx") or {}, err["type"]
    bounds = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
    if kind in bounds:
        return f"must be {bounds[kind]} {next(iter(ctx.values())):g}"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    return err["msg"][0].lower() + err["msg"][1:]


__all__ = ["ATTACKS", "MINIMAL", "NORM_FREE", "NO_FINAL_ITERATE", "AttackResult", "GradientAttack", "OptionError", "make", "option_names"]
