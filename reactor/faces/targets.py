"""What a command's ``TARGET`` names: a topology file, a Python file, or ``module:attribute``.

``reactor run``, ``worker``, ``graph`` and ``dead-letters`` take the same targets:

* ``shop.toml`` (or any file that is not ``.py``): a topology file;
* ``app.py``: a Python file defining one :class:`~reactor.Topology` at module level
  (or ``app.py:build`` to pick one, or a function returning one);
* ``app:topology`` or ``package.module:build``: a module looked up in the current
  folder first, then on ``sys.path``.

A target that cannot be loaded is a :class:`~reactor.errors.UsageError` (or a
:class:`~reactor.errors.TopologyError` for an invalid file): one line naming the
target and what to do.
"""

from __future__ import annotations

import os
import tomllib
from types import ModuleType

from reactor.errors import TopologyError, UsageError
from reactor.runtime.imports import exec_file, import_module
from reactor.runtime.topology import Topology

__all__ = ["load_target"]


def load_target(target: str, *, import_code: bool = True) -> Topology:
    """The topology that ``target`` names.

    Args:
        target: a topology file, a ``.py`` file, or ``module:attribute`` where the
            attribute is a :class:`Topology` or a zero-argument function returning
            one; ``module`` is a dotted module name (looked up in the current
            directory too) or a path to a ``.py`` file.
        import_code: for a topology file, import the handler modules it names;
            False runs no user code (``reactor graph``). A Python target is code:
            it is always run.

    Raises:
        UsageError: the target cannot be found or is not a topology.
        TopologyError: the topology file is invalid (the message names the file and key).
    """
    if target.endswith(".py"):
        return _from_python_file(target)
    if target.endswith(".toml") or (":" not in target and os.path.exists(target)):
        return _load_toml(target, import_code)
    if ":" not in target:
        raise UsageError(
            f"target {target!r} is neither a file nor module:attribute; "
            "try `reactor run demos/shop.toml` or `reactor run myapp.topology:build`"
        )
    module_name, _, attribute = target.rpartition(":")
    if not module_name or not attribute:
        raise UsageError(f"target {target!r}: expected module:attribute, e.g. myapp:topology")
    module = _import(module_name, target)
    try:
        value = getattr(module, attribute)
    except AttributeError:
        raise UsageError(
            f"target {target!r}: module {module_name!r} has no attribute {attribute!r}"
        ) from None
    return _topology_of(value, attribute, target)


def _topology_of(value: object, attribute: str, target: str) -> Topology:
    if isinstance(value, Topology):
        return value
    if callable(value):
        try:
            value = value()
        except (TopologyError, UsageError):
            raise
        except Exception as exc:
            raise UsageError(
                f"target {target!r}: calling {attribute}() raised {type(exc).__name__}: {exc}"
            ) from exc
        if isinstance(value, Topology):
            return value
        raise UsageError(
            f"target {target!r}: {attribute}() returned {type(value).__name__}, "
            "not a reactor.Topology"
        )
    raise UsageError(
        f"target {target!r}: {attribute} is a {type(value).__name__}; "
        "it must be a reactor.Topology or a function returning one"
    )


def _from_python_file(path: str) -> Topology:
    """The one topology a ``.py`` file defines at module level."""
    module = _import_file(path, path)
    found = {
        name: value
        for name, value in vars(module).items()
        if isinstance(value, Topology) and not name.startswith("_")
    }
    if len(found) == 1:
        return next(iter(found.values()))
    if not found:
        raise UsageError(
            f"target {path!r} defines no reactor.Topology at module level; assign one to a "
            f"name (topology = Topology(...)), or name a function returning one: {path}:build"
        )
    names = ", ".join(sorted(found))
    first = sorted(found)[0]
    raise UsageError(
        f"target {path!r} defines several topologies ({names}); pick one: {path}:{first}"
    )


def _load_toml(path: str, import_code: bool) -> Topology:
    if not os.path.exists(path):
        raise UsageError(f"topology file {path!r} does not exist")
    try:
        return Topology.from_toml(path, import_code=import_code)
    except TopologyError:
        raise
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(f"not valid TOML: {exc}", source=path) from exc
    except ModuleNotFoundError as exc:
        if exc.name == "reactor.runtime.toml":
            raise UsageError(f"cannot load {path!r}: this reactor has no TOML loader") from exc
        raise TopologyError(f"cannot import a handler: {exc}", source=path) from exc
    except OSError as exc:
        raise UsageError(f"cannot read topology file {path!r}: {exc}") from exc


def _import(module_name: str, target: str) -> ModuleType:
    if module_name.endswith(".py"):
        return _import_file(module_name, target)
    # `reactor run app:topo` means ./app.py, as with `python -m`, though a console
    # script's sys.path starts with the script's folder, not the current one.
    cwd = os.getcwd()
    try:
        return import_module(module_name, cwd)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise UsageError(
                f"target {target!r}: no module named {module_name!r} (looked in {cwd} and sys.path)"
            ) from exc
        raise UsageError(f"target {target!r}: importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:
        raise UsageError(
            f"target {target!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}"
        ) from exc


def _import_file(path: str, target: str) -> ModuleType:
    if not os.path.exists(path):
        raise UsageError(f"target {target!r}: file {path!r} does not exist")
    name = "_reactor_target_" + os.path.splitext(os.path.basename(path))[0]
    try:
        return exec_file(name, path)
    except Exception as exc:
        raise UsageError(
            f"target {target!r}: importing {path!r} raised {type(exc).__name__}: {exc}"
        ) from exc
