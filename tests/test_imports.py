"""User code is imported in one place, without touching sys.path."""

from __future__ import annotations

import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from reactor.runtime.imports import exec_file, import_module, search_folder


@pytest.fixture
def names() -> Iterator[list[str]]:
    """Unique module names; their modules are taken out of sys.modules afterwards."""
    used: list[str] = []
    yield used
    for name in used:
        sys.modules.pop(name, None)


def _write_pair(folder: Path, names: list[str]) -> tuple[str, str]:
    main, sibling = f"imp_main_{uuid.uuid4().hex[:8]}", f"imp_sib_{uuid.uuid4().hex[:8]}"
    names += [main, sibling]
    (folder / f"{sibling}.py").write_text("VALUE = 42\n")
    (folder / f"{main}.py").write_text(f"import {sibling}\nVALUE = {sibling}.VALUE\n")
    return main, sibling


def test_a_module_and_its_siblings_come_from_the_folder(tmp_path: Path, names: list[str]) -> None:
    main, _ = _write_pair(tmp_path, names)
    path_before = list(sys.path)
    module = import_module(main, tmp_path)
    assert module.VALUE == 42
    assert sys.path == path_before
    with pytest.raises(ModuleNotFoundError):
        import_module(f"imp_absent_{uuid.uuid4().hex[:8]}")  # the folder is searched no more


def test_exec_file_finds_the_files_siblings(tmp_path: Path, names: list[str]) -> None:
    main, _ = _write_pair(tmp_path, names)
    module = exec_file(main, tmp_path / f"{main}.py")
    assert module.VALUE == 42


def test_other_threads_do_not_see_the_folder(tmp_path: Path, names: list[str]) -> None:
    main, _ = _write_pair(tmp_path, names)
    inside, outside_done = threading.Event(), threading.Event()
    seen: list[BaseException | None] = []

    def elsewhere() -> None:
        assert inside.wait(10)
        try:
            import_module(main)
            seen.append(None)
        except ModuleNotFoundError as exc:
            seen.append(exc)
        outside_done.set()

    other = threading.Thread(target=elsewhere)
    other.start()
    with search_folder(tmp_path):
        inside.set()
        assert outside_done.wait(10)
    other.join()
    assert isinstance(seen[0], ModuleNotFoundError)
