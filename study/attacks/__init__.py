"""Attacks by name. Each module holds one family; ``make`` builds one from spec fields.

Every attack has ``run(model, x, y, eps, norm, early_stop=..., generator=..., max_rows=...)``
returning an ``AttackResult`` (eps per point, or an ascending ladder per point), a plain call
for training use, and the fields result rows record (name, steps, step_size, restarts).
"""

from __future__ import annotations

from study.attacks.apgd import APGD_ATTACKS
from study.attacks.cw import CW_ATTACKS
from study.attacks.gradient import GRADIENT_ATTACKS, AttackResult, GradientAttack

FAMILIES = {**GRADIENT_ATTACKS, **APGD_ATTACKS, **CW_ATTACKS}
ATTACKS = tuple(FAMILIES)


def make(name: str, *, steps: int | None = None, step_size: float | None = None, restarts: int = 1, **options):
    """Build attack ``name``. For the gradient attacks ``step_size`` is relative to eps (absolute
    step = step_size * eps); ``options`` are family-specific (C&W: confidence, search_steps,
    initial_c)."""
    try:
        factory = FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown attack {name!r} (known: {', '.join(ATTACKS)})") from None
    return factory(steps=steps, step_size=step_size, restarts=restarts, **options)


__all__ = ["ATTACKS", "AttackResult", "GradientAttack", "make"]
