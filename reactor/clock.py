"""Time, injected: the :class:`Clock` protocol and the real :class:`SystemClock`.

Timers, backoff, rate limits and restart-intensity windows all read a clock
instead of calling :mod:`time` directly, so tests can drive them with
:class:`reactor.testing.FakeClock` and never sleep.

A timer callback must be quick and must not block: the usual callback is
``address.tell(SomeMessage())``, which hands the work to an actor.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

import attrs

__all__ = ["Clock", "SystemClock", "Timer"]

logger = logging.getLogger("reactor")


class Timer(Protocol):
    """A scheduled callback that can be cancelled before it fires."""

    def cancel(self) -> None:
        """Stop the callback from running; harmless if it already ran."""


class Clock(Protocol):
    """What reactor needs from time."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""

    def wall(self) -> float:
        """Wall time: seconds since the Unix epoch (stamps that outlive the process)."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback`` once, ``delay`` seconds from now, on the clock's own thread."""


@attrs.define(eq=False)
class _Scheduled:
    when: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class SystemClock:
    """The real clock: :func:`time.monotonic`, :func:`time.time` and one timer thread per clock.

    The timer thread starts with the first :meth:`call_later` and ends with
    :meth:`close`, so a clock that never schedules anything owns no thread.

    Thread-safety: every method may be called from any thread.
    """

    def __init__(self, name: str = "reactor-timer") -> None:
        self._name = name
        self._heap: list[tuple[float, int, _Scheduled]] = []
        self._order = itertools.count()
        self._wakeup = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    # The C function itself: consumers read the clock around every handler call.
    monotonic = staticmethod(time.monotonic)
    wall = staticmethod(time.time)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        scheduled = _Scheduled(time.monotonic() + max(0.0, delay), callback)
        with self._wakeup:
            if self._closed:
                # A closed clock drops new timers: everything that schedules them is stopping too.
                scheduled.cancelled = True
                return scheduled
            heapq.heappush(self._heap, (scheduled.when, next(self._order), scheduled))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._wakeup.notify()
        return scheduled

    def close(self, timeout: float = 5.0) -> None:
        """Cancel every pending timer and end the timer thread."""
        with self._wakeup:
            self._closed = True
            self._heap.clear()
            self._wakeup.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._closed:
                    if not self._heap:
                        self._wakeup.wait()
                        continue
                    remaining = self._heap[0][0] - time.monotonic()
                    if remaining <= 0:
                        break
                    self._wakeup.wait(remaining)
                if self._closed:
                    return
                _, _, scheduled = heapq.heappop(self._heap)
            if not scheduled.cancelled:
                try:
                    scheduled.callback()
                except Exception:  # a broken callback must not kill every other timer
                    logger.exception("timer callback %r failed", scheduled.callback)
