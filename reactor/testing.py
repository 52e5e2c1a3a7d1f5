"""Helpers for testing code that runs on reactor.

* :class:`FakeClock`: time that moves only when the test says so; timers fire
  inside :meth:`FakeClock.advance`, in the test's thread.
* :func:`wait_for`: wait on a condition with a timeout, instead of sleeping.
* :class:`Recorder`: a thread-safe consumer handler that records what it saw.
* :class:`RedisServer`: a private ``redis-server`` on a free loopback port, for
  tests of ``redis://`` topologies (needs ``redis-server`` and redis-py).
"""

from __future__ import annotations

import heapq
import itertools
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reactor.clock import check_delay
from reactor.errors import ClockError
from reactor.messages.event import Event

__all__ = ["FakeClock", "Recorder", "RedisServer", "wait_for"]


class _FakeTimer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A :class:`~reactor.Clock` whose time only moves in :meth:`advance`.

    Thread-safety: safe; callbacks run in the thread that calls :meth:`advance`.
    """

    def __init__(self, start: float = 1000.0, wall: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall - start  # wall time moves with monotonic time
        self._heap: list[tuple[float, int, _FakeTimer]] = []
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._scheduled = threading.Condition(self._lock)

    def monotonic(self) -> float:
        return self._now

    def wall(self) -> float:
        """Wall time: ``wall`` (from the constructor) plus the time advanced since."""
        return self._now + self._wall_offset

    def call_later(self, delay: float, callback: Callable[[], None]) -> _FakeTimer:
        with self._lock:
            timer = _FakeTimer(self._now + check_delay(delay), callback)
            heapq.heappush(self._heap, (timer.when, next(self._order), timer))
            self._scheduled.notify_all()
        return timer

    def advance(self, seconds: float) -> None:
        """Move time forward, firing every timer that falls due, in time order.

        Raises:
            ClockError: ``seconds`` is negative (monotonic time never goes back).
        """
        if seconds < 0:
            raise ClockError(
                f"FakeClock.advance({seconds}): monotonic time never goes backwards; "
                "advance by 0 or more seconds, or start a new FakeClock at the earlier time"
            )
        target = self._now + seconds
        while True:
            with self._lock:
                if not self._heap or self._heap[0][0] > target:
                    self._now = target
                    return
                when, _, timer = heapq.heappop(self._heap)
                self._now = max(self._now, when)
            if not timer.cancelled:
                timer.callback()

    def pending(self) -> int:
        """Timers scheduled and not yet fired or cancelled."""
        with self._lock:
            return sum(1 for _, _, timer in self._heap if not timer.cancelled)

    def wait_for_timers(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Block until at least ``count`` timers are pending (an actor scheduled them)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while sum(1 for _, _, t in self._heap if not t.cancelled) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._scheduled.wait(remaining)
        return True


def wait_for(condition: Callable[[], Any], timeout: float = 5.0, *, message: str = "") -> Any:
    """Poll ``condition`` until it returns something truthy; return that.

    Raises:
        TimeoutError: still falsy after ``timeout`` seconds (``message`` says what).
    """
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(message or f"condition not met within {timeout}s")
        # Waiting on an Event that nobody sets is a bounded, interruptible pause.
        threading.Event().wait(delay)
        delay = min(delay * 2, 0.02)


class Recorder:
    """A handler that records every event it handles; optionally delegates to ``inner``.

    Thread-safety: safe to share between pool members.
    """

    def __init__(self, inner: Callable[[Event], Any] | None = None) -> None:
        self.events: list[Event] = []
        self._inner = inner
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    def __call__(self, event: Event) -> Any:
        result = self._inner(event) if self._inner is not None else None
        with self._lock:
            self.events.append(event)
            self._changed.notify_all()
        return result

    def __len__(self) -> int:
        return len(self.events)

    def data(self) -> list[Any]:
        with self._lock:
            return [event.data for event in self.events]

    def wait_for_count(self, count: int, timeout: float = 5.0) -> None:
        """Block until at least ``count`` events were recorded.

        Raises:
            TimeoutError: fewer after ``timeout`` seconds.
        """
        with self._lock:
            if not self._changed.wait_for(lambda: len(self.events) >= count, timeout):
                raise TimeoutError(
                    f"recorded {len(self.events)} events, expected {count} within {timeout}s"
                )


class RedisServer:
    """One private ``redis-server`` process on a free loopback port.

    No persistence unless ``aof``; its files go to ``directory`` (a temporary
    directory, removed on :meth:`stop`, when not given)::

        with RedisServer() as server:
            topo.channel("orders", backend=f"{server.url}?prefix=test")

    Args:
        directory: where the server keeps its files.
        aof: append-only file on, fsync'd on every write (to test restarts).
        port: the port (a free one when not given).
        binary: the ``redis-server`` to run (the one on ``PATH`` when not given).

    Raises:
        FileNotFoundError: no ``redis-server`` (install it: ``apt-get install
            redis-server``).

    Thread-safety: start and stop it from one thread; :attr:`url` and
    :meth:`client` may be used from any.
    """

    def __init__(
        self,
        directory: str | Path | None = None,
        *,
        aof: bool = False,
        port: int | None = None,
        binary: str | None = None,
    ) -> None:
        found = binary or shutil.which("redis-server")
        if found is None:
            raise FileNotFoundError(
                "redis-server is not installed (apt-get install redis-server), "
                "or pass binary= with its path"
            )
        self.binary = found
        self._temporary = directory is None
        self.directory = Path(
            tempfile.mkdtemp(prefix="reactor-redis-") if directory is None else directory
        )
        self.aof = aof
        self.port = port or _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers ``PING``.

        Raises:
            TimeoutError: it did not answer within ``timeout`` seconds.
            RuntimeError: it exited (the port was taken, say).
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(self.directory),
            "--protected-mode",
            "no",
            "--daemonize",
            "no",
        ]
        if self.aof:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait_ready(timeout)

    def client(self) -> Any:
        """A redis-py client of this server (close it, or use it in a ``with``)."""
        import redis  # noqa: PLC0415 - redis-py is optional

        return redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1.0)

    def wait_ready(self, timeout: float) -> None:
        """Wait until the server answers ``PING`` (after :meth:`start`, or a restart)."""
        import redis  # noqa: PLC0415 - redis-py is optional

        def answers() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server on port {self.port} exited with {self.process.returncode}"
                )
            try:
                with self.client() as client:
                    return bool(client.ping())
            except (redis.ConnectionError, redis.exceptions.BusyLoadingError):
                return False  # the port is not open yet, or the dataset is still loading

        wait_for(answers, timeout, message=f"redis-server on port {self.port} did not answer")

    def stop(self) -> None:
        """Stop the server (``SIGTERM``, then ``SIGKILL`` after 10 s) and remove a temporary directory."""
        process = self.process
        if process is not None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
            self.process = None
        if self._temporary:
            shutil.rmtree(self.directory, ignore_errors=True)

    def kill(self) -> None:
        """Kill the server with ``SIGKILL``, as a crash would; its files stay."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
