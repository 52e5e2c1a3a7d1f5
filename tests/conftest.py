"""Shared fixtures: every test stops what it started and leaks no thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pykka
import pytest
from redis_support import redis_server, redis_url  # noqa: F401 - fixtures for the redis tests
from support import backend, durable  # noqa: F401 - the fixtures of the tests written once per backend

from reactor.actors.base import reactor_threads


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    pykka.ActorRegistry.stop_all(block=True, timeout=5)
    leaked = []
    for thread in reactor_threads():
        if thread in before:
            continue
        thread.join(5.0)
        if thread.is_alive():
            leaked.append(thread.name)
    assert not leaked, f"reactor threads left running after the test: {leaked}"
