"""Model ensembles (tests/specs/ensemble.yaml): members trained and stored one by one (the first
is the study's plain trial of the same config), predictions by averaged probabilities, every
attack through the whole ensemble, and the members' adversarial examples scored on it."""

from __future__ import annotations

import json

import polars as pl
import pytest
import torch

from analysis.load import read_artifact
from study import data, planning
from study.spec import SpecError, TrainConfig, load_spec, parse_spec
from study.store import ModelStore, model_key
from study.train import init_model


@pytest.fixture(scope="module")
def frame(ensemble_sweep):
    return ensemble_sweep.frame()


def member_models(sweep):
    """Each member loaded from the store by its own config's key, as a plain trial would be."""
    spec = load_spec(sweep.spec)
    ds = data.load(spec.data)
    cfg = TrainConfig.model_validate(next(c for c in planning.grid_configs(spec) if c.get("members")))
    store = ModelStore(str(sweep.results.parent / "store"))
    out = []
    for member in cfg.member_configs():
        model = init_model(member, ds.input_shape, ds.n_classes)
        assert store.load(model_key(member.model_dump(mode="json"), ds.fingerprint), model) is not None
        out.append(model.eval())
    return cfg, out


def test_members_are_stored_once_and_the_first_is_the_plain_trial(ensemble_sweep, frame):
    cfg, members = member_models(ensemble_sweep)
    assert [m.seed for m in cfg.member_configs()] == [0, 1, 2]
    # Three members and the ensemble: the plain mlp trial is member 0, not a fifth model.
    assert len(list((ensemble_sweep.results.parent / "store" / "models").glob("*.pt"))) == 4
    plain, _, _ = ensemble_sweep.stored_model(lambda c: not c.get("members"))
    for a, b in zip(plain.state_dict().values(), members[0].state_dict().values()):
        assert torch.equal(a, b)
    assert sorted(frame["label"].unique()) == ["ensemble(mlp hidden=64 x3)", "mlp hidden=64"]
    assert json.loads(frame.filter(pl.col("model") == "ensemble")["members"][0]) == [{"name": "mlp", "hidden": 64}] * 3


def test_the_ensemble_predicts_by_averaged_probabilities(ensemble_sweep, frame):
    ensemble, x, y = ensemble_sweep.stored_model(lambda c: c.get("members"))
    _, members = member_models(ensemble_sweep)
    with torch.no_grad():
        averaged = torch.stack([m(x).softmax(1) for m in members]).mean(0)
        assert torch.allclose(ensemble(x).exp(), averaged, atol=1e-6)
    clean = frame.filter(pl.col("model") == "ensemble", pl.col("evaluator") == "robustness", pl.col("eps") == 0, pl.col("attack") == "worst")["robust_acc"][0]
    assert clean == pytest.approx((averaged.argmax(1) == y).float().mean().item())


def test_members_adversarial_examples_scored_on_the_ensemble(ensemble_sweep, frame):
    rows = frame.filter(pl.col("evaluator") == "members")
    assert rows["model"].unique().to_list() == ["ensemble"]  # the plain trial has no members: no rows
    art = read_artifact(str(ensemble_sweep.results), "ensemble_members")
    rob = frame.filter(pl.col("evaluator") == "robustness", pl.col("attack") == "fgsm", pl.col("eps") == 0.1)
    # FGSM is deterministic: member 0's own error is the plain trial's FGSM error, and the
    # ensemble's error on its own FGSM examples the robustness evaluator's, up to points FGSM
    # happens to carry from wrong to right (the robustness rows count those as broken).
    member0 = art.filter(pl.col("eps") == 0.1, pl.col("member") == 0)["own_error"][0]
    assert member0 == pytest.approx(1 - rob.filter(pl.col("model") == "mlp")["robust_acc"][0])
    at = {(r["eps"], r["crafted_on"]): r for r in rows.iter_rows(named=True)}
    on_ensemble = at[(0.1, "ensemble")]["transfer_error"]
    assert -1e-6 <= (1 - rob.filter(pl.col("model") == "ensemble")["robust_acc"][0]) - on_ensemble <= 0.02
    for eps in (0.1, 0.2):
        crafted = art.filter(pl.col("eps") == eps)
        mean = at[(eps, "members")]
        assert mean["transfer_error"] == pytest.approx(crafted["ensemble_error"].mean())
        assert mean["source_error"] == pytest.approx(crafted["own_error"].mean())
        # Goodfellow et al.: a member's examples fool the ensemble less than they fool the member,
        # yet most still do ("ensembles help, but not much").
        assert mean["source_error"] > mean["transfer_error"] > 0.4
        assert at[(eps, "ensemble")]["transfer_error"] > 0.4


@pytest.mark.parametrize("model, field, words", [
    ({"ensemble": "rbf", "size": 2}, "train.model", "softmax classifiers"),
    ({"ensemble": ["cnn"]}, "train.model", "at least 2 members"),
    ({"ensemble": "cnn"}, "train.model", "size"),
    ({"ensemble": ["cnn", {"name": "cnn", "pieces": 3}]}, "train.model", "cnn takes no pieces"),
    ({"ensemble": ["cnn", "mlp"], "hidden": 3}, "train.model", "not hidden"),
    ({"ensemble": [{"ensemble": ["cnn", "mlp"]}, "mlp"]}, "train.model", "not ensembles"),
])
def test_a_bad_ensemble_is_one_clear_error(model, field, words):
    with pytest.raises(SpecError) as e:
        parse_spec({"name": "t", "train": {"model": model}, "evaluate": [{"evaluator": "members", "eps": [0.1]}]})
    assert field in str(e.value) and words in str(e.value) and "\n" not in str(e.value)


def test_members_needs_an_ensemble_in_the_study():
    with pytest.raises(SpecError, match="members needs members whose averaged"):
        parse_spec({"name": "t", "train": {"model": "mlp"}, "evaluate": [{"evaluator": "members", "eps": [0.1]}]})


def test_the_plan_counts_the_members_that_will_train(ensemble_sweep, tmp_path):
    from jobs.sweep import plan

    spec = load_spec(ensemble_sweep.spec)
    ds = data.load(spec.data)
    fresh = plan(spec.model_copy(update={"store": str(tmp_path / "store")}), ds)
    assert (fresh["models"], fresh["in_store"]) == (3, 0)  # the plain mlp is member 0
    done = plan(spec.model_copy(update={"store": str(ensemble_sweep.results.parent / "store")}), ds)
    assert (done["models"], done["in_store"]) == (2, 2)  # the trial's model and the assembled ensemble


def test_an_ensemble_of_identical_members_is_that_member():
    """Known answer: averaging one model's probabilities with themselves changes nothing, so the
    ensemble's probabilities, predictions and FGSM examples are the member's."""
    import copy

    from study import attacks, models
    from study.norms import Linf
    from study.rng import PointRNG

    torch.manual_seed(0)
    member = models.build("mlp", (1, 8, 8), 10).eval()
    ensemble = models.Ensemble([member, copy.deepcopy(member), copy.deepcopy(member)]).eval()
    x, y = torch.rand(64, 1, 8, 8), torch.randint(10, (64,))
    with torch.no_grad():
        assert torch.allclose(ensemble(x).exp(), member(x).softmax(1), atol=1e-6)
    fgsm = attacks.make("fgsm")
    rng = PointRNG.for_points(0, len(y))
    assert torch.allclose(fgsm(ensemble, x, y, 0.1, Linf, rng=rng), fgsm(member, x, y, 0.1, Linf, rng=rng))
