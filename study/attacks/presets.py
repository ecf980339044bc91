"""Named attack ensembles for the robustness evaluator's ``attacks:``, run as a cascade.

* ``autoattack``: AutoAttack's standard version (Croce & Hein 2020) with its published settings:
  APGD-CE (100 iterations, 1 start), APGD-T (100 iterations, the 9 most likely other classes),
  FAB-T (100 iterations, 9 targets) and Square (5,000 queries, p_init 0.8). Its `worst` rows are
  the standard robust accuracy.
* ``autoattack-fast``: the default. APGD-CE, climbing the eps ladder top-down; FMN, untargeted (a
  minimal-norm search judged at every eps at once, 100 steps; a point stops once its adversarial
  fits its smallest eps); FMN toward the 2nd and 3rd most likely other classes (the untargeted
  run already heads for the most likely); APGD-T screened: an 8-step run toward each of the 9
  most likely other classes, then the full 100 steps toward the one whose short run got furthest
  (on the masked ratio-triplet network the clean runner-up is rarely the class that breaks a
  point), also top-down; then Square as a probe: 500 queries at each point's largest eps; only if
  the probe breaks at least 1% of the points it searched (a sign of masked gradients) does every
  point still robust get the full 5,000 at every eps. FMN takes the place of AutoAttack's FAB-T,
  at a fraction of its cost, and breaks what FAB-T and the full APGD-T add on the benchmark
  models (docs/evaluation.md, docs/benchmarks.md). Top-down, the two APGD runs pay once for a
  point robust at its largest eps instead of once per eps; they take that failure for one at
  every smaller eps, which FMN and FMN-T, judging every point at every eps whatever the order,
  back up.
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
        {"name": "apgd-ce", "steps": 100, "ladder": "top-down"},
        {"name": "fmn", "steps": 100},
        {"name": "fmn-t", "steps": 100, "targets": 2, "skip": 1},
        {"name": "apgd-t", "steps": 100, "targets": 9, "screen": 8, "keep": 1, "ladder": "top-down"},
        {"name": "square", "queries": 5000, "p_init": 0.8, "probe": 500},
    ],
}
DEFAULT = "autoattack-fast"
