"""The study's vocabulary that results are written in, torch-free, so analysis reads results
without importing torch: attack names in the order tables list them, latent-search kinds,
the norms of the distances evaluator, and the short name of an adversarial-training axis."""

from __future__ import annotations

ATTACKS = ("fgsm", "bim", "pgd", "apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "fmn", "fmn-t", "square", "cw")  # study.attacks.FAMILIES, in order
LATENT_KINDS = ("iterative", "hybrid")  # study.attacks.latent
DISTANCE_NORMS = ("l0", "l1", "l2", "linf")  # the distances evaluator's


def adversarial_name(attack: str | None, norm: str | None, eps: float | None, alpha: float | None) -> str:
    """The adversarial-training axis in one short string, as labels and analysis spell it:
    ``none``, or ``fgsm-linf-0.1`` (with ``-a<alpha>`` when alpha is not the default 0.5)."""
    if attack is None:
        return "none"
    return f"{attack}-{norm}-{eps:g}" + (f"-a{alpha:g}" if alpha is not None and alpha != 0.5 else "")
