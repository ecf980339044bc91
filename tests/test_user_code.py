"""A researcher's own model, weights and data: import paths, pretrained checkpoints evaluated
without training, normalisation inside the model, npz / ImageFolder / import-path datasets, and
a 3 x 32 x 32 study end to end on the CPU; every bad input is one line and exit 2 before any work."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml
from PIL import Image

from jobs import sweep
from study import checkpoints, data, models, planning
from study.spec import DataSpec
from tests import doc_example
from tests.user_modules import temporary_module

MEAN, STD = [0.2, 0.25, 0.3], [0.3, 0.35, 0.4]


@pytest.fixture(scope="module")
def mylab(tmp_path_factory):
    """docs/extending.md's package `mylab` (nets, data) in a folder of its own, importable by
    this process only (the trials find it through the driver's code folders)."""
    root = tmp_path_factory.mktemp("code")
    doc_example.write(root, only="mylab/")
    doc_example.forget_mylab()
    sys.path.insert(0, str(root))
    yield importlib.import_module("mylab.nets"), importlib.import_module("mylab.data")
    sys.path.remove(str(root))
    doc_example.forget_mylab()


def normalised(x):
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def train_elsewhere(nets, x, y, seed: int, epochs: int = 6):
    """A model trained with plain torch on normalised inputs, as another codebase would."""
    torch.manual_seed(seed)
    model = nets.SmallResNet(num_classes=4, width=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(50):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(normalised(x[idx])), y[idx]).backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def elsewhere(mylab, tmp_path_factory):
    """Two checkpoints saved with plain torch.save / safetensors, and the test images as an
    ImageFolder (test split only: evaluation needs no training data)."""
    nets, loader = mylab
    root = tmp_path_factory.mktemp("elsewhere")
    d = loader.load()
    x, y = d["x_train"].float() / 255, d["y_train"]
    a, b = train_elsewhere(nets, x, y, seed=0), train_elsewhere(nets, x, y, seed=1, epochs=3)
    torch.save(a.state_dict(), root / "a.pt")
    from safetensors.torch import save_file

    save_file(b.state_dict(), str(root / "b.safetensors"))
    loader.write_image_folder(root / "images", n=200)  # the same 200 test images as loader.load()'s
    x_test, y_test = d["x_test"].float() / 255, d["y_test"]
    return root, {"a": a, "b": b}, x_test, y_test


def write(tmp_path: Path, spec: dict) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def checkpoint_spec(root: Path, results: Path) -> dict:
    variant = {"import": "mylab.nets:SmallResNet", "width": 8, "normalize": {"mean": MEAN, "std": STD}}
    return {
        "name": "elsewhere",
        "data": {"dataset": "imagefolder", "root": str(root / "images")},
        "train": {"model": variant, "checkpoint": {"grid": [str(root / "a.pt"), str(root / "b.safetensors")]}},
        "evaluate": [{"evaluator": "robustness", "attacks": [{"name": "pgd", "steps": 10}], "norms": {"linf": {"eps": [0.0, 0.03]}}}],
        "results": str(results),
    }


def test_checkpoints_trained_elsewhere_are_evaluated_as_they_are(ray_session, elsewhere, tmp_path, capsys):
    root, trained, x_test, y_test = elsewhere
    path = write(tmp_path, checkpoint_spec(root, tmp_path / "results"))
    assert sweep.main([str(path), "--dry-run"]) == 0
    assert "2 checkpoints evaluated as they are" in capsys.readouterr().out
    assert sweep.main([str(path)]) == 0
    assert "models: 0 trained, 0 from the store, 2 from checkpoints (not trained here)" in capsys.readouterr().out
    df = pl.read_parquet(tmp_path / "results" / "results.parquet")
    assert df.height == 2 * 2 * 2  # checkpoints x eps x (pgd + worst)
    assert df["checkpoint"].n_unique() == 2 and df["checkpoint_sha256"].n_unique() == 2
    assert df["epochs"].null_count() == df.height and df["train_s"].null_count() == df.height and not df["from_store"].any()
    assert set(df["model"]) == {"mylab.nets:SmallResNet"} and set(df["model_args"]) == {'{"width": 8}'}
    assert set(df["dataset"]) == {f"imagefolder:{root / 'images'}"}
    for name, model in trained.items():
        rows = df.filter(pl.col("checkpoint").str.contains(f"/{name}\\.") & (pl.col("attack") == "pgd"))
        raw = next(root.glob(f"{name}.*")).read_bytes()
        assert set(rows["checkpoint_sha256"]) == {checkpoints.digest(raw)}
        with torch.no_grad():
            # The PNGs hold the uint8 images exactly; the model sees them normalised.
            expected = (model(normalised(x_test)).argmax(1) == y_test).float().mean().item()
            unnormalised = (model(x_test).argmax(1) == y_test).float().mean().item()
        clean = rows.filter(pl.col("eps") == 0.0)["robust_acc"][0]
        assert clean == pytest.approx(expected, abs=1e-9)
        assert abs(unnormalised - expected) > 0.05  # so the check above would catch a dropped normalisation
        attacked = rows.filter(pl.col("eps") == 0.03)
        assert attacked["robust_acc"][0] <= clean
        assert attacked["linf_mean"][0] is None or attacked["linf_mean"][0] <= 0.03 + 1e-6  # eps in pixel space
    assert trained["a"] is not None and df.filter(pl.col("checkpoint").str.ends_with("a.pt") & (pl.col("eps") == 0.0))["robust_acc"][0] >= 0.9


def test_a_three_channel_study_trains_and_evaluates_with_an_imported_loader(ray_session, mylab, elsewhere, tmp_path):
    """Registry models train on 3 x 32 x 32 data from an import-path loader, next to a checkpoint."""
    root = elsewhere[0]
    spec = {
        "name": "rgb",
        "data": {"dataset": {"import": "mylab.data:load", "n_train": 300, "n_test": 100}},
        "train": {
            "model": {"grid": ["cnn", {"import": "mylab.nets:SmallResNet", "width": 8, "normalize": {"mean": MEAN, "std": STD}, "checkpoint": str(root / "a.pt")}]},
            "epochs": 3,
        },
        "evaluate": [{"evaluator": "robustness", "attacks": ["fgsm"], "norms": {"linf": {"eps": [0.0, 0.05]}, "l2": {"eps": [0.5]}}}],
        "results": str(tmp_path / "results"),
    }
    assert sweep.main([str(write(tmp_path, spec))]) == 0
    df = pl.read_parquet(tmp_path / "results" / "results.parquet")
    assert df.height == 2 * 3 * 2
    cnn = df.filter(pl.col("model") == "cnn")
    assert cnn["epochs"].unique().to_list() == [3] and cnn["checkpoint"].null_count() == cnn.height
    assert cnn.filter((pl.col("eps") == 0.0) & (pl.col("attack") == "fgsm"))["robust_acc"][0] >= 0.9  # the quadrant code is easy
    assert set(df["dataset"]) == {"mylab.data:load"}


# ---- data loaders ------------------------------------------------------------------------------


def test_npz_in_any_layout_loads_as_pixels_in_0_1(tmp_path):
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, size=(20, 32, 32, 3), dtype=np.uint8)  # N x H x W x C
    x_test = rng.integers(0, 256, size=(10, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x_train, y_train=np.arange(20) % 5, x_test=x_test, y_test=np.arange(10) % 5)
    ds = data.load(DataSpec(dataset="npz", path=str(tmp_path / "d.npz")))
    assert ds.input_shape == (3, 32, 32) and ds.n_classes == 5 and len(ds.x_test) == 10
    np.testing.assert_array_equal(ds.x_test[3, 1], x_test[3, :, :, 1].astype(np.float32) / 255)


def test_npz_with_only_a_test_split_and_float_images(tmp_path):
    x = np.random.default_rng(1).random((8, 1, 10, 10), dtype=np.float32)
    np.savez(tmp_path / "t.npz", x_test=x, y_test=np.array([0, 1, 2, 0, 1, 2, 0, 1]))
    ds = data.load(DataSpec(dataset="npz", path=str(tmp_path / "t.npz")))
    assert len(ds.x_train) == 0 and ds.n_classes == 3
    np.testing.assert_array_equal(ds.x_test, x)


def test_image_folder_labels_are_sorted_folder_names(elsewhere):
    root, _, x_test, y_test = elsewhere
    ds = data.load(DataSpec(dataset="imagefolder", root=str(root / "images")))
    assert ds.n_classes == 4 and len(ds.x_train) == 0 and ds.input_shape == (3, 32, 32)
    # ImageFolder lists class0/, class1/, ... and the files of each in name order.
    order = sorted(range(len(y_test)), key=lambda i: (int(y_test[i]), i))
    np.testing.assert_array_equal(ds.y_test, y_test.numpy()[order])
    np.testing.assert_array_equal(ds.x_test, x_test.numpy()[order])


def test_any_torchvision_dataset_by_name_loads_like_the_builtin():
    builtin = data.load(DataSpec(dataset="mnist-5k"))
    named = data.load(DataSpec(dataset={"torchvision": "MNIST"}, root=str(data.mnist5k_root())))
    np.testing.assert_array_equal(named.x_test, builtin.x_test)
    np.testing.assert_array_equal(named.y_train, builtin.y_train)


def test_eval_index_fixes_the_evaluation_subset_in_its_order(tmp_path):
    full = data.load(DataSpec(dataset="mnist-5k"))
    idx = [17, 3, 999, 0]
    (tmp_path / "idx.txt").write_text("\n".join(map(str, idx)) + "\n")
    np.save(tmp_path / "idx.npy", np.array(idx))
    for name in ("idx.txt", "idx.npy"):
        ds = data.load(DataSpec(dataset="mnist-5k", eval_index=str(tmp_path / name)))
        np.testing.assert_array_equal(ds.x_test, full.x_test[idx])
        np.testing.assert_array_equal(ds.y_test, full.y_test[idx])


# ---- checkpoints and normalisation ---------------------------------------------------------------


def test_normalisation_is_inside_the_model_and_not_in_its_weights(mylab):
    nets, _ = mylab
    inner = nets.SmallResNet(num_classes=4).eval()
    model = models.Normalized(inner, MEAN, STD).eval()
    x = torch.rand(5, 3, 32, 32)
    torch.testing.assert_close(model(x), inner(normalised(x)))
    assert model.state_dict().keys() == inner.state_dict().keys()


def test_data_parallel_and_wrapped_state_dicts_load(mylab, tmp_path):
    nets, _ = mylab
    src = nets.SmallResNet(num_classes=4).eval()
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, tmp_path / "dp.pt")
    dst = nets.SmallResNet(num_classes=4)
    checkpoints.load_into(dst, str(tmp_path / "dp.pt"))
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(dst(x), src(x))


