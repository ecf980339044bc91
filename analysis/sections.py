"""The report sections evaluators own (study.registry: an ``Evaluator``'s ``report``), for the
report and the sweep summary alike; and, for a researcher's evaluator without one, a table of
every column it filled beside the trial's label.

A section is ``report(rows, inputs) -> items``: ``rows`` the evaluator's rows, ``inputs`` what
else the report read (every row, the artifacts, the generator's grids, the constructed training
sets); each item a table ``(title, what, DataFrame)`` or a chart ``(file stem, title, what,
altair chart or PNG bytes)``. A record names its section as a function, or, for a built-in
whose section is built from this package's library, by import path (``analysis.report:...``):
study never imports analysis.

Finding an evaluator's section imports its module (and so torch, for the built-ins); reading
results (analysis.load) does not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

from study import imports, registry, results

# Columns every row carries (who, how trained, provenance, cost): not the evaluator's own.
_COMMON = {n for n, _, group, _ in results.COLUMNS if group in ("identity", "training", "cost", "provenance", "search", "generative")}


@dataclass
class ReportInputs:
    df: pl.DataFrame  # every row of the study
    found: dict[str, pl.DataFrame] = field(default_factory=dict)  # artifacts by name (analysis.report.read_artifacts)
    generative: dict[str, bytes] = field(default_factory=dict)  # the generator's PNG grids
    sets: Any = None  # a features study's constructed sets (analysis.report.FeatureSets)


def items(inputs: ReportInputs, own_only: bool = False) -> list[tuple]:
    """Every evaluator's section items, the built-ins in registry order, then a researcher's by
    name. ``own_only``: only sections an evaluator's module defines itself, and the generic
    tables of a researcher's evaluators (the sweep summary prints the others its own way)."""
    df = inputs.df
    # Present: it wrote rows, or (a model-free one, as gaussian) an artifact of its name.
    present = set(df.get_column("evaluator").unique().drop_nulls().to_list()) | (set(inputs.found) & set(registry.BUILTIN))
    out = []
    for name in [n for n in registry.BUILTIN if n in present] + sorted(present - set(registry.BUILTIN)):
        rows = df.filter(pl.col("evaluator") == name)
        report = _report(name)
        if isinstance(report, str):
            if not own_only:
                out += imports.resolve(report)(rows, inputs)
        elif report is not None:
            out += report(rows, inputs)
        elif name not in registry.BUILTIN:
            out.append((f"Evaluator {name}", f"Rows of the evaluator {name} (yours, by import path): every column it filled, per trial.", _filled(rows)))
    return out


def tables(df: pl.DataFrame) -> list[tuple[str, str, pl.DataFrame]]:
    """The sweep summary's share: the tables of sections evaluators' modules define themselves."""
    return [item for item in items(ReportInputs(df), own_only=True) if len(item) == 3]


def _report(name: str):
    try:
        return registry.find(name).report
    except ValueError:  # a researcher's code not importable here: their rows still get a table
        return None


def _filled(rows: pl.DataFrame) -> pl.DataFrame:
    filled = [c for c in rows.columns if c not in _COMMON and c != "evaluator" and rows.get_column(c).null_count() < rows.height]
    return rows.select("label", *filled).sort("label", *filled)
