"""A private ``redis-server`` for the tests, and helpers to talk to it.

The session fixture starts one server on a free loopback port, with no
persistence, in a temporary directory; each test gets a fresh key prefix on it
(``redis_url``). Tests that restart or stop Redis start their own server with
:class:`RedisServer`. Without ``redis-server`` the redis tests are skipped,
except in CI (``CI=true``), where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reactor import testing

__all__ = ["RedisServer", "redis_server", "redis_url", "require_redis_server"]


def require_redis_server() -> str:
    """The path of ``redis-server``; skips the test (fails in CI) if there is none."""
    path = shutil.which("redis-server")
    if path is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{message}; CI must run the redis tests")
        pytest.skip(message)
    try:
        import redis  # noqa: F401, PLC0415 - only whether it is installed
    except ModuleNotFoundError:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("redis-py is not installed; CI installs it with the test extra")
        pytest.skip("redis-py is not installed (pip install reactor-actors[redis])")
    return path


class RedisServer(testing.RedisServer):
    """:class:`reactor.testing.RedisServer` that skips the test (fails in CI) without one."""

    def __init__(self, directory: Path, *, aof: bool = False, port: int | None = None) -> None:
        super().__init__(directory, aof=aof, port=port, binary=require_redis_server())


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The session's private redis-server (no persistence)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """A channel URL with a key prefix of its own, on the session's server."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    yield f"{redis_server.url}?prefix={prefix}&lease=2"
    with redis_server.client() as client:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)


# -- a worker process for the scale-out tests and the benchmark --------------------------


def worker_topology(url: str, events: int = 0, work_s: float = 0.0) -> Any:
    """``feed`` publishes ``events`` numbers; ``work`` (idempotent) records each in Redis.

    The handler's side effect is ``HSETNX effects {id} {pid}`` (idempotent by
    itself); ``done`` lists every completed handling, duplicates included.
    """
    import redis  # noqa: PLC0415 - redis-py is optional

    from reactor import Event, Topology  # noqa: PLC0415 - redis-py is optional

    prefix = url.split("prefix=")[1].split("&", maxsplit=1)[0]
    client = redis.Redis.from_url(url.split("?", maxsplit=1)[0])
    pid = str(os.getpid())

    def work(event: Event) -> None:
        if work_s:
            time.sleep(work_s)  # sleep-ok: the handler's work, not synchronisation
        pipe = client.pipeline(transaction=False)
        pipe.hsetnx(f"{prefix}:effects", event.id, pid)
        pipe.rpush(f"{prefix}:done", event.id)
        pipe.execute()

    topo = Topology("scale")
    topo.channel("jobs", backend=url, capacity=5_000)
    topo.producer(
        "feed", channel="jobs", topic="jobs.run", source=({"n": n} for n in range(events))
    )
    topo.consumer("work", work, channel="jobs", idempotent=True, prefetch=32)
    return topo


if __name__ == "__main__":  # python tests/redis_support.py URL [WORK_S]: one worker
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from reactor.runtime.worker import run_worker

    work_seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    sys.exit(run_worker(worker_topology(sys.argv[1], work_s=work_seconds), "work"))
