"""Shared fixtures: Ray starts once per test session, and each real sweep runs once."""

from __future__ import annotations

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
