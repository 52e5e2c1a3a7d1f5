"""Helpers shared by the tests: a handler step that hangs once, the backend fixture, and
a check of per-key order.

The ``backend`` fixture is made available to every test module by ``conftest.py``.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Hashable, Iterable
from types import TracebackType
from typing import Any

import pytest

from reactor import Event

BACKENDS = ("memory", "sqlite", "redis")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A channel backend URL: memory, a fresh sqlite file, or a fresh redis key prefix."""
    return backend_url(request.param, tmp_path, request)


@pytest.fixture(params=["sqlite", "redis"])
def durable(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A durable backend URL: a fresh sqlite file, or a fresh redis key prefix."""
    return backend_url(request.param, tmp_path, request)


def backend_url(name: str, tmp_path: Any, request: pytest.FixtureRequest) -> str:
    """The URL of a fresh channel of backend ``name`` (redis only if a server runs)."""
    if name == "sqlite":
        return f"sqlite:///{tmp_path / 'log.db'}"
    if name == "redis":
        return str(request.getfixturevalue("redis_url"))
    return name


class HangOnce:
    """Makes a handler hang on its first call for chosen keys, until the test lets go.

    Call it from a handler with the key of the call (an event number, or
    ``(incarnation, n)``): the first call for a key in ``keys`` sets ``entered`` and
    waits for ``release``, bounded by ``timeout`` so a broken test cannot hang; it
    returns whether it hung. Use it as a context manager so the stuck thread is
    released however the test ends.

    Thread-safety: safe to call from any number of handler threads.
    """

    def __init__(self, *keys: Hashable, timeout: float = 10.0) -> None:
        self.keys = frozenset(keys)
        self.timeout = timeout
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls: collections.Counter[Hashable] = collections.Counter()
        self._lock = threading.Lock()

    def __call__(self, key: Hashable) -> bool:
        with self._lock:
            self.calls[key] += 1
            first = self.calls[key] == 1
        if key in self.keys and first:
            self.entered.set()
            self.release.wait(self.timeout)
            return True
        return False

    def __enter__(self) -> HangOnce:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release.set()


def in_key_order(events: Iterable[Event]) -> bool:
    """Whether the events of each key came in the order of their (numeric) data.

    Events without a key have no order to keep, and are left out.
    """
    by_key: dict[str, list[Any]] = {}
    for event in events:
        if event.key is not None:
            by_key.setdefault(event.key, []).append(event.data)
    return all(values == sorted(values) for values in by_key.values())
