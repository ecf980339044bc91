"""Attacks by name. Each module holds one family; ``make`` builds one from spec fields."""

from __future__ import annotations

from study.attacks.gradient import GRADIENT_ATTACKS, AttackResult, GradientAttack

ATTACKS = tuple(GRADIENT_ATTACKS)


def make(name: str, *, steps: int | None = None, step_size: float | None = None, restarts: int = 1) -> GradientAttack:
    """Build attack ``name``; ``step_size`` is relative to eps (absolute step = step_size * eps)."""
    try:
        factory = GRADIENT_ATTACKS[name]
    except KeyError:
        raise ValueError(f"unknown attack {name!r} (known: {', '.join(ATTACKS)})") from None
    return factory(steps=steps, step_size=step_size, restarts=restarts)


__all__ = ["ATTACKS", "AttackResult", "GradientAttack", "make"]
