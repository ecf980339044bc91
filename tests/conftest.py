"""Shared fixtures: Ray starts once per test session, and each real sweep runs once."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest

ROOT = Path(__file__).resolve().parents[1]
SPECS = Path(__file__).parent / "specs"


@pytest.fixture(scope="session")
def ray_session():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
CHROMIUM_FLAGS = [  # headless, and no name resolves (no network at all)
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000",
    "--host-resolver-rules=MAP * ~NOTFOUND",
]


@pytest.fixture
def charts_render(tmp_path):
    """check(report, stems): the report opens offline in headless Chromium, each chart ``stem``
    is drawn (an SVG with paths, not the failure message) and the console stays clean."""
    if CHROMIUM is None:
        pytest.skip("chromium not found; install it with: apt-get install -y chromium")

    def check(report: Path, stems) -> None:
        cmd = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", report.as_uri()]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        for stem in stems:
            start = re.search(rf'<div class="([^"]*)" id="{stem}"', run.stdout)
            assert start and "failed" not in start.group(1), stem
            inside = run.stdout[start.end() : run.stdout.index(f'id="spec-{stem}"', start.end())]
            assert "<svg" in inside and "<path" in inside, stem
        console = [line for line in run.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
        assert not console, "\n".join(console)

    return check


class Sweep:
    """Runs `python -m jobs.sweep` in-process (on the session's Ray) and reads what it wrote."""

    def __init__(self, spec: Path, results: Path):
        self.spec, self.results = spec, results

    def run(self, capsys) -> tuple[int, str]:
        from jobs.sweep import main

        capsys.readouterr()
        code = main([str(self.spec), "--results", str(self.results)])
        return code, capsys.readouterr().out

    def frame(self) -> pl.DataFrame:
        return pl.read_parquet(self.results / "results.parquet")


def _first_run(tmp_path_factory, spec_path, name):
    sweep = Sweep(spec_path, tmp_path_factory.mktemp(name) / "results")
    from jobs.sweep import main

    code = main([str(sweep.spec), "--results", str(sweep.results)])
    assert code == 0
    return sweep


@pytest.fixture(scope="session")
def numbers_sweep(ray_session, tmp_path_factory):
    return _first_run(tmp_path_factory, SPECS / "numbers.yaml", "numbers")


@pytest.fixture(scope="session")
def goodfellow_sweep(ray_session, tmp_path_factory):
    return _first_run(tmp_path_factory, ROOT / "search_spaces" / "goodfellow-logreg.yaml", "goodfellow")


@pytest.fixture(scope="session")
def tilting_sweep(ray_session, tmp_path_factory):
    return _first_run(tmp_path_factory, ROOT / "search_spaces" / "tilting.yaml", "tilting")


@pytest.fixture(scope="session")
def transfer_sweep(ray_session, tmp_path_factory):
    return _first_run(tmp_path_factory, SPECS / "transfer.yaml", "transfer")


@pytest.fixture(scope="session")
def goodfellow_full_sweep(ray_session, tmp_path_factory):
    return _first_run(tmp_path_factory, ROOT / "search_spaces" / "goodfellow.yaml", "goodfellow-full")


@pytest.fixture(scope="session")
def standard_cnn(numbers_sweep):
    """The numbers sweep's standard (not adversarially trained) CNN, loaded from its model
    store, with the 1,000 mnist-5k test images: (model, x_test, y_test)."""
    import torch

    from study import data
    from study.spec import TrainConfig, load_spec
    from study.store import ModelStore, model_key
    from study.train import init_model

    spec = load_spec(numbers_sweep.spec)
    ds = data.load(spec.data)
    cfg = next(c for c in spec.grid_configs() if c["adversarial"] is None)
    model = init_model(TrainConfig.model_validate(cfg), ds.input_shape, ds.n_classes)
    assert ModelStore(str(numbers_sweep.results.parent / "store")).load(model_key(cfg, ds.fingerprint), model) is not None
    return model.eval(), torch.from_numpy(ds.x_test), torch.from_numpy(ds.y_test)


@pytest.fixture(scope="session")
def bnn_sweep(ray_session, tmp_path_factory):
    return _first_run(tmp_path_factory, SPECS / "bnn.yaml", "bnn")


@pytest.fixture(scope="session")
def bnn_model(bnn_sweep):
    """The BNN sweep's MC-dropout CNN from its model store, with the mnist-5k test images:
    (model, x_test, y_test)."""
    import torch

    from study import data
    from study.spec import TrainConfig, load_spec
    from study.store import ModelStore, model_key
    from study.train import init_model

    spec = load_spec(bnn_sweep.spec)
    ds = data.load(spec.data)
    cfg = spec.grid_configs()[0]
    model = init_model(TrainConfig.model_validate(cfg), ds.input_shape, ds.n_classes)
    assert ModelStore(str(bnn_sweep.results.parent / "store")).load(model_key(cfg, ds.fingerprint), model) is not None
    return model.eval(), torch.from_numpy(ds.x_test), torch.from_numpy(ds.y_test)
