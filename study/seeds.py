"""Random streams: one seed per named stream, so results do not depend on the order work runs in."""

from __future__ import annotations

import hashlib


def stream_seed(seed: int, *names) -> int:
    """An RNG seed for the stream ``names`` (e.g. attack and norm) under the study or trial seed."""
    return int.from_bytes(hashlib.sha256(repr((seed, *names)).encode()).digest()[:7], "big")
