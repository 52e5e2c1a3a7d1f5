"""Running a Python file as a module: for ``reactor run app.py:topo`` and TOML handlers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["exec_file"]


def exec_file(name: str, path: str | Path) -> ModuleType:
    """Import the file at ``path`` as module ``name`` and return it.

    The module is in ``sys.modules`` while it runs, as with a normal import
    (dataclasses need it), and is taken out
    again if running it fails.

    Raises:
        ImportError: no import spec can be made for ``path``.
        Exception: whatever running the module raised.
    """
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot make an import spec for {str(path)!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module
