"""Delayed and scheduled events: when an event is due, and how a handler asks for one.

An event published with ``delay=`` (seconds) or ``at=`` (a timezone-aware
``datetime``) waits in its channel's *scheduled area* and enters the channel at
its due time, then flows like any other event (groups, per-key order from then
on, acks, retries, dead letters). Due times are wall time, read from the
system's injected :class:`~reactor.Clock` (``clock.wall()``), so they mean the
same after a restart of the process; the scheduled area of a ``sqlite`` or
``redis`` channel is stored before ``publish`` returns, that of a ``memory``
channel lives in the process (see :mod:`reactor.channels.scheduled`).

Three ways in, one path (:meth:`Router.schedule <reactor.runtime.router.Router.schedule>`):

* users: ``System.publish(..., delay=60)`` / ``at=``, ``publish_many`` and
  ``AsyncSystem.publish`` likewise;
* handlers: return :class:`Delayed` (``Delayed(event.derive(...), delay=60)``),
  alone or among other outputs; the consumer schedules it in its output channel;
* runtime code (a saga's step timeouts): ``router.schedule(channel, events,
  due=due_time(router.clock, delay=..., at=...), timeout=...)``.

:func:`due_time` is the one check of ``delay`` / ``at``; every face calls it.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING

import attrs

from reactor.errors import ScheduleError
from reactor.messages.event import Event

if TYPE_CHECKING:
    from reactor.clock import Clock

__all__ = ["Delayed", "check_schedule", "due_time"]


def check_schedule(delay: float | None, at: datetime | None, where: str = "publish") -> None:
    """Refuse a ``delay`` / ``at`` pair that names no due time, or two.

    Args:
        delay: seconds from now (a finite number >= 0), or None.
        at: a timezone-aware ``datetime``, or None.
        where: what the caller called, for the message (``publish``, ``Delayed``).

    Raises:
        ScheduleError: both given; ``delay`` negative, ``nan``, infinite or not a
            number; ``at`` not a ``datetime`` or naive.
    """
    if delay is not None and at is not None:
        raise ScheduleError(
            f"{where}() got both delay={delay!r} and at={at!r}; pass one of them: delay= "
            "for seconds from now, at= for a moment in time"
        )
    if delay is not None and not (
        isinstance(delay, int | float)
        and not isinstance(delay, bool)
        and math.isfinite(delay)
        and delay >= 0
    ):
        raise ScheduleError(
            f"{where}(delay={delay!r}): delay must be a finite number of seconds >= 0 "
            "(0 publishes at once); for a moment in time pass at=datetime(..., tzinfo=UTC)"
        )
    if at is not None:
        if not isinstance(at, datetime):
            raise ScheduleError(
                f"{where}(at={at!r}): at must be a datetime, not {type(at).__name__}; "
                "for seconds from now pass delay= instead"
            )
        if at.tzinfo is None or at.utcoffset() is None:
            raise ScheduleError(
                f"{where}(at={at.isoformat()}): at is a naive datetime, so its moment is "
                "unknown; give it a time zone, e.g. datetime(..., tzinfo=UTC) or "
                "datetime.now(UTC) + timedelta(minutes=5)"
            )


def due_time(
    clock: Clock, delay: float | None = None, at: datetime | None = None, where: str = "publish"
) -> float | None:
    """The wall time (``clock.wall()`` seconds) at which an event is due, or None for "now".

    None when neither is given, or when the due time is not later than now: such
    an event is published at once, the usual way.

    Raises:
        ScheduleError: see :func:`check_schedule`.
    """
    if delay is None and at is None:
        return None
    check_schedule(delay, at, where)
    now = clock.wall()
    due = now + delay if delay is not None else at.timestamp()  # type: ignore[union-attr]
    return due if due > now else None


@attrs.frozen(slots=True)
class Delayed:
    """A handler's output that enters the output channel later: return it from a handler.

    ::

        def reserve(event):
            reserved = event.derive("stock.reserved", {...})
            expire = Delayed(event.derive("stock.expire", {...}), delay=900)
            return [reserved, expire]

    The delay counts from when the handler returns (the consumer schedules it
    then, with the other outputs, before the input is acked).

    Attributes:
        event: the event to publish later.
        delay: seconds from when the handler returns (a finite number >= 0).
        at: or a timezone-aware moment.

    Raises:
        ScheduleError: bad ``delay`` / ``at`` (see :func:`check_schedule`), or neither.
        TypeError: ``event`` is not an :class:`~reactor.Event`.
    """

    event: Event
    delay: float | None = None
    at: datetime | None = None

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.event, Event):
            raise TypeError(
                f"Delayed(event={self.event!r:.80}): wrap an Event (e.g. event.derive(topic, "
                f"data)), not {type(self.event).__name__}"
            )
        if self.delay is None and self.at is None:
            raise ScheduleError(
                "Delayed() needs delay= (seconds from now) or at= (a timezone-aware datetime); "
                "return the event itself to publish it at once"
            )
        check_schedule(self.delay, self.at, "Delayed")

    def due(self, clock: Clock) -> float | None:
        """Its wall due time as of now on ``clock`` (None: due already)."""
        return due_time(clock, self.delay, self.at, "Delayed")
