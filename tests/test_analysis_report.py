"""The report of a real sweep: opens offline in headless Chromium with every chart drawn, PNGs
that are not blank, and the same for a sweep that is still running (trials/ only)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from analysis.load import load
from analysis.report import main, write_report
from conftest import CHROMIUM, need_chromium
from conftest import CHROMIUM_FLAGS as FLAGS


@pytest.fixture(scope="module")
def report(numbers_sweep, tmp_path_factory) -> Path:
    return write_report(str(numbers_sweep.results), tmp_path_factory.mktemp("report"))


def chart_ids(page: str) -> list[str]:
    return re.findall(r'<div class="chart" id="([^"]+)"></div>', page)


def test_report_is_self_contained(report):
    page = report.read_text()
    assert sorted(chart_ids(page)) == ["curves", "frontier-l2", "frontier-linf", "heatmap-l2", "heatmap-linf", "perturbations"]
    assert not re.search(r"<script[^>]*\bsrc=", page), "scripts must be inline"
    assert not re.search(r"<link[^>]*\bhref=", page)
    assert "window.vegaEmbed" in page
    assert "Best robust accuracy" in page and "cnn adv=fgsm-linf-0.1" in page
    assert "ray_version" in page and "mnist-5k" in page  # versions and the spec, from manifest.json


def test_report_pngs_are_not_blank(report):
    for stem in chart_ids(report.read_text()):
        image = np.asarray(Image.open(report.parent / f"{stem}.png").convert("L"), dtype=float)
        assert min(image.shape) > 150, stem
        assert image.std() > 10, f"{stem}.png is nearly uniform"
        assert (image < 128).mean() > 0.005, f"{stem}.png has almost no ink"


def test_report_renders_offline_in_headless_chromium(report, tmp_path):
    need_chromium()
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", report.as_uri()]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    dom = run.stdout
    for stem in chart_ids(report.read_text()):
        start = re.search(rf'<div class="([^"]*)" id="{stem}"', dom)
        assert start, f"{stem}: container missing"
        assert "failed" not in start.group(1), f"{stem} failed to render"
        inside = dom[start.end() : dom.index(f'id="spec-{stem}"', start.end())]
        assert inside.count("<svg") + inside.count("<canvas") >= 1, f"{stem}: nothing drawn"
        assert "<path" in inside or "<rect" in inside, f"{stem}: empty drawing"
    # The page logs nothing when all is well: any console line is an error or a Vega warning.
    console = [line for line in run.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, "\n".join(console)


def test_running_sweep_loads_and_reports(numbers_sweep, tmp_path, capsys):
    running = tmp_path / "running"
    shutil.copytree(numbers_sweep.results / "trials", running / "trials")
    df = load(running).collect()
    finished = numbers_sweep.frame()
    assert sorted(df.get_column("row_key").to_list()) == sorted(finished.get_column("row_key").to_list())

    assert main([str(running), "--out", str(tmp_path / "out")]) == 0
    index = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert index == (tmp_path / "out" / "index.html").resolve()
    page = index.read_text()
    assert "still running" in page
    assert all((index.parent / f"{stem}.png").stat().st_size > 0 for stem in chart_ids(page))


def test_report_of_a_folder_without_results_exits_2(tmp_path, capsys):
    assert main([str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none: no results here" in err