# ---- bad input: one line, exit 2, nothing written ---------------------------------------------------


def _spec_for(root: Path, **changes) -> dict:
    spec = checkpoint_spec(root, Path("unused"))
    spec["train"] = {"model": spec["train"]["model"], "checkpoint": str(root / "a.pt")}
    for path, value in changes.items():
        node = spec
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    return spec


def _bad_files(root: Path, tmp_path: Path) -> dict:
    good = torch.load(root / "a.pt", weights_only=True)
    torch.save({k: v for k, v in good.items() if not k.startswith("head")}, tmp_path / "missing-keys.pt")
    torch.save({**good, "head.weight": torch.zeros(10, 8), "head.bias": torch.zeros(10)}, tmp_path / "ten-classes.pt")
    (tmp_path / "corrupt.pt").write_bytes((root / "a.pt").read_bytes()[:300])

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    torch.save({"stem.0.weight": Payload()}, tmp_path / "pickled-code.pt")
    np.savez(tmp_path / "no-test.npz", x_train=np.zeros((2, 3, 8, 8), np.uint8), y_train=np.array([0, 1]))
    np.savez(tmp_path / "too-bright.npz", x_test=np.full((2, 3, 32, 32), 2.0, np.float32), y_test=np.array([0, 1]))
    np.savez(tmp_path / "mnist-shaped.npz", x_test=np.zeros((4, 1, 28, 28), np.uint8), y_test=np.array([0, 1, 2, 3]))
    (tmp_path / "idx.txt").write_text("0\n5000\n")
    mixed = tmp_path / "mixed" / "test" / "c0"
    mixed.mkdir(parents=True)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(mixed / "a.png")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(mixed / "b.png")
    return {"dir": tmp_path}


