"""Confidence intervals of binomial proportions (numpy and scipy only: the report reads them
without torch)."""

from __future__ import annotations

import numpy as np
from scipy.stats import beta


def clopper_pearson(k, n, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """The exact (Clopper-Pearson) ``confidence`` interval of a binomial proportion k / n, per
    element: the beta quantiles, with 0 below k = 0 and 1 above k = n."""
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    a = (1 - confidence) / 2
    with np.errstate(invalid="ignore"):
        lo = np.where(k > 0, beta.ppf(a, k, n - k + 1), 0.0)
        hi = np.where(k < n, beta.ppf(1 - a, k + 1, n - k), 1.0)
    return lo, hi
