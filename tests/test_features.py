"""Constructed training sets (study.features): representation matching, targeted relabelling,
the store round trip, and the spec's rules for them."""

from __future__ import annotations

import pytest
import torch

from study import data, features
from study.spec import DataSpec, SpecError, TrainConfig, TrainSet, parse_spec
from study.store import ModelStore
from study.train import init_model, train


@pytest.fixture(scope="module")
def digits():
    ds = data.load(DataSpec(dataset="digits"))
    x, y = torch.from_numpy(ds.x_train), torch.from_numpy(ds.y_train)
    cfg = TrainConfig(model="cnn", epochs=6, lr=3e-3, seed=0)
    model = init_model(cfg, ds.input_shape, 10)
    train(model, cfg, x, y, torch.from_numpy(ds.x_test), torch.from_numpy(ds.y_test))
    return ds, x, y, model.eval()


def test_matching_reduces_the_representation_distance_by_90_percent(digits):
    _, x, y, model = digits
    g = features.representation(model)
    batch, start = x[:32], x[torch.randperm(len(x), generator=torch.Generator().manual_seed(1))[:32]]
    cfg = TrainSet(kind="non-robust", start="other")
    xr, before, after = features.match(model, batch, start, cfg.steps, cfg.step)
    with torch.no_grad():
        measured = (g(xr).flatten(1) - g(batch).flatten(1)).norm(dim=1)
    assert torch.allclose(measured, after, atol=1e-4)
    assert 1 - after.mean() / before.mean() >= 0.9
    assert xr.min() >= 0 and xr.max() <= 1
    # The images moved: matching changed pixels, not just a representation already close.
    assert (xr - start).flatten(1).norm(dim=1).mean() > 0.5


@pytest.mark.parametrize("kind", ["det", "rand"])
def test_relabelled_sets(digits, kind):
    ds, x, y, model = digits
    cfg = TrainSet(kind=kind, eps=1.5, steps=30)
    xs, ys, stats = features.construct(cfg, model, x[:300], y[:300], 10, seed=0, progress=False)
    delta = (xs - x[:300]).flatten(1).norm(dim=1)
    assert (delta <= 1.5 + 1e-4).all() and xs.min() >= 0 and xs.max() <= 1
    if kind == "det":
        assert torch.equal(ys, (y[:300] + 1) % 10) and stats["label_agreement"] == 0
    else:
        # Uniform over all classes: about 1 in 10 agrees with y, and every class is drawn.
        assert set(ys.tolist()) == set(range(10)) and 0.03 < stats["label_agreement"] < 0.2
    with torch.no_grad():
        hit = (model(xs).argmax(1) == ys).float().mean().item()
    assert stats["target_rate"] == pytest.approx(hit)
    assert stats["target_rate"] > 0.5  # the perturbation does what it is for
    assert stats["l2_mean"] == pytest.approx(delta.mean().item(), rel=1e-5)


def test_shuffled_control_moves_each_image_by_another_images_change(digits):
    _, x, y, model = digits
    cfg = TrainSet(kind="shuffled", steps=20)
    assert (cfg.start, cfg.step) == ("other", 0.5) and features.matched_set(cfg) == TrainSet(kind="robust", steps=20)
    with pytest.raises(ValueError, match="needs the images of its D_R"):
        features.construct(cfg, model, x[:40], y[:40], 10, seed=0, progress=False)
    matched = features.construct(features.matched_set(cfg), model, x[:40], y[:40], 10, seed=0, progress=False)[0]
    xs, ys, stats = features.construct(cfg, model, x[:40], y[:40], 10, seed=3, progress=False, matched=matched)
    assert torch.equal(ys, y[:40]) and xs.min() >= 0 and xs.max() <= 1
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(3))
    assert not torch.equal(perm, torch.arange(40))
    change = (matched - x[:40])[perm]
    inside = ((x[:40] + change) >= 0) & ((x[:40] + change) <= 1)
    assert inside.float().mean() > 0.3  # the check below covers many pixels
    assert torch.allclose((xs - x[:40])[inside], change[inside], atol=1e-6)
    assert stats["l2_mean"] == pytest.approx((xs - x[:40]).flatten(1).norm(dim=1).mean().item(), rel=1e-5)


