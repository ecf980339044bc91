"""The generative model: WGAN-GP pieces with known answers, training, and the store (once per
dataset and config)."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from study import generative
from study.spec import GenerativeSpec
from study.store import ModelStore

TINY = GenerativeSpec(width=32, latent_dim=8, steps=30, inverter_steps=60, batch_size=32, lr=1e-3, seed=0)


@pytest.fixture(scope="module")
def images():
    from study import data
    from study.spec import DataSpec

    return torch.from_numpy(data.load(DataSpec()).x_train[:512])


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_networks_map_between_images_and_latents(arch):
    g, critic, inverter = generative.networks(arch, (1, 28, 28), 16, 8)
    z = torch.randn(5, 16)
    x = g(z)
    assert x.shape == (5, 1, 28, 28) and x.min() >= 0 and x.max() <= 1
    assert critic(x).shape == (5, 1)
    assert inverter(x).shape == (5, 16)


def test_gradient_penalty_of_a_linear_critic_is_its_norm_off_one():
    """D(x) = w.x has gradient w everywhere: the penalty is (||w|| - 1)^2 at any interpolate."""
    critic = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 1))
    with torch.no_grad():
        critic[1].weight.copy_(torch.tensor([[3.0, 0, 4, 0, 0, 0]]))
    real, fake = torch.rand(4, 1, 2, 3), torch.rand(4, 1, 2, 3)
    gp = generative.gradient_penalty(critic, real, fake, torch.Generator().manual_seed(0))
    assert gp.item() == pytest.approx((5 - 1) ** 2)


def test_inverter_training_lowers_the_reconstruction_error(images):
    model = generative.Generative(TINY.model_copy(update=dict(inverter_steps=1)), images.shape[1:])
    generative.train(model, images, progress=False)
    before = (model.reconstruct(images) - images).square().mean().item()
    g_weights = {k: v.clone() for k, v in model.generator.state_dict().items()}
    model.generator.requires_grad_(False)
    opt = torch.optim.Adam(model.inverter.parameters(), lr=1e-3)
    for _ in range(300):  # the inverter phase alone, G frozen
        loss = generative.inverter_loss(model, images[torch.randint(len(images), (32,))], torch.randn(32, 8), 0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = (model.reconstruct(images) - images).square().mean().item()
    assert after < 0.8 * before
    assert all(torch.equal(v, model.generator.state_dict()[k]) for k, v in g_weights.items())


def test_trained_once_per_dataset_and_config(images, tmp_path, capsys):
    store = ModelStore(str(tmp_path / "store"))
    first, meta = generative.trained(TINY, images, "fp", store, progress=False)
    assert meta["from_store"] is False and meta["train_s"] > 0
    assert meta["generator_loss"] == meta["generator_loss"]  # finite losses recorded
    again, meta2 = generative.trained(TINY, images, "fp", store, progress=False)
    assert meta2["from_store"] is True and meta2["key"] == meta["key"]
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    # Training is deterministic: the same config trained into another store gives the same weights.
    twin, _ = generative.trained(TINY, images, "fp", ModelStore(str(tmp_path / "other")), progress=False)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), twin.state_dict().values()))
    # Another config or other data: another key.
    assert generative.generative_key(TINY.model_copy(update=dict(steps=31)), "fp") != meta["key"]
    assert generative.generative_key(TINY, "other-data") != meta["key"]
    # A corrupt file is reported and retrained, never used.
    path = tmp_path / "store" / "models" / f"{meta['key']}.pt"
    path.write_bytes(b"not a checkpoint")
    capsys.readouterr()
    _, meta3 = generative.trained(TINY, images, "fp", store, progress=False)
    assert meta3["from_store"] is False
    assert "corrupt checkpoint" in capsys.readouterr().err
    assert torch.load(path, weights_only=True)["meta"]["train_s"] > 0


def test_image_grid_lays_out_rows_and_columns():
    png = generative.image_grid(torch.rand(10, 1, 28, 28), cols=4)
    img = Image.open(io.BytesIO(png))
    assert img.size == (4 * 30 + 2, 3 * 30 + 2)


def test_the_papers_joint_schedule_trains_the_inverter_with_the_critic(images):
    cfg = TINY.model_copy(update=dict(joint_inverter=True, inverter_steps=0, steps=3, critic_steps=2))
    model = generative.Generative(cfg, images.shape[1:])
    before = {k: v.clone() for k, v in model.inverter.state_dict().items()}
    out = generative.train(model, images, progress=False)
    assert "inverter_loss" in out and "critic_loss" in out
    assert not all(torch.equal(v, model.inverter.state_dict()[k]) for k, v in before.items())


def test_empty_batches_keep_their_shape():
    model = generative.Generative(TINY, (1, 28, 28))
    assert model.invert(torch.zeros(0, 1, 28, 28)).shape == (0, 8)
    assert model.reconstruct(torch.zeros(0, 1, 28, 28)).shape == (0, 1, 28, 28)
