"""User code, imported in one place: the CLI's targets and the TOML loader's handlers.

``reactor run app:topology`` means ``./app.py`` (as ``python -m`` would), and a
TOML file's ``handler = "handlers:bill"`` may mean ``handlers.py`` beside the
file. Neither puts a folder on ``sys.path``, which every thread shares: while
:func:`search_folder` is active, imports of top-level modules *in this thread*
also look in that folder, just before ``sys.path``, so the user's module and
the siblings it imports are found there, and no other thread sees the folder.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

__all__ = ["exec_file", "import_module", "search_folder"]


class _ThreadFolders(threading.local):
    def __init__(self) -> None:
        self.folders: list[str] = []


_searched = _ThreadFolders()
_install_lock = threading.Lock()


class _FolderFinder(importlib.abc.MetaPathFinder):
    """Finds top-level modules in the folders this thread is searching, if any."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if path is not None or not _searched.folders:
            return None  # a submodule is found through its package's __path__
        for folder in reversed(_searched.folders):  # the innermost search first
            spec = importlib.machinery.PathFinder.find_spec(fullname, [folder])
            if spec is not None:
                return spec
        return None


_finder = _FolderFinder()


def _install() -> None:
    with _install_lock:
        if _finder in sys.meta_path:
            return
        # Just before the sys.path finder: where a folder put first on sys.path would look.
        for index, finder in enumerate(sys.meta_path):
            if finder is importlib.machinery.PathFinder:
                sys.meta_path.insert(index, _finder)
                return
        sys.meta_path.append(_finder)


@contextmanager
def search_folder(folder: str | os.PathLike[str]) -> Iterator[None]:
    """While the block runs, this thread's imports of top-level modules look in ``folder`` first.

    Thread-safety: other threads' imports are not affected.
    """
    _install()
    _searched.folders.append(os.fspath(folder))
    try:
        yield
    finally:
        _searched.folders.pop()


def import_module(name: str, folder: str | os.PathLike[str] | None = None) -> ModuleType:
    """Import module ``name`` (dotted or not), looking in ``folder`` before ``sys.path``.

    A module already imported is returned as it is.

    Raises:
        ModuleNotFoundError: no such module; ``exc.name`` says which part is missing.
        Exception: whatever running the module raised.
    """
    if folder is None:
        return importlib.import_module(name)
    with search_folder(folder):
        return importlib.import_module(name)


def exec_file(name: str, path: str | Path) -> ModuleType:
    """Run the file at ``path`` as a fresh module ``name`` and return it.

    The module is in ``sys.modules`` while it runs, as with a normal import
    (dataclasses need it), and is taken out again if running it fails. The
    modules it imports are looked for beside it first (:func:`search_folder`).

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
        with search_folder(Path(path).resolve().parent):
            spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module
