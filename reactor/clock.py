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
import math
import threading
import time
from collections.abc import Callable
from typing import Protocol

import attrs

from reactor.errors import ClockError

__all__ = ["Clock", "SystemClock", "Timer", "check_delay"]

logger = logging.getLogger("reactor")

# The longest one wait of the timer thread lasts: a far-off timer is waited for in
# steps, so no wait is ever given a value the platform cannot represent.
_MAX_WAIT_S = 3600.0


def check_delay(delay: float) -> float:
    """``delay`` if it is a finite number of seconds >= 0, for a clock's ``call_later``.

    Raises:
        ClockError: ``delay`` is negative, ``nan`` or infinite (a timer that never
            fires is no timer: cancel it, or do not schedule it).
    """
    if isinstance(delay, int | float) and math.isfinite(delay) and delay >= 0:
        return float(delay)
    raise ClockError(
        f"call_later({delay!r}): a timer's delay must be a finite number of seconds >= 0; "
        "check the duration option it comes from (an interval, a timeout, a backoff or a "
        "lease), or do not schedule a timer that should never fire"
    )


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
        """Run ``callback`` once, ``delay`` seconds from now, on the clock's own thread.

        Raises:
            ClockError: ``delay`` is negative, ``nan`` or infinite (see :func:`check_delay`).
        """


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
    :meth:`close`, so a clock that never schedules anything owns no thread. It
    survives anything a callback raises (logged on the ``reactor`` logger): every
    other timer of the system depends on it.

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
        scheduled = _Scheduled(time.monotonic() + check_delay(delay), callback)
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
            try:
                scheduled = self._next()
                if scheduled is None:
                    return
                if not scheduled.cancelled:
                    scheduled.callback()
            except Exception:  # a broken callback must not kill every other timer
                logger.exception("timer thread %r: a timer callback failed", self._name)

    def _next(self) -> _Scheduled | None:
        """Wait for the next timer to fall due and take it; None once the clock is closed."""
        with self._wakeup:
            while not self._closed:
                if not self._heap:
                    self._wakeup.wait()
                    continue
                remaining = self._heap[0][0] - time.monotonic()
                if remaining <= 0:
                    break
                self._wakeup.wait(min(remaining, _MAX_WAIT_S))
            if self._closed:
                return None
            return heapq.heappop(self._heap)[2]
