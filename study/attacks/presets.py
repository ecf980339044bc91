"""Named attack ensembles for the robustness evaluator's ``attacks:``, run as a cascade.

* ``autoattack``: AutoAttack's standard version (Croce & Hein 2020) with its published settings:
  APGD-CE (100 iterations, 1 start), APGD-T (100 iterations, the 9 most likely other classes),
  FAB-T (100 iterations, 9 targets) and Square (5,000 queries, p_init 0.8). Its `worst` rows are
  the standard robust accuracy.
* ``autoattack-fast``: the default. The same four attacks, cheaper where that rarely changes the
  result and with a check where it can: APGD-T and FAB-T target the 3 most likely other classes
  (the runner-up classes break most of what the targeted attacks break), and Square first probes
  with 500 queries; only if the probe breaks a point the gradient attacks left robust (a sign of
  masked gradients) does every point still robust get the full 5,000 (docs/evaluation.md).
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
        {"name": "apgd-t", "steps": 100, "targets": 3},
        {"name": "fab-t", "steps": 100, "targets": 3},
        {"name": "square", "queries": 5000, "p_init": 0.8, "probe": 500},
    ],
}
DEFAULT = "autoattack-fast"
