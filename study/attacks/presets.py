"""Named attack ensembles for the robustness evaluator's ``attacks:``, run as a cascade.

* ``autoattack``: AutoAttack's standard version (Croce & Hein 2020) with its published settings:
  APGD-CE (100 iterations, 1 start), APGD-T (100 iterations, the 9 most likely other classes),
  FAB-T (100 iterations, 9 targets) and Square (5,000 queries, p_init 0.8). Its `worst` rows are
  the standard robust accuracy.
* ``autoattack-fast``: the default. APGD-CE, then APGD-T screened: a 12-step run toward each
  of the 9 most likely other classes, then the full 100 steps toward the 2 whose short runs got
  furthest (on the masked ratio-triplet network the clean runner-up is rarely the class that
  breaks a point, so a fixed top-3 misses many), then Square as a probe: 500 queries at each
  point's largest eps; only if the probe breaks at least 1% of the points it searched (a sign of
  masked gradients) does every point still robust get the full 5,000 at every eps. FAB-T is
  left out: on the quickstart's models it broke 7 of about 20,000 point-eps pairs the APGD
  attacks left robust, for a third of the evaluation's time; on models with masked gradients
  it breaks about a point in 100 more, which the sweep summary's warnings then point out
  (docs/evaluation.md, docs/benchmarks.md).
"""

from __future__ import annotations

PRESETS = {
    "autoattack": [
        {"name": "apgd-ce", "steps": 100},
        {"name": "apgd-t", "steps": 100, "targets": 9},
        {"name": "fab-t", "steps": 100, "targets": 9},
        {"name": "square", "queries": 5000, "p_init": 0.8},
    ],
    "autoattack-fast": [
        {"name": "apgd-ce", "steps": 100},
        {"name": "apgd-t", "steps": 100, "targets": 9, "screen": 12, "keep": 2},
        {"name": "square", "queries": 5000, "p_init": 0.8, "probe": 500},
    ],
}
DEFAULT = "autoattack-fast"
