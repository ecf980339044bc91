"""Unrestricted adversarial examples (tests/specs/unrestricted.yaml): the AC-GAN trained once and
stored, Song et al.'s latent search, and the judge that tells adversarial examples from images
that are no longer their class."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from analysis.load import read_artifact
from study import acgan, data
from study.evaluators.unrestricted import Options, search
from study.spec import SpecError, load_spec, parse_spec
from study.store import ModelStore, model_key


@pytest.fixture(scope="module")
def frame(unrestricted_sweep):
    return unrestricted_sweep.frame().filter(pl.col("evaluator") == "unrestricted")


@pytest.fixture(scope="module")
def parts(unrestricted_sweep):
    spec = load_spec(unrestricted_sweep.spec)
    ds = data.load(spec.data)
    store = ModelStore(str(unrestricted_sweep.results.parent / "store"))
    model, _ = acgan.trained(spec.acgan, torch.from_numpy(ds.x_train), torch.from_numpy(ds.y_train), ds.n_classes, ds.fingerprint, store, progress=False)
    return spec, ds, store, model


def test_the_acgan_and_the_judge_are_trained_once_and_stored(unrestricted_sweep, parts):
    spec, ds, store, model = parts
    assert store.has(acgan.acgan_key(spec.acgan, ds.fingerprint))
    (entry,) = spec.evaluate
    assert store.has(model_key(entry.judge.model_dump(mode="json"), ds.fingerprint))
    assert (unrestricted_sweep.results / "generative" / "acgan-samples.png").stat().st_size > 0
    # The generator draws its class: the judge and the target models recognise most samples.
    # (An untrained AC-GAN's samples sit at chance, 0.1.)
    assert frame_of(unrestricted_sweep)["judge_generated_acc"].min() > 0.8


def frame_of(sweep):
    return sweep.frame().filter(pl.col("evaluator") == "unrestricted")


def test_rows_per_mode_and_budget(frame):
    assert frame.height == 2 * 2 * 3
    for (_, _), part in frame.group_by("label", "unrestricted_mode"):
        part = part.sort("steps")
        assert part["success_rate"].to_list() == sorted(part["success_rate"].to_list())  # a budget only adds successes
        assert (part["queries_mean"] <= part["steps"]).all()
        found = part.filter(pl.col("success_rate") > 0)
        assert ((found["judge_error_rate"] + found["judge_source_rate"] - 1).abs() < 1e-9).all()
    untargeted = frame.filter(pl.col("unrestricted_mode") == "untargeted", pl.col("steps") == 60)
    # The search finds far more than the generator's own mistakes (1 - generated_acc).
    assert (untargeted["success_rate"] > 1 - untargeted["generated_acc"] + 0.2).all()


def test_every_kept_success_fools_the_model_and_keeps_the_auxiliary_class(unrestricted_sweep, parts):
    spec, ds, store, ac = parts
    examples = read_artifact(str(unrestricted_sweep.results), "unrestricted_examples")
    assert examples.height > 0
    for (tid,), part in examples.group_by("trial_id"):
        label = unrestricted_sweep.frame().filter(pl.col("trial_id") == tid)["model"][0]
        model, _, _ = unrestricted_sweep.stored_model(lambda c: c["model"] == label)
        x = torch.tensor(part["pixels"].to_list()).view(part.height, 1, part["height"][0], part["width"][0])
        with torch.no_grad():
            pred, aux = model(x).argmax(1), ac.aux_logits(x).argmax(1)
        source = torch.tensor(part["source"].to_list())
        assert (pred == torch.tensor(part["model_pred"].to_list())).all()
        assert (aux == source).all()
        untargeted = torch.tensor((part["mode"] == "untargeted").to_list())
        assert (pred[untargeted] != source[untargeted]).all()
        targeted = part.filter(pl.col("mode") == "targeted")
        assert (targeted["model_pred"] == targeted["target"]).all()


def test_the_soft_latent_constraint_holds_the_code_near_its_start(unrestricted_sweep, parts):
    """With the constraint's weight far above the target's and no free radius, the code cannot
    move beyond Adam's first step (lr per coordinate, whatever the gradient's size), which the
    constraint then undoes: the successes are the starts and that one step. A free radius of
    0.5 lets the search move the code and find many more."""
    spec, ds, store, ac = parts
    model, _, _ = unrestricted_sweep.stored_model(lambda c: c["model"] == "mlp")
    ys = torch.arange(ds.n_classes).repeat_interleave(10)
    z0 = torch.randn(len(ys), ac.latent_dim, generator=torch.Generator().manual_seed(3))
    leashed = Options(evaluator="unrestricted", budget=[30], latent_eps=0.0, lambda_latent=1e6, lambda_target=1.0, lr=0.05)
    first, kept = search(model, ac, ys, z0, None, leashed)
    found = first >= 0
    assert (first[found] <= 1).all() and ((kept - z0).abs().amax(1) <= 0.05 + 1e-6).all()
    free = Options(evaluator="unrestricted", budget=[30], latent_eps=0.5, lr=0.05)
    first_free, kept_free = search(model, ac, ys, z0, None, free)
    assert (first_free >= 0).sum() >= 3 * max(1, found.sum()) and (first_free > 1).any()
    assert ((kept_free - z0).abs().amax(1) > 0.2).any()


@pytest.mark.parametrize("change, words", [
    ({"acgan": {"steps": 10}, "evaluate": [{"evaluator": "robustness", "attacks": ["fgsm"], "norms": {"linf": {"eps": [0.1]}}}]}, "acgan: no evaluator uses"),
    ({"evaluate": [{"evaluator": "unrestricted", "mode": ["sideways"]}]}, "evaluate[0].mode"),
    ({"evaluate": [{"evaluator": "unrestricted", "budget": [0]}]}, "evaluate[0].budget"),
    ({"evaluate": [{"evaluator": "unrestricted", "judge": {"model": "nope"}}]}, "unknown model"),
])
def test_bad_entries_are_one_clear_error(change, words):
    raw = {"name": "t", "train": {"model": "mlp"}, "evaluate": [{"evaluator": "unrestricted"}], **change}
    with pytest.raises(SpecError) as e:
        parse_spec(raw)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_the_report_shows_the_table_and_the_grids(unrestricted_sweep):
    from analysis import report

    page = report.write_report(str(unrestricted_sweep.results), unrestricted_sweep.results.parent / "report")
    html = page.read_text()
    assert "Unrestricted adversarial examples" in html and "The AC-GAN&#x27;s samples" in html
    assert (page.parent / "unrestricted-untargeted.png").stat().st_size > 0
