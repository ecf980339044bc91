"""Every third-party package the code imports is declared in pyproject.toml (a clean install has
what the project imports, and nothing arrives by accident as another package's dependency)."""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
# Import names that differ from their distribution's name.
DISTRIBUTION = {"sklearn": "scikit-learn", "yaml": "pyyaml", "vl_convert": "vl-convert-python", "PIL": "pillow", "ray": "ray"}
OURS = {"study", "analysis", "jobs", "conftest", "tests", "mylab", "torchattacks"}  # mylab: docs/extending.md's example package, written by the tests; torchattacks: benchmarks/autoattack.py only, installed for it


def imported(paths) -> set[str]:
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def declared(groups) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for group in groups:
        reqs += project["optional-dependencies"][group]
    return {Requirement(r).name.lower() for r in reqs}


BENCHMARKS = {p.stem for p in (ROOT / "benchmarks").glob("*.py")}  # a benchmark may import another's helpers


def third_party(names: set[str]) -> set[str]:
    return {n for n in names if n not in sys.stdlib_module_names and n not in OURS | BENCHMARKS and not n.startswith("test_")}


def test_the_package_imports_only_what_it_declares():
    code = [p for d in ("study", "analysis", "jobs") for p in (ROOT / d).rglob("*.py")]
    missing = {n for n in third_party(imported(code)) if DISTRIBUTION.get(n, n).lower().replace("_", "-") not in declared([])}
    assert not missing, f"imported by the package but not in [project.dependencies]: {sorted(missing)}"


def test_the_tests_and_benchmarks_import_only_what_dev_declares():
    code = [*(ROOT / "tests").glob("*.py"), *(ROOT / "benchmarks").glob("*.py")]
    missing = {n for n in third_party(imported(code)) if DISTRIBUTION.get(n, n).lower().replace("_", "-") not in declared(["dev"])}
    assert not missing, f"imported by the tests or benchmarks but not declared: {sorted(missing)}"