BAD = [
    ("module-missing", lambda r, t: {"train__model__import": "nolab.nets:Net"}, "train.model: nolab.nets:Net: cannot import module nolab.nets"),
    ("name-missing", lambda r, t: {"train__model__import": "mylab.nets:WideResNet"}, "module mylab.nets has no WideResNet"),
    ("argument-unknown", lambda r, t: {"train__model__depth": 28}, "mylab.nets:SmallResNet takes no argument 'depth'"),
    ("checkpoint-missing", lambda r, t: {"train__checkpoint": str(t / "nowhere.pt")}, "train.checkpoint: " + "{t}/nowhere.pt: file not found"),
    ("checkpoint-keys", lambda r, t: {"train__checkpoint": str(t / "missing-keys.pt")}, "does not fit the model: missing 2 of the model's keys (head.weight, head.bias)"),
    ("checkpoint-shape", lambda r, t: {"train__checkpoint": str(t / "ten-classes.pt")}, "head.weight has shape (10, 8), the model's is (4, 8)"),
    ("checkpoint-corrupt", lambda r, t: {"train__checkpoint": str(t / "corrupt.pt")}, "corrupt.pt: not a readable checkpoint"),
    ("checkpoint-with-code", lambda r, t: {"train__checkpoint": str(t / "pickled-code.pt")}, "pickled-code.pt: not a readable checkpoint"),
    ("checkpoint-suffix", lambda r, t: {"train__checkpoint": str(t / "a.ckpt")}, "expected a state_dict in a .pt, .pth, .safetensors file"),
    ("classes-mismatch", lambda r, t: {"data": {"dataset": {"import": "mylab.data:load"}}, "train__checkpoint": None, "train__model__num_classes": 10}, "train.model: mylab.nets:SmallResNet outputs (2, 10) for 2 images; the data has 4 classes"),
    ("trained-checkpoint", lambda r, t: {"train__epochs": 3}, "train.epochs: every trial evaluates a checkpoint as it is"),
    ("adversarial-checkpoint", lambda r, t: {"train__adversarial": {"attack": "fgsm", "norm": "linf", "eps": 0.1}}, "train.adversarial: every trial evaluates a checkpoint as it is"),
    ("no-training-split", lambda r, t: {"train__checkpoint": None}, "the data has no training split, so every trial needs a checkpoint"),
    ("reads-training-split", lambda r, t: {"evaluate": [{"evaluator": "geometry"}]}, "evaluate[0]: geometry reads the training split, and the data has none"),
    ("npz-no-test", lambda r, t: {"data": {"dataset": "npz", "path": str(t / "no-test.npz")}}, "missing array x_test"),
    ("npz-range", lambda r, t: {"data": {"dataset": "npz", "path": str(t / "too-bright.npz")}}, "float images must lie in [0, 1]"),
    ("normalize-channels", lambda r, t: {"data": {"dataset": "npz", "path": str(t / "mnist-shaped.npz")}}, "train.normalize: 3 channel means for 1-channel images"),
    ("shape-mismatch", lambda r, t: {"data": {"dataset": "npz", "path": str(t / "mnist-shaped.npz")}, "train__model__normalize": None}, "train.checkpoint: mylab.nets:SmallResNet cannot take the data's 1x28x28 images"),
    ("folder-sizes", lambda r, t: {"data": {"dataset": "imagefolder", "root": str(t / "mixed")}}, "b.png: 16x16 RGB, unlike the split's 32x32 RGB images"),
    ("folder-missing", lambda r, t: {"data": {"dataset": "imagefolder", "root": str(t / "nowhere")}}, "data.root: " + "{t}/nowhere: no test/ folder"),
    ("index-range", lambda r, t: {"data__eval_index": str(t / "idx.txt")}, "data.eval_index: " + "{t}/idx.txt: index 5000 is outside the test split (0..199)"),
    ("loader-missing", lambda r, t: {"data": {"dataset": {"import": "mylab.data:nothing"}}}, "data.dataset: mylab.data:nothing: module mylab.data has no nothing"),
    ("loader-argument", lambda r, t: {"data": {"dataset": {"import": "mylab.data:load", "size": 3}}}, "mylab.data:load takes no argument 'size'"),
]


