"""Layering one way: study never imports analysis, and analysis reads results without torch
(a report or a notebook over Parquet needs no deep-learning stack)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from study import attacks, names
from study.attacks import latent

ROOT = Path(__file__).resolve().parents[1]


def test_analysis_imports_no_torch():
    code = "import sys, analysis.report, analysis.load, analysis.frontier, analysis.sections; print(sorted(m for m in ('torch', 'ray', 'torchvision') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", out.stdout


def test_study_never_imports_analysis():
    for path in (ROOT / "study").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(m == "analysis" or m.startswith("analysis.") for m in modules), path


def test_the_vocabulary_analysis_reads_is_the_one_the_study_writes():
    assert names.ATTACKS == tuple(attacks.FAMILIES)
    assert names.LATENT_KINDS == latent.KINDS
