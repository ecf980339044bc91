"""Model store: content-addressed keys, atomic saves, corrupt files retrained never used."""

from __future__ import annotations

import torch

from study.spec import TrainConfig
from study.store import ModelStore, model_key
from study.train import init_model


def cfg(**kw):
    return TrainConfig.model_validate({"model": "logreg", "seed": 0, **kw}).model_dump(mode="json")


def test_key_changes_with_everything_that_determines_the_model():
    base = model_key(cfg(), "data-a")
    assert base == model_key(cfg(), "data-a")
    assert base != model_key(cfg(seed=1), "data-a")
    assert base != model_key(cfg(weight_decay=1e-3), "data-a")
    assert base != model_key(cfg(adversarial={"attack": "fgsm", "norm": "linf", "eps": 0.1}), "data-a")
    assert base != model_key(cfg(), "data-b")


def test_save_then_load_roundtrips_weights_and_meta(tmp_path):
    store = ModelStore(str(tmp_path))
    c = TrainConfig(model="cnn", seed=3)
    model = init_model(c, (1, 28, 28), 10)
    store.save("k", model, {"train_s": 1.5})
    other = init_model(TrainConfig(model="cnn", seed=4), (1, 28, 28), 10)
    assert store.load("k", other) == {"train_s": 1.5}
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["k.pt"]  # no temporary left


def test_missing_key_loads_nothing(tmp_path):
    assert ModelStore(str(tmp_path)).load("absent", init_model(TrainConfig(model="logreg", seed=0), (1, 8, 8), 10)) is None


def test_corrupt_or_mismatched_checkpoint_is_reported_not_used(tmp_path, capsys):
    store = ModelStore(str(tmp_path))
    model = init_model(TrainConfig(model="logreg", seed=0), (1, 8, 8), 10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path / "models" / "bad.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    assert store.load("bad", model) is None
    assert "corrupt checkpoint" in capsys.readouterr().err
    # A valid file holding another architecture's weights is refused too.
    store.save("other", init_model(TrainConfig(model="mlp", seed=0), (1, 8, 8), 10), {"train_s": 0.0})
    assert store.load("other", model) is None
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_a_loaded_model_predicts_as_training_left_it(tmp_path):
    """Training ends in eval mode; a model from the store must too, or BatchNorm layers use
    batch statistics and the same weights give other numbers."""
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    model.train()
    with torch.no_grad():
        model(torch.rand(64, 1, 8, 8) * 3 + 1)  # running statistics away from the defaults
    model.eval()
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        expected = model(x)
    store = ModelStore(str(tmp_path))
    store.save("bn", model, {"train_s": 0.0})
    fresh = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    assert fresh.training
    store.load("bn", fresh)
    assert not fresh.training and not any(m.training for m in fresh.modules())
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), expected)


def test_an_unreadable_checkpoint_is_an_error_naming_it_not_a_retrain(tmp_path):
    """Only a file that does not parse is retrained: an I/O error (here the path is a folder)
    surfaces, with the file named."""
    store = ModelStore(str(tmp_path))
    (tmp_path / "models" / "k.pt").mkdir(parents=True)
    model = init_model(TrainConfig(model="logreg", seed=0), (1, 8, 8), 10)
    try:
        store.load("k", model)
    except OSError as e:
        assert "k.pt" in str(e)
    else:
        raise AssertionError("an unreadable checkpoint was treated as absent or corrupt")
