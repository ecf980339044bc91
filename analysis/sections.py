"""The report sections evaluators own (study.registry: an ``Evaluator``'s ``report``), for the
report and the sweep summary alike; and, for a researcher's evaluator without one, a table of
every column it filled beside the trial's label.

Finding an evaluator's section imports its module (and so torch, for the built-ins); reading
results (analysis.load) does not.
"""

from __future__ import annotations

import polars as pl

from study import registry, results

# Columns every row carries (who, how trained, provenance, cost): not the evaluator's own.
_COMMON = {n for n, _, group, _ in results.COLUMNS if group in ("identity", "training", "cost", "provenance", "search", "generative")}


def tables(df: pl.DataFrame) -> list[tuple[str, str, pl.DataFrame]]:
    """(title, what, table) of every evaluator in ``df`` with a section of its own (the
    built-ins in registry order, then a researcher's, by name)."""
    present = set(df.get_column("evaluator").unique().drop_nulls().to_list())
    out = []
    for name in [n for n in registry.BUILTIN if n in present] + sorted(present - set(registry.BUILTIN)):
        rows = df.filter(pl.col("evaluator") == name)
        report = _report(name)
        if report is not None:
            out += report(rows)
        elif name not in registry.BUILTIN:  # the built-ins without one have theirs in analysis.report
            out.append((f"Evaluator {name}", f"Rows of the evaluator {name} (yours, by import path): every column it filled, per trial.", _filled(rows)))
    return out


def _report(name: str):
    try:
        return registry.find(name).report
    except ValueError:  # a researcher's code not importable here: their rows still get a table
        return None


def _filled(rows: pl.DataFrame) -> pl.DataFrame:
    filled = [c for c in rows.columns if c not in _COMMON and c != "evaluator" and rows.get_column(c).null_count() < rows.height]
    return rows.select("label", *filled).sort("label", *filled)
