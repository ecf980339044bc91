"""Shared fixtures: Ray starts once per test session, and each real sweep runs once."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPECS = Path(__file__).parent / "specs"


def mnist_trained(make, epochs: int, lr: float, batch: int):
    """The model ``make()`` builds (under seed 0), trained with Adam on mnist-5k's training split
    and in eval mode, with the test split's tensors: the small models the attack tests measure."""
    import torch

    from study import data
    from study.spec import DataSpec

    ds = data.load(DataSpec(dataset="mnist-5k"))
    x, y = torch.from_numpy(ds.x_train), torch.from_numpy(ds.y_train)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = make()
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        for _ in range(epochs):
            for idx in torch.randperm(len(x)).split(batch):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
    return model.eval(), torch.from_numpy(ds.x_test), torch.from_numpy(ds.y_test)


def assert_same_rows(got, want):
    """Robustness rows equal row for row: counts and accuracies exactly, sizes to float rounding
    (the same point attacked in another batch: a pair alone rather than in a ladder, or in a
    shard); the time spent aside."""
    key = lambda r: (r["attack"], r["norm"], r["eps"])
    assert sorted(map(key, got)) == sorted(map(key, want))
    want = {key(r): r for r in want}
    for row in got:
        other = want[key(row)]
        assert set(row) == set(other), key(row)
        for column, value in row.items():
            if column == "eval_s":
                continue
            if isinstance(value, float) and column not in ("robust_acc", "success_rate", "clean_acc", "eps"):
                assert value == pytest.approx(other[column], rel=1e-5, abs=1e-7), (key(row), column)
            else:
                assert value == other[column], (key(row), column)


# Tests that use one of these study-scale sweeps are slow (`make test-slow`), wherever they are.
SLOW_FIXTURES = {"tilting_sweep", "bnn_sweep", "bnn_model", "goodfellow_full_sweep", "ensemble_sweep", "unrestricted_sweep"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def ray_session():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def need_chromium():
    """Skip a browser test where Chromium is missing, except under CI (CI=true): there a missing
    browser fails the run, never skips silently."""
    if CHROMIUM is None:
        message = "chromium not found; install it with: apt-get install -y chromium"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: a browser test must not skip)")
        pytest.skip(message)
CHROMIUM_FLAGS = [  # headless, and no name resolves (no network at all)
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000",
    "--host-resolver-rules=MAP * ~NOTFOUND",
]


@pytest.fixture
def charts_render(tmp_path):
    """check(report, stems): the report opens offline in headless Chromium, each chart ``stem``
    is drawn (an SVG with paths, not the failure message) and the console stays clean."""
    need_chromium()

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


def _inline_values(spec) -> list[dict]:
    out = []
    if isinstance(spec, dict):
        if isinstance(spec.get("data"), dict) and "values" in spec["data"]:
            out += spec["data"]["values"]
        for v in spec.values():
            out += _inline_values(v)
    elif isinstance(spec, list):
        for v in spec:
            out += _inline_values(v)
    return out


@pytest.fixture
def vega_values():
    """values(spec): every inline data row of a Vega-Lite spec, wherever it sits (top level,
    layer, facet, concat): what a chart really draws."""
    return _inline_values


class Sweep:
    """Runs `python -m jobs.sweep` in-process (on the session's Ray) and reads what it wrote."""

    def __init__(self, spec: Path, results: Path):
        self.spec, self.results = spec, results

    def run(self, capsys) -> tuple[int, str]:
        from jobs.sweep import main

        capsys.readouterr()
        code = main([str(self.spec), "--results", str(self.results)])
        return code, capsys.readouterr().out

    def frame(self):
        import polars as pl  # here, not above: the cuda tests run where polars is not installed

        return pl.read_parquet(self.results / "results.parquet")

    def stored_model(self, pick=lambda cfg: True):
        """(model in eval mode, x_test, y_test): the first model of the spec's grid whose
        resolved training config ``pick`` accepts, loaded from the sweep's model store."""
        import torch

        from study import data, planning
        from study.spec import TrainConfig, load_spec
        from study.store import ModelStore, model_key
        from study.train import init_model

        spec = load_spec(self.spec)
        ds = data.load(spec.data)
        cfg = next(c for c in planning.grid_configs(spec) if pick(c))
        model = init_model(TrainConfig.model_validate(cfg), ds.input_shape, ds.n_classes)
        assert ModelStore(str(self.results.parent / "store")).load(model_key(cfg, ds.fingerprint), model) is not None
        return model.eval(), torch.from_numpy(ds.x_test), torch.from_numpy(ds.y_test)


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
def store_sweep(ray_session, tmp_path_factory):
    return _first_run(tmp_path_factory, SPECS / "store.yaml", "store")


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
    """The numbers sweep's standard (not adversarially trained) CNN with the 1,000 mnist-5k
    test images: (model, x_test, y_test)."""
    return numbers_sweep.stored_model(lambda cfg: cfg["adversarial"] is None)


@pytest.fixture(scope="session")
def bnn_sweep(ray_session, tmp_path_factory):
    return _first_run(tmp_path_factory, SPECS / "bnn.yaml", "bnn")


@pytest.fixture(scope="session")
def bnn_model(bnn_sweep):
    """The BNN sweep's MC-dropout CNN with the mnist-5k test images: (model, x_test, y_test)."""
    return bnn_sweep.stored_model()


@pytest.fixture(scope="session")
def natural_sweep(ray_session, tmp_path_factory):
    return _first_run(tmp_path_factory, SPECS / "natural.yaml", "natural")


@pytest.fixture(scope="session")
def ensemble_sweep(ray_session, tmp_path_factory):
    return _first_run(tmp_path_factory, SPECS / "ensemble.yaml", "ensemble")


@pytest.fixture(scope="session")
def unrestricted_sweep(ray_session, tmp_path_factory):
    return _first_run(tmp_path_factory, SPECS / "unrestricted.yaml", "unrestricted")


@pytest.fixture(scope="session")
def epsilon_sweep(ray_session, tmp_path_factory):
    return _first_run(tmp_path_factory, SPECS / "epsilon.yaml", "epsilon")


@pytest.fixture(scope="session")
def features_sweep(ray_session, tmp_path_factory):
    return _first_run(tmp_path_factory, SPECS / "features.yaml", "features")
