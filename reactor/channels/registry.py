"""Which backend opens a channel, chosen by the scheme of its ``backend`` URL.

The built-in backends are named here by module path and imported the first time
a channel asks for one, so the backends never import this module (no import
circle) and a process that uses only ``memory`` never loads sqlite3 or
redis-py. Other backends register with :func:`register_backend`; the runtime
asks :func:`backend_for` and never which backend it got.
"""

from __future__ import annotations

import importlib
from typing import cast

from reactor.channels.backend import ChannelBackend
from reactor.errors import TopologyError
from reactor.text import redact_url

__all__ = ["backend_for", "known_schemes", "register_backend", "scheme_of"]

# scheme -> "module:attribute" of the backend object that opens its channels.
_BUILTIN = {
    "memory": "reactor.channels.memory:BACKEND",
    "sqlite": "reactor.channels.sqlite:BACKEND",
    "redis": "reactor.channels.redis:BACKEND",
    "rediss": "reactor.channels.redis:TLS_BACKEND",
}

_BACKENDS: dict[str, ChannelBackend] = {}


def register_backend(backend: ChannelBackend) -> None:
    """Make ``backend`` open channels whose URL starts with ``backend.scheme``."""
    _BACKENDS[backend.scheme] = backend


def scheme_of(url: str) -> str:
    """``sqlite`` for ``sqlite:///audit.db``, ``memory`` for ``memory``."""
    return url.split(":", 1)[0]


def known_schemes() -> tuple[str, ...]:
    """Every scheme a channel URL may start with."""
    return tuple(sorted(set(_BUILTIN) | set(_BACKENDS)))


def backend_for(url: str) -> ChannelBackend:
    """The backend for a channel URL.

    Raises:
        TopologyError: no backend handles that scheme; the message lists those that do.
    """
    scheme = scheme_of(url)
    backend = _BACKENDS.get(scheme)
    if backend is not None:
        return backend
    where = _BUILTIN.get(scheme)
    if where is None:
        raise TopologyError(
            f"no channel backend for {redact_url(url)!r}; known backends: "
            f"{', '.join(known_schemes())}"
        )
    module, _, attribute = where.partition(":")
    backend = cast(ChannelBackend, getattr(importlib.import_module(module), attribute))
    _BACKENDS[scheme] = backend
    return backend
