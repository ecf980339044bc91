"""The worked example of docs/extending.md as files: every fenced block whose first line is
`# <relative path>` is that file. The tests write them out and run them as the page says."""

from __future__ import annotations

import re
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
_BLOCK = re.compile(r"```(?:python|yaml)\n# ([\w./-]+\.(?:py|yaml))\n(.*?)```", re.S)


def files() -> dict[str, str]:
    found = {path: body for path, body in _BLOCK.findall(PAGE.read_text())}
    assert {"mylab/nets.py", "mylab/data.py", "train_elsewhere.py", "study.yaml"} <= set(found), sorted(found)
    return found


def write(dest: Path, only: str = "") -> None:
    for path, body in files().items():
        if path.startswith(only):
            (dest / path).parent.mkdir(parents=True, exist_ok=True)
            (dest / path).write_text(body)


def forget_mylab() -> None:
    """Drop an earlier test's `mylab` from this process, so the next import finds the new folder's."""
    for name in [m for m in sys.modules if m == "mylab" or m.startswith("mylab.")]:
        del sys.modules[name]
