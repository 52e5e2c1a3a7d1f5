"""Which backend opens a channel, chosen by the scheme of its ``backend`` URL.

``memory`` is built in. Other backends register themselves here with
:func:`register_backend`; the runtime asks :func:`backend_for` and never which
backend it got.
"""

from __future__ import annotations

import importlib

from reactor.channels.backend import ChannelBackend
from reactor.channels.memory import MemoryBackend

__all__ = ["backend_for", "known_schemes", "register_backend", "scheme_of"]

_BACKENDS: dict[str, ChannelBackend] = {}


def register_backend(backend: ChannelBackend) -> None:
    """Make ``backend`` open channels whose URL starts with ``backend.scheme``."""
    _BACKENDS[backend.scheme] = backend


def scheme_of(url: str) -> str:
    """``sqlite`` for ``sqlite:///audit.db``, ``memory`` for ``memory``."""
    return url.split(":", 1)[0]


def known_schemes() -> tuple[str, ...]:
    _load_optional()
    return tuple(sorted(_BACKENDS))


def backend_for(url: str) -> ChannelBackend:
    """The backend for a channel URL.

    Raises:
        LookupError: no backend handles that scheme; the message lists those that do.
    """
    _load_optional()
    backend = _BACKENDS.get(scheme_of(url))
    if backend is None:
        raise LookupError(
            f"no channel backend for {url!r}; known backends: {', '.join(sorted(_BACKENDS))}"
        )
    return backend


_OPTIONAL = ("reactor.channels.sqlite", "reactor.channels.redis")
_loaded = False


def _load_optional() -> None:
    # Backends with their own modules register on import; importing here keeps the
    # registry complete without the runtime naming them. Once per process: a module
    # that is missing would otherwise be searched for on every lookup.
    global _loaded  # noqa: PLW0603 - a once-per-process latch
    if _loaded:
        return
    for module in _OPTIONAL:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
    _loaded = True


register_backend(MemoryBackend())
