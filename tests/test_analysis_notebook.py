"""analysis/notebooks/frontier.ipynb runs top to bottom against a real sweep and draws its charts."""

from __future__ import annotations

import nbclient
import nbformat

from conftest import ROOT

NOTEBOOK = ROOT / "analysis" / "notebooks" / "frontier.ipynb"


def is_chart(output) -> bool:
    data = output.get("data", {})
    return any(k.startswith("application/vnd.vegalite") for k in data) or "vega" in data.get("text/html", "")


def run_notebook(results: str, monkeypatch) -> list:
    """Execute the notebook against a results folder or URI; return its code cells."""
    monkeypatch.setenv("ADVSWEEP_RESULTS", results)  # the kernel inherits it
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all(o.output_type != "error" for c in cells for o in c.outputs)
    return cells


def test_notebook_runs_against_a_sweep(numbers_sweep, monkeypatch):
    cells = run_notebook(str(numbers_sweep.results), monkeypatch)
    frontier_cell = next(c for c in cells if "charts.frontier(" in c.source)
    assert any(is_chart(o) for o in frontier_cell.outputs)
    curves_cell = next(c for c in cells if "charts.robustness_curves(" in c.source)
    assert any(is_chart(o) for o in curves_cell.outputs)
