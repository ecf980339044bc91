"""The CUDA paths: training (standard, FGSM, PGD), every attack, MC dropout and the generative
model on a GPU. Marked ``cuda``: `make test` leaves them out, benchmarks/gpu_check.sh runs them
on a machine with a GPU (where a missing GPU is a failure, not a skip). They need no Ray and no
polars, which the GPU image lacks."""

from __future__ import annotations

import pytest
import torch

from study import attacks, data, generative, mc
from study.evaluators import EvalContext, robustness
from study.norms import NORMS
from study.rng import PointRNG
from study.spec import DataSpec, GenerativeSpec, TrainConfig
from study.evaluators.robustness import Options as RobustnessEval
from study.store import ModelStore
from study.train import init_model, predict, train

pytestmark = pytest.mark.cuda
CUDA = torch.device("cuda")


@pytest.fixture(scope="module", autouse=True)
def gpu():
    assert torch.cuda.is_available(), "the cuda tests run on a machine with a CUDA GPU (benchmarks/gpu_check.sh)"


@pytest.fixture(scope="module")
def digits():
    ds = data.load(DataSpec(dataset="mnist-5k"))
    t = lambda a: torch.from_numpy(a).to(CUDA)  # noqa: E731
    return ds, t(ds.x_train[:1000]), t(ds.y_train[:1000]), t(ds.x_test[:300]), t(ds.y_test[:300])


@pytest.mark.parametrize("adversarial", [None, {"attack": "fgsm", "norm": "linf", "eps": 0.1}, {"attack": "pgd", "norm": "l2", "eps": 1.0, "steps": 3}])
def test_training_on_the_gpu(digits, adversarial):
    """Every generator lives on the device of what it draws for: PGD's random starts on the GPU."""
    ds, x, y, xe, ye = digits
    cfg = TrainConfig(model="cnn", epochs=2, lr=2e-3, seed=0, adversarial=adversarial)
    model = init_model(cfg, ds.input_shape, ds.n_classes).to(CUDA)
    out = train(model, cfg, x, y, xe, ye)
    assert out["clean_acc"] > 0.6 and next(model.parameters()).is_cuda


@pytest.fixture(scope="module")
def trained(digits):
    ds, x, y, xe, ye = digits
    cfg = TrainConfig(model="cnn", epochs=3, lr=2e-3, seed=0)
    model = init_model(cfg, ds.input_shape, ds.n_classes).to(CUDA)
    train(model, cfg, x, y, xe, ye)
    return model.eval(), xe[predict(model, xe) == ye][:100], ye[predict(model, xe) == ye][:100]


@pytest.mark.parametrize("name", attacks.ATTACKS)
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_every_attack_on_the_gpu_as_on_the_cpu(trained, name, norm):
    """The same points broken on the GPU as on the CPU (PointRNG draws the same numbers on both;
    only float rounding differs), inside the ball and the box."""
    model, x, y = trained
    options = {"apgd-t": {"targets": 3, "steps": 20}, "fab-t": {"targets": 3, "steps": 20}, "square": {"queries": 300}, "cw": {"steps": 30}}.get(name, {})
    attack, eps = attacks.make(name, **options), {"linf": 0.1, "l2": 1.5}[norm]
    on_gpu = attack.run(model, x, y, eps, NORMS[norm], rng=PointRNG.for_points(0, len(y), CUDA))
    cpu_model = model.to("cpu")
    try:
        on_cpu = attack.run(cpu_model, x.cpu(), y.cpu(), eps, NORMS[norm], rng=PointRNG.for_points(0, len(y)))
    finally:
        model.to(CUDA)
    assert on_gpu.x_adv.is_cuda and (NORMS[norm].measure(on_gpu.x_adv - x) <= eps + 1e-5).all()
    agree = (on_gpu.fooled.cpu() == on_cpu.fooled).float().mean().item()
    assert agree >= 0.97, f"{name} {norm}: GPU and CPU agree on {agree:.1%} of the points"


def test_mc_dropout_and_eot_on_the_gpu(digits):
    ds, x, y, xe, ye = digits
    cfg = TrainConfig(model="mc-cnn", dropout=0.25, epochs=2, lr=2e-3, seed=0)
    model = init_model(cfg, ds.input_shape, ds.n_classes).to(CUDA)
    train(model, cfg, x, y, xe, ye)
    probs = mc.sample_probs(model, xe[:50], 20)
    assert probs.is_cuda and probs.shape == (50, 20, 10)
    axes = RobustnessEval.model_validate({"evaluator": "robustness", "attacks": ["fgsm", {"name": "pgd", "steps": 5}], "eot_samples": 4, "norms": {"linf": {"eps": [0, 0.1]}}})
    ctx = EvalContext(model=model, x=xe[:100], y=ye[:100], seed=0, x_train=x, y_train=y, trial_id="t", results_uri="unused")
    rows = robustness.evaluate(ctx, axes)
    assert {r["attack"] for r in rows} == {"fgsm", "pgd", "worst"} and all(r["eot_samples"] == 4 for r in rows)


def test_the_generative_model_on_the_gpu(digits, tmp_path):
    ds, x, *_ = digits
    cfg = GenerativeSpec(width=64, steps=20, inverter_steps=10, seed=0)
    model, meta = generative.trained(cfg, x, ds.fingerprint, ModelStore(str(tmp_path)), progress=False)
    assert not meta["from_store"] and next(model.parameters()).is_cuda
    assert model.reconstruct(x[:8]).shape == x[:8].shape
