"""A researcher's module written by a test: importable while the context lasts, then forgotten."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def temporary_module(root: Path, name: str, text: str):
    (root / f"{name}.py").write_text(text)
    sys.path.insert(0, str(root))
    try:
        yield
    finally:
        sys.path.remove(str(root))
        sys.modules.pop(name, None)
