"""The `advsweep` command: `advsweep run` and `advsweep report` are `python -m jobs.sweep` and
`python -m analysis.report`, with their options and exit status, from the installed script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jobs import cli

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "advsweep"  # installed by `pip install -e .` (make test)


def advsweep(*args, cwd=REPO) -> subprocess.CompletedProcess:
    assert SCRIPT.exists(), f"{SCRIPT} missing: the package is not installed (pip install -e .)"
    return subprocess.run([str(SCRIPT), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_run_dry_run_plans_the_quickstart(tmp_path):
    proc = advsweep("run", REPO / "search_spaces" / "quickstart.yaml", "--results", tmp_path / "results", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "quickstart: 8 trials" in proc.stdout and "624 rows" in proc.stdout, proc.stdout
    assert list(tmp_path.iterdir()) == [], "a dry run wrote something"


def test_run_rejects_a_bad_spec_in_one_line(tmp_path):
    spec = yaml.safe_load((REPO / "search_spaces" / "quickstart.yaml").read_text())
    spec["evaluate"][0]["attacks"] = ["fgsm", "deepfool"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    proc = advsweep("run", path, "--results", tmp_path / "results")
    assert proc.returncode == 2, proc
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith(f"{path}: evaluate[0].attacks[1]"), proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_help_names_the_command():
    proc = advsweep("run", "--help")
    assert proc.returncode == 0 and proc.stdout.startswith("usage: advsweep run "), proc.stdout
    for flag in ("--results", "--resume", "--overwrite", "--dry-run"):
        assert flag in proc.stdout
    top = advsweep("--help")
    assert top.returncode == 0 and "run" in top.stdout and "report" in top.stdout, top.stdout


@pytest.mark.parametrize("args, said", [((), "no command given"), (("train",), "unknown command 'train'")])
def test_a_missing_or_unknown_command_exits_2(args, said):
    proc = advsweep(*args)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"advsweep: {said}; expected one of: run, report"), proc.stderr
    assert proc.stdout == ""


def test_report_writes_the_page(numbers_sweep, tmp_path, capsys):
    assert cli.main(["report", str(numbers_sweep.results), "--out", str(tmp_path / "out")]) == 0
    index = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert index == (tmp_path / "out" / "index.html").resolve() and index.stat().st_size > 0


def test_report_of_a_missing_folder_exits_2(tmp_path):
    proc = advsweep("report", tmp_path / "none")
    assert proc.returncode == 2 and "none: no results here" in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr


def test_store_lists_sizes_and_refuses_a_missing_store(tmp_path):
    (tmp_path / "store" / "models").mkdir(parents=True)
    (tmp_path / "store" / "models" / "abc.pt").write_bytes(b"x" * 2048)
    (tmp_path / "store" / "models" / ".tmp-1-abc.pt").write_bytes(b"half")  # a write in progress is not an entry
    proc = advsweep("store", "ls", tmp_path / "store")
    assert proc.returncode == 0 and proc.stdout.split()[:4] == ["models", "abc", "2.0", "KiB"], proc.stdout
    proc = advsweep("store", "du", tmp_path / "store")
    assert proc.returncode == 0 and ["models", "1", "entries", "2.0", "KiB"] in [line.split() for line in proc.stdout.splitlines()], proc.stdout
    proc = advsweep("store", "gc", tmp_path / "absent")
    assert proc.returncode == 2 and proc.stderr.strip() == f"advsweep store: no store at {tmp_path / 'absent'}"
