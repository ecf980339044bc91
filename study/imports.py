"""A user's code named by import path in a spec (``mylab.nets:WideResNet``), resolved with
one-line errors, and the folders that hold it, so a Ray worker imports what the driver did.

The driver resolves every import path while it validates the spec (before Ray starts); the
folder each top-level module was found in travels with the study to the trials, which put it
on ``sys.path`` before they resolve the same paths. On a cluster that folder must exist on the
workers too: ship the package with ``ray job submit --working-dir`` (or ``py_modules`` in the
runtime env), see docs/extending.md.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable

_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def is_import_path(name: str) -> bool:
    """``package.module:attribute``: what a spec writes for a user's code."""
    return isinstance(name, str) and bool(_PATH.match(name))


def resolve(path: str, callable_only: bool = True) -> Any:
    """The callable (or, with ``callable_only`` false, the object) an import path names;
    ValueError with one line when the module, the name or the object is wrong."""
    if not is_import_path(path):
        raise ValueError(f"{path!r} is not an import path (write package.module:name)")
    module_name, attr = path.split(":")
    # `advsweep run` is a console script, whose sys.path lacks the folder it runs in; a
    # researcher's package usually lives there (as with `python -m`).
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        missing = e.name or module_name
        where = "" if module_name == missing or module_name.startswith(missing + ".") else f" (it imports {missing}, which is missing)"
        raise ValueError(f"{path}: cannot import module {module_name}{where}; run from the folder that holds it or install it") from None
    except Exception as e:  # the user's module raised while importing
        raise ValueError(f"{path}: importing {module_name} failed: {type(e).__name__}: {' '.join(str(e).split())}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{path}: module {module_name} has no {attr}")
        obj = getattr(obj, part)
    if callable_only and not callable(obj):
        raise ValueError(f"{path}: {attr} is not callable (a class or a function is expected)")
    return obj


def check_call(fn: Callable, path: str, kwargs: dict, provided: tuple[str, ...] = ()) -> None:
    """``fn(**kwargs, <provided>)`` would bind: every keyword the spec gives is a parameter, and
    every required parameter is given (``provided`` are filled by advsweep, e.g. ``num_classes``)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin without a signature: the call itself will tell
    params = sig.parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    for key in kwargs:
        if key not in params and not takes_any:
            names = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
            raise ValueError(f"{path} takes no argument {key!r} (it takes: {', '.join(names) or 'none'})")
    for name, p in params.items():
        if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name not in kwargs and name not in provided:
            raise ValueError(f"{path} needs argument {name!r}; give it in the spec")


def code_folder(path: str) -> str | None:
    """The sys.path entry the top-level package of an import path was found in (None for
    installed packages, which every worker of the environment imports anyway)."""
    top = path.split(":")[0].split(".")[0]
    module = sys.modules.get(top)
    file = getattr(module, "__file__", None)
    if file is None:
        return None
    origin = Path(file).resolve()
    folder = origin.parent.parent if origin.name == "__init__.py" else origin.parent
    if "site-packages" in folder.parts or "dist-packages" in folder.parts:
        return None
    return str(folder)


def code_folders(paths: list[str]) -> list[str]:
    """The folders holding the (already imported) modules of ``paths``, each once."""
    return list(dict.fromkeys(f for f in map(code_folder, paths) if f is not None))


def add_folders(folders: list[str]) -> None:
    """Put the driver's code folders on this process's sys.path (a trial's worker)."""
    for folder in folders:
        if folder not in sys.path and Path(folder).is_dir():
            sys.path.insert(0, folder)
