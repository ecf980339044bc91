"""Trained models by content hash: a repeated or resumed sweep loads instead of training.

The key hashes everything that determines a model: the resolved training config (seed
included), the dataset fingerprint, and the source of the training path (so a change to the
training code, a model or an attack used in training makes a new key). Files are written
atomically and read with ``torch.load(weights_only=True)``; a file that does not parse is
reported and retrained, never used; a file that cannot be read is an error.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from functools import lru_cache
from pathlib import Path

import torch

from study import fsio

_TRAINING_SOURCES = ("train.py", "models.py", "objectives.py", "mc.py", "norms.py", "rng.py", "attacks/gradient.py")


@lru_cache(maxsize=None)
def training_code_version() -> str:
    here = Path(__file__).parent
    h = hashlib.sha256()
    for name in _TRAINING_SOURCES:
        h.update((here / name).read_bytes())
    return h.hexdigest()[:12]


def model_key(train_config: dict, data_fingerprint: str) -> str:
    blob = json.dumps({"train": train_config, "data": data_fingerprint, "code": training_code_version()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


class ModelStore:
    def __init__(self, uri: str):
        self.uri = uri
        self.fs, self.base = fsio.resolve(uri)

    def path(self, key: str) -> str:
        return fsio.join(self.base, "models", f"{key}.pt")

    def has(self, key: str) -> bool:
        return fsio.exists(self.fs, self.path(key))

    def load(self, key: str, model: torch.nn.Module) -> dict | None:
        """Fill ``model`` with the stored weights, in eval mode (as training leaves it, so a model
        with BatchNorm predicts the same from the store), and return the stored metadata; None
        when the store has no such model or its file does not parse (then it is retrained). An
        I/O error reading the file is raised, naming it: retraining would hide it."""
        path = self.path(key)
        if not fsio.exists(self.fs, path):
            return None
        try:
            raw = fsio.read_bytes(self.fs, path)
        except OSError as e:
            raise OSError(f"model store: cannot read {path}: {e}") from e
        try:
            blob = torch.load(io.BytesIO(raw), weights_only=True)
            model.load_state_dict(blob["state_dict"])
            meta = dict(blob["meta"])
        except Exception as e:  # truncated, not a checkpoint, or another model's weights
            print(f"advsweep: corrupt checkpoint {path} ({type(e).__name__}: {e}); retraining", file=sys.stderr)
            return None
        model.eval()
        return meta

    def save(self, key: str, model: torch.nn.Module, meta: dict) -> None:
        buf = io.BytesIO()
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        torch.save({"state_dict": state, "meta": meta}, buf)
        fsio.write_atomic(self.fs, self.path(key), buf.getvalue())
