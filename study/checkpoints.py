"""Pretrained weights evaluated as they are (``train.checkpoint``): a state_dict in a ``.pt`` /
``.pth`` file (read with ``torch.load(weights_only=True)``, so it runs no code) or a
``.safetensors`` file, from a local path or a pyarrow.fs URI (s3://...).

Every problem is one ``CheckpointError`` line naming the file: missing, not a checkpoint,
keys the model does not have or lacks, tensors of the wrong shape. A state_dict saved from
``nn.DataParallel`` (every key prefixed ``module.``) loads as the bare model's.
"""

from __future__ import annotations

import hashlib
import io

import torch

from study import fsio


class CheckpointError(ValueError):
    """A checkpoint that cannot be evaluated; the message is one line naming the file."""


def read_bytes(uri: str) -> bytes:
    fs, path = fsio.resolve(uri)
    if not fsio.exists(fs, path):
        raise CheckpointError(f"train.checkpoint: {uri}: file not found")
    try:
        return fsio.read_bytes(fs, path)
    except OSError as e:
        raise CheckpointError(f"train.checkpoint: {uri}: cannot read: {e}") from None


def digest(raw: bytes) -> str:
    """The checkpoint's identity in rows: sha256 of its bytes (16 hex digits)."""
    return hashlib.sha256(raw).hexdigest()[:16]


def state_dict(uri: str, raw: bytes) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file's bytes (a bare state_dict, or one under ``state_dict``)."""
    try:
        if uri.endswith(".safetensors"):
            from safetensors.torch import load

            state = load(raw)
        else:
            state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, foreign or unsafe (pickled code) content
        raise CheckpointError(f"train.checkpoint: {uri}: not a readable checkpoint ({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not (isinstance(state, dict) and state and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())):
        raise CheckpointError(f"train.checkpoint: {uri}: expected a state_dict (parameter names -> tensors), found {type(state).__name__}")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_into(model: torch.nn.Module, uri: str) -> str:
    """Fill ``model`` (its device kept) from the checkpoint at ``uri``, strictly, in eval mode;
    returns the checkpoint's digest."""
    raw = read_bytes(uri)
    state = state_dict(uri, raw)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} of the model's keys ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
        if unexpected:
            parts.append(f"{len(unexpected)} keys the model does not have ({', '.join(unexpected[:3])}{', ...' if len(unexpected) > 3 else ''})")
        raise CheckpointError(f"train.checkpoint: {uri}: does not fit the model: {'; '.join(parts)}")
    for k, v in expected.items():
        if state[k].shape != v.shape:
            raise CheckpointError(f"train.checkpoint: {uri}: {k} has shape {tuple(state[k].shape)}, the model's is {tuple(v.shape)}")
    model.load_state_dict(state)
    model.eval()
    return digest(raw)
