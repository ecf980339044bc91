"""The rows of a researcher's own evaluators (named by import path in the spec): one table each,
the trial's label beside every column the evaluator filled, for the sweep summary and the report."""

from __future__ import annotations

import polars as pl

from study import results

# Columns every row carries (who, how trained, provenance, cost): not the evaluator's own.
_COMMON = {n for n, _, group, _ in results.COLUMNS if group in ("identity", "training", "cost", "provenance", "search", "generative")}


def tables(df: pl.DataFrame) -> list[tuple[str, str, pl.DataFrame]]:
    """(title, what, table) per user evaluator present in ``df``."""
    out = []
    for name in sorted(n for n in df.get_column("evaluator").unique().to_list() if n and ":" in n):
        rows = df.filter(pl.col("evaluator") == name)
        filled = [c for c in rows.columns if c not in _COMMON and c != "evaluator" and rows.get_column(c).null_count() < rows.height]
        table = rows.select("label", *filled).sort("label", *filled)
        out.append((f"Evaluator {name}", f"Rows of the evaluator {name} (yours, by import path): every column it filled, per trial.", table))
    return out
