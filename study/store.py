"""Trained models by content hash: a repeated or resumed sweep loads instead of training.

The key hashes everything that determines a model: the resolved training config (seed
included), the dataset fingerprint, and the source of the training path (so a change to the
training code, a model or an attack used in training makes a new key). Files are written
atomically and read with ``torch.load(weights_only=True)``; a file that does not load is
reported and retrained, never used.
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

_TRAINING_SOURCES = ("train.py", "models.py", "objectives.py", "mc.py", "norms.py", "attacks/gradient.py")


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
        """Fill ``model`` with the stored weights and return the stored metadata, or None."""
        path = self.path(key)
        if not fsio.exists(self.fs, path):
            return None
        try:
            blob = torch.load(io.BytesIO(fsio.read_bytes(self.fs, path)), weights_only=True)
            model.load_state_dict(blob["state_dict"])
            return dict(blob["meta"])
        except Exception as e:  # any unreadable or mismatched file is treated the same way
            print(f"advsweep: corrupt checkpoint {path} ({type(e).__name__}: {e}); retraining", file=sys.stderr)
            return None

    def save(self, key: str, model: torch.nn.Module, meta: dict) -> None:
        buf = io.BytesIO()
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        torch.save({"state_dict": state, "meta": meta}, buf)
        fsio.write_atomic(self.fs, self.path(key), buf.getvalue())