@pytest.mark.parametrize("change, message", [pytest.param(c, m, id=i) for i, c, m in BAD])
def test_bad_models_weights_and_data_are_one_line_errors_before_any_work(elsewhere, tmp_path_factory, capsys, change, message):
    root = elsewhere[0]
    bad = tmp_path_factory.mktemp("bad")
    _bad_files(root, bad)
    spec = _spec_for(root, **change(root, bad))
    spec["results"] = str(bad / "results")
    path = write(bad, spec)
    rc = sweep.main([str(path), "--dry-run"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and err.startswith(f"{path}: "), err
    assert message.format(t=bad) in err, err
    assert not (bad / "results").exists()


# ---- an evaluator of the user's ---------------------------------------------------------------------


def test_a_user_evaluator_runs_with_its_options_and_adds_its_columns(mylab, tmp_path):
    from study import evaluators, results
    from study.spec import parse_spec

    nets, _ = mylab
    spec = parse_spec({"name": "m", "train": {"model": "cnn"}, "evaluate": [{"evaluator": "mylab.metrics:margin", "n_points": 7}]})
    entry = spec.evaluate[0]
    assert entry.n_points == 7 and planning.expected_rows(spec) is None and "mylab.metrics:margin" in spec.import_paths()
    model = nets.SmallResNet(num_classes=4).eval()
    x, y = torch.rand(10, 3, 32, 32), torch.arange(10) % 4
    ctx = evaluators.EvalContext(model=model, x=x, y=y, seed=0, x_train=None, y_train=None, trial_id="t", results_uri=str(tmp_path), n_classes=4)
    rows = evaluators.run(ctx, entry)
    with torch.no_grad():
        logits = model(x[:7])
    m = logits.gather(1, y[:7, None]).squeeze(1) - logits.scatter(1, y[:7, None], float("-inf")).amax(1)
    assert rows == [{"n_points": 7, "margin_mean": pytest.approx(m.mean().item()), "margin_below_1": pytest.approx((m < 1).float().mean().item()), "evaluator": "mylab.metrics:margin"}]
    table = results.to_table([{**rows[0], "trial_id": "t"}])
    assert table.schema.field("n_points").type == "int64" and table.schema.field("margin_mean").type == "double"
    assert table.schema.names[: len(results.schema())] == results.schema().names


def test_a_user_evaluator_record_brings_its_options_row_count_and_report_section(mylab, tmp_path):
    """docs/extending.md's full form, the one every built-in uses: an Evaluator record."""
    import polars as pl

    from analysis import sections
    from study import evaluators, results
    from study.spec import parse_spec

    nets, _ = mylab
    spec = parse_spec({"name": "m", "train": {"model": "cnn"}, "evaluate": [{"evaluator": "mylab.confidence:CONFIDENCE", "n_points": 5}]})
    entry = spec.evaluate[0]
    assert planning.rows_per_trial(spec, planning.grid_configs(spec)[0]) == 1  # it says its row count, so the sweep checks it
    model = nets.SmallResNet(num_classes=4).eval()
    x, y = torch.rand(10, 3, 32, 32), torch.arange(10) % 4
    ctx = evaluators.EvalContext(model=model, x=x, y=y, seed=0, x_train=None, y_train=None, trial_id="t", results_uri=str(tmp_path), n_classes=4)
    rows = evaluators.run(ctx, entry)
    with torch.no_grad():
        top = torch.softmax(model(x[:5]), 1).max(1).values.mean().item()
    assert rows == [{"n_eval": 5, "top_confidence": pytest.approx(top), "evaluator": "mylab.confidence:CONFIDENCE"}]
    df = pl.from_arrow(results.to_table([{**rows[0], "trial_id": "t", "label": "resnet"}]))
    [(title, _, table)] = sections.tables(df)
    assert title == "Top-class confidence" and table.rows() == [("resnet", pytest.approx(top))]
    with pytest.raises(Exception, match="n_pointz"):
        parse_spec({"name": "m", "train": {"model": "cnn"}, "evaluate": [{"evaluator": "mylab.confidence:CONFIDENCE", "n_pointz": 5}]})


def test_a_user_evaluators_int_and_str_columns_tell_its_rows_apart():
    from study import results

    row = {"evaluator": "mylab.metrics:margin", "n_points": 7, "margin_mean": 0.5}
    assert results.row_key("t", row) != results.row_key("t", {**row, "n_points": 8})  # an axis
    assert results.row_key("t", row) == results.row_key("t", {**row, "margin_mean": 0.7})  # a measurement
    plain = {"evaluator": "rubbish", "attack": None}
    assert results.row_key("t", plain) == results.row_key("t", dict(plain))


def test_a_user_evaluator_must_return_rows_of_plain_values():
    from study import evaluators

    with pytest.raises(TypeError, match=r"column 'margin' holds a Tensor; rows hold numbers, strings or bools \(e.g. tensor.item\(\)\)"):
        evaluators._checked("mylab.metrics:bad", [{"margin": torch.tensor(1.0)}])
    with pytest.raises(TypeError, match="returned dict; it must return a list of row dicts"):
        evaluators._checked("mylab.metrics:bad", {"margin": 1.0})


@pytest.mark.parametrize("entry, message", [
    ({"evaluator": "mylab.metrics:margin", "n_pointz": 3}, "evaluate[0].n_pointz: unknown field"),
    ({"evaluator": "mylab.metrics:margin", "n_points": "ten"}, "evaluate[0].n_points: input should be a valid integer"),
    ({"evaluator": "mylab.metrics:nothing"}, "evaluate[0].evaluator: mylab.metrics:nothing: module mylab.metrics has no nothing"),
    ({"evaluator": "mylab.nets:SmallResNet"}, "evaluate[0].evaluator: mylab.nets:SmallResNet: an evaluator is a function of the trial's context"),
    ({"evaluator": "margin"}, "evaluate[0].evaluator: unknown evaluator 'margin' (known: robustness,"),
])
def test_bad_user_evaluators_are_one_line_errors(mylab, tmp_path, capsys, entry, message):
    spec = {"name": "m", "train": {"model": "cnn"}, "evaluate": [entry], "results": str(tmp_path / "results")}
    path = write(tmp_path, spec)
    assert sweep.main([str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


# ---- an attack of the user's --------------------------------------------------------------------------

ATTACKS = '''
import torch


def linear_step(model, x, y, eps, norm):
    """The optimal Linf step against a linear two-class model: eps * sign(w) toward the other class."""
    lin = model[1]
    w = (lin.weight[1] - lin.weight[0]).view(1, *x.shape[1:])
    toward = torch.where(y == 1, -1.0, 1.0).view(-1, *[1] * (x.dim() - 1))
    return x + eps.view(-1, *[1] * (x.dim() - 1)) * toward * w.sign()


def beyond(model, x, y, eps, norm, scale: float = 1.0):
    """Cheats: moves every pixel as far as it goes."""
    return 1 - x * scale
'''


@pytest.fixture(scope="module")
def user_attacks(tmp_path_factory):
    with temporary_module(tmp_path_factory.mktemp("attacks"), "labattacks", ATTACKS):
        yield


def _linear_case(seed=0, n=400, d=16):
    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(d, 2)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(2, d, generator=gen))
        model[1].bias.copy_(-0.5 * model[1].weight.sum(1))  # the boundary through the middle of the data
    x = 0.4 + 0.2 * torch.rand(n, 1, 4, 4, generator=gen)  # inside the box by more than any eps used
    y = (torch.randn(n, d, generator=gen) @ torch.randn(d, generator=gen) > 0).long()
    return model, x, y


def test_a_user_attack_gives_the_closed_form_robust_accuracy_of_a_linear_model(user_attacks, tmp_path):
    from study.evaluators import EvalContext, robustness
    from study.evaluators.robustness import Options as RobustnessEval

    model, x, y = _linear_case()
    eps = [0.0, 0.01, 0.03, 0.1, 0.2]  # x +- 0.2 stays inside the box
    entry = RobustnessEval.model_validate({"evaluator": "robustness", "attacks": ["labattacks:linear_step"], "norms": {"linf": {"eps": eps}}})
    ctx = EvalContext(model=model, x=x, y=y, seed=0, x_train=None, y_train=None, trial_id="t", results_uri=str(tmp_path), n_classes=2)
    rows = {(r["attack"], r["eps"]): r for r in robustness.evaluate(ctx, entry)}
    with torch.no_grad():
        w = model[1].weight[1] - model[1].weight[0]
        f = model(x)[:, 1] - model(x)[:, 0]
        correct = (f > 0).long() == y
    for e in eps:
        expected = int((correct & (f.abs() > e * w.abs().sum())).sum()) / len(y)  # |f| / ||w||_1: the Linf distance to the boundary
        assert rows["labattacks:linear_step", e]["robust_acc"] == pytest.approx(expected, abs=1e-6), e  # 1e-6: eps 0 reports the float32 clean accuracy
        assert rows["worst", e]["robust_acc"] == pytest.approx(expected, abs=1e-6)
    assert rows["labattacks:linear_step", 0.2]["attack_options"] == "labattacks:linear_step()"
    assert rows["labattacks:linear_step", 0.2]["robust_acc"] < rows["labattacks:linear_step", 0.03]["robust_acc"] < ctx.clean_acc  # the test discriminates


def test_a_user_attack_cannot_count_a_perturbation_beyond_eps(user_attacks, tmp_path):
    from study.evaluators import EvalContext, robustness
    from study.evaluators.robustness import Options as RobustnessEval

    model, x, y = _linear_case(seed=1)
    entry = RobustnessEval.model_validate({"evaluator": "robustness", "attacks": [{"name": "labattacks:beyond", "scale": 1.0}], "norms": {"linf": {"eps": [0.05]}, "l2": {"eps": [0.3]}}})
    ctx = EvalContext(model=model, x=x, y=y, seed=0, x_train=None, y_train=None, trial_id="t", results_uri=str(tmp_path), n_classes=2)
    rows = [r for r in robustness.evaluate(ctx, entry) if r["attack"] != "worst"]
    assert all(r["broken"] > 0 for r in rows)  # it does break points, within eps
    for r in rows:
        assert r[f"{r['norm']}_mean"] <= r["eps"] * (1 + 1e-5), r
        assert r["attack_options"].startswith(("labattacks:beyond(scale=1.0)", "labattacks:beyond(scale=1)")) or r["attack"] == "worst"


@pytest.mark.parametrize("attacks, message", [
    ([{"name": "labattacks:linear_step", "tries": 3}], "evaluate[0].attacks[0]: labattacks:linear_step takes no argument 'tries'"),
    (["labattacks:nothing"], "evaluate[0].attacks[0]: labattacks:nothing: module labattacks has no nothing"),
    (["mylab.nets:SmallResNet"], "an attack is a function SmallResNet(model, x, y, eps, norm, **options) -> x_adv"),
    (["pgdd"], "unknown attack 'pgdd'"),
])
def test_bad_user_attacks_are_one_line_errors(user_attacks, mylab, tmp_path, capsys, attacks, message):
    spec = {"name": "a", "train": {"model": "cnn"}, "evaluate": [{"evaluator": "robustness", "attacks": attacks, "norms": {"linf": {"eps": [0.1]}}}], "results": str(tmp_path / "results")}
    path = write(tmp_path, spec)
    assert sweep.main([str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_a_relative_checkpoint_is_found_from_the_driver_or_on_the_node(tmp_path, monkeypatch):
    """Relative paths start at the folder the driver ran in; a cluster node without that folder
    finds the file in its own working folder (the job's uploaded copy)."""
    from study.trial import StudyContext

    driver, node = tmp_path / "driver", tmp_path / "node"
    (node / "runs").mkdir(parents=True)
    (node / "runs" / "w.pt").write_bytes(b"x")
    context = StudyContext(spec=None, results_uri="", store_uri="", workdir=str(driver))
    monkeypatch.chdir(node)
    assert context.checkpoint_uri("runs/w.pt") == str(node / "runs" / "w.pt")
    (driver / "runs").mkdir(parents=True)
    (driver / "runs" / "w.pt").write_bytes(b"x")
    assert context.checkpoint_uri("runs/w.pt") == str(driver / "runs" / "w.pt")
    assert context.checkpoint_uri("s3://bucket/w.pt") == "s3://bucket/w.pt"