def test_sets_are_stored_once_and_a_corrupt_file_is_rebuilt(digits, tmp_path, capsys):
    _, x, y, model = digits
    store = ModelStore(str(tmp_path))
    cfg = TrainSet(kind="det", eps=1.0, steps=5)
    key = "set-test"
    xs, ys, meta = features.built(cfg, key, model, x[:50], y[:50], 10, 0, store, progress=False)
    assert not meta["from_store"] and meta["build_s"] > 0
    again = features.built(cfg, key, model, x[:50], y[:50], 10, 0, store, progress=False)
    assert again[2]["from_store"] and torch.equal(again[0], xs) and torch.equal(again[1], ys)
    path = tmp_path / "models" / f"{key}.pt"
    path.write_bytes(path.read_bytes()[:100])
    rebuilt = features.built(cfg, key, model, x[:50], y[:50], 10, 0, store, progress=False)
    assert not rebuilt[2]["from_store"] and torch.equal(rebuilt[0], xs)
    assert "corrupt checkpoint" in capsys.readouterr().err


def test_set_keys_follow_the_source_and_the_set():
    spec = parse_spec(_spec(["robust", "det"]))
    robust, det = spec.train_sets()
    k = features.set_key(spec, robust, "fp")
    assert k == features.set_key(spec, robust, "fp") and k != features.set_key(spec, robust, "other-data")
    assert k != features.set_key(spec, det, "fp")
    changed = parse_spec(_spec(["robust", "det"], robust_epochs=3))
    assert features.set_key(changed, changed.train_sets()[0], "fp") != k  # another source model
    assert features.set_key(changed, changed.train_sets()[1], "fp") == features.set_key(spec, det, "fp")  # det's source is the standard one


def test_set_names_show_what_is_off_the_defaults():
    sets = [TrainSet(kind="robust"), TrainSet(kind="robust", start="noise"), TrainSet(kind="shuffled", start="noise", steps=100), TrainSet(kind="det"), TrainSet(kind="rand", eps=0.5, step=0.1)]
    assert [features.name(s) for s in sets] == ["D_R", "D_R start=noise", "D_shuf start=noise steps=100", "D_det eps=3", "D_rand eps=0.5"]
    assert features.name(None) == "D"


def test_sample_grid_is_a_png(digits):
    _, x, y, _ = digits
    png = features.sample_grid(x[:100], 1 - x[:100], (y[:100] + 1) % 10, y[:100])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def _spec(train_sets, robust_epochs=2, **extra):
    return {
        "name": "f",
        "data": {"dataset": "digits"},
        "features": {"robust": {"model": "cnn", "epochs": robust_epochs, "adversarial": {"attack": "pgd", "norm": "l2", "eps": 1.0, "alpha": 0}}},
        "train": {"model": "cnn", "train_set": {"grid": [None, *train_sets]}},
        "evaluate": [{"evaluator": "robustness", "attacks": ["pgd"], "norms": {"l2": {"eps": [0, 1]}}}],
        **extra,
    }


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s["train"].update(train_set={"grid": [{"kind": "robust", "eps": 1}]}), "train.train_set.grid[0].eps: robust is built by representation matching"),
        (lambda s: s["train"].update(train_set={"grid": [{"kind": "det", "start": "noise"}]}), "train.train_set.grid[0].start: det starts at the image itself"),
        (lambda s: s["train"].update(train_set={"grid": ["robustish"]}), "train.train_set.grid[0].kind"),
        (lambda s: s["train"].update(train_set={"grid": [{"kind": "rand", "eps": -1}]}), "train.train_set.grid[0].eps: must be > 0"),
        (lambda s: s["features"]["robust"].pop("adversarial"), "features.robust.adversarial: the robust source needs adversarial training"),
        (lambda s: s["features"].update(standard={"model": "logreg"}), "features.standard.model: logreg has no penultimate layer"),
        (lambda s: s["train"].pop("train_set"), "features: no training set is built"),
        (lambda s: s["train"].update(train_set={"grid": [{"kind": "shuffled", "eps": 1}]}), "train.train_set.grid[0].eps: shuffled is built by representation matching"),
        (lambda s: s["features"]["robust"].update(model="maxout", hidden=64), "features.robust.hidden: model maxout takes no hidden"),
    ],
)
def test_spec_errors(change, message):
    raw = _spec(["robust"])
    change(raw)
    with pytest.raises(SpecError) as e:
        parse_spec(raw, "x.yaml")
    assert message in str(e.value), str(e.value)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_resnet18_has_a_512_feature_penultimate_layer(shape):
    from study import models

    model = models.build("resnet18", shape, 10).eval()
    x = torch.rand(2, *shape)
    with torch.no_grad():
        assert model(x).shape == (2, 10)
        assert features.representation(model)(x).shape == (2, 512)
