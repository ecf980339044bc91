"""A model of the user's declares its capabilities (study.models.CAPABILITIES) as the registry
models do, and the evaluators that need one check them; the declaration is verified on the
built model before any work."""

from __future__ import annotations

import pytest
import yaml

from jobs import sweep
from tests.user_modules import temporary_module

NETS = '''
import torch
from study.mc import MCDropout


def dropnet(num_classes):
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 32), torch.nn.ReLU(), MCDropout(0.3), torch.nn.Linear(32, num_classes))


dropnet.capabilities = ("stochastic",)


def claims(num_classes):
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, num_classes))


claims.capabilities = ("stochastic",)


def plain(num_classes):
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, num_classes))


def flying(num_classes):
    return plain(num_classes)


flying.capabilities = ("flying",)


class Pair(torch.nn.Module):
    capabilities = ("ensemble",)

    def __init__(self, num_classes):
        super().__init__()
        self.members = torch.nn.ModuleList([plain(num_classes), plain(num_classes)])

    def forward(self, x):
        return torch.stack([m(x).log_softmax(1) for m in self.members]).logsumexp(0)


def lonely(num_classes):
    return plain(num_classes)


lonely.capabilities = ("ensemble",)
'''


@pytest.fixture(scope="module")
def capnets(tmp_path_factory):
    with temporary_module(tmp_path_factory.mktemp("capnets"), "capnets", NETS):
        yield


UNCERTAINTY = {"evaluator": "uncertainty", "mc_samples": [2], "baseline": 20}


def _dry_run(tmp_path, model: str, entry: dict = UNCERTAINTY) -> tuple[int, str]:
    spec = {
        "name": "caps", "results": str(tmp_path / "results"),
        "data": {"n_eval": 100},
        "train": {"model": {"import": model}, "epochs": 1},
        "evaluate": [entry],
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return sweep.main([str(path), "--dry-run"]), str(path)


def test_a_declared_stochastic_model_runs_the_uncertainty_evaluator(capnets, tmp_path, capsys):
    rc, _ = _dry_run(tmp_path, "capnets:dropnet")
    assert rc == 0, capsys.readouterr().err


@pytest.mark.parametrize("model, message", [
    ("capnets:plain", "evaluate[0]: uncertainty needs MC dropout kept on at prediction (study.mc.MCDropout layers) (mc-mlp, mc-cnn; or yours with capabilities = ('stochastic',)); train.model has capnets:plain"),
    ("capnets:claims", "train.model: capnets:claims declares the capability stochastic but has no study.mc.MCDropout layer with p > 0"),
    ("capnets:flying", "capnets:flying: capabilities must list some of stochastic, embedding, linear, ensemble, got ('flying',)"),
])
def test_a_missing_or_false_capability_is_one_line_before_any_work(capnets, tmp_path, capsys, model, message):
    rc, path = _dry_run(tmp_path, model)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and err.startswith(f"{path}: ") and message in err, err
    assert not (tmp_path / "results").exists()


def test_an_ensemble_of_the_users_is_checked_for_its_members(capnets, tmp_path, capsys):
    members = {"evaluator": "members", "eps": [0.1]}
    assert _dry_run(tmp_path, "capnets:Pair", members)[0] == 0, capsys.readouterr().err
    rc, _ = _dry_run(tmp_path, "capnets:lonely", members)
    err = capsys.readouterr().err
    assert rc == 2 and "capnets:lonely declares the capability ensemble but has no members" in err, err
