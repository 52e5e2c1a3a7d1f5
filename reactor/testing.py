"""Helpers for testing code that runs on reactor.

* :class:`FakeClock`: time that moves only when the test says so; timers fire
  inside :meth:`FakeClock.advance`, in the test's thread.
* :func:`wait_for`: wait on a condition with a timeout, instead of sleeping.
* :class:`Recorder`: a thread-safe consumer handler that records what it saw.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

from reactor.messages.event import Event

__all__ = ["FakeClock", "Recorder", "wait_for"]


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

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._heap: list[tuple[float, int, _FakeTimer]] = []
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._scheduled = threading.Condition(self._lock)

    def monotonic(self) -> float:
        return self._now

    def call_later(self, delay: float, callback: Callable[[], None]) -> _FakeTimer:
        with self._lock:
            timer = _FakeTimer(self._now + max(0.0, delay), callback)
            heapq.heappush(self._heap, (timer.when, next(self._order), timer))
            self._scheduled.notify_all()
        return timer

    def advance(self, seconds: float) -> None:
        """Move time forward, firing every timer that falls due, in time order."""
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
