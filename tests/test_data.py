"""Datasets: mnist-5k through torchvision's MNIST loader, splits, class filters, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torchvision

from study import data
from study.spec import DataSpec


@pytest.fixture(scope="module")
def mnist5k():
    return data.load(DataSpec())


def test_mnist5k_is_real_mnist_in_torchvision_layout(mnist5k):
    root = data.mnist5k_root()
    # The very loader that reads full MNIST reads our files.
    train = torchvision.datasets.MNIST(str(root), train=True, download=False)
    test = torchvision.datasets.MNIST(str(root), train=False, download=False)
    assert len(train) == 4000 and len(test) == 1000
    assert np.allclose(mnist5k.x_train, train.data.numpy()[:, None] / 255.0)


def test_mnist5k_shapes_range_and_stratified_split(mnist5k):
    assert mnist5k.x_train.shape == (4000, 1, 28, 28) and mnist5k.x_test.shape == (1000, 1, 28, 28)
    assert mnist5k.x_train.dtype == np.float32
    assert mnist5k.x_train.min() >= 0 and mnist5k.x_train.max() <= 1 and mnist5k.x_train.max() == 1
    assert np.bincount(mnist5k.y_test).tolist() == [100] * 10
    assert np.bincount(mnist5k.y_train).tolist() == [400] * 10


def test_split_and_fingerprint_are_deterministic(mnist5k):
    again = data.load(DataSpec())
    assert again.fingerprint == mnist5k.fingerprint
    np.testing.assert_array_equal(again.y_test, mnist5k.y_test)


def test_class_filter_remaps_labels_in_given_order(mnist5k):
    ds = data.load(DataSpec(classes=[7, 3]))
    assert ds.n_classes == 2 and set(np.unique(ds.y_train)) == {0, 1}
    assert len(ds.y_train) == 800 and len(ds.y_test) == 200
    # label 0 is the 7s: their images equal the 7s of the full set
    sevens = mnist5k.x_train[mnist5k.y_train == 7]
    np.testing.assert_array_equal(ds.x_train[ds.y_train == 0], sevens)
    assert ds.fingerprint != mnist5k.fingerprint


def test_n_eval_takes_a_prefix_and_rejects_too_many():
    assert len(data.load(DataSpec(n_eval=250)).y_test) == 250
    with pytest.raises(data.DataError, match="data.n_eval"):
        data.load(DataSpec(n_eval=5000))


def test_digits_are_8x8_in_unit_range():
    ds = data.load(DataSpec(dataset="digits"))
    assert ds.input_shape == (1, 8, 8) and ds.x_train.max() <= 1 and ds.n_classes == 10


def test_mnist_from_a_root_without_files_names_the_field(tmp_path):
    with pytest.raises(data.DataError, match=r"^data\.root: no mnist files under"):
        data.load(DataSpec(dataset="mnist", root=str(tmp_path)))


def test_full_mnist_loads_from_a_root_holding_the_files(tmp_path):
    # A root in torchvision's layout (here: mnist-5k's files) is read through the same path.
    import shutil

    shutil.copytree(data.mnist5k_root() / "MNIST", tmp_path / "MNIST")
    ds = data.load(DataSpec(dataset="mnist", root=str(tmp_path)))
    assert ds.x_train.shape == (4000, 1, 28, 28)


def test_missing_cifar10_files_name_the_folder(tmp_path):
    with pytest.raises(data.DataError) as e:
        data.load(DataSpec(dataset="cifar10", root=str(tmp_path)))
    assert str(e.value).startswith("data.root: no cifar10 files under") and "cifar-10-batches-py" in str(e.value)
    assert "download: true" in str(e.value)
