"""The scheduled area of a ``memory`` channel: delayed events kept in the process.

A delayed event waits here until its due time (wall time of the system's clock),
then the channel actor takes it in as a publish (see
:meth:`GroupLog.release_due <reactor.channels.actor.GroupLog.release_due>`).
Events due at the same time enter in the order they were scheduled.

**Bound.** The area holds at most the channel's ``capacity`` events, on top of
the capacity of the channel itself (a scheduled event takes no credit until it
falls due: ``wait_idle`` does not wait for it, and a publisher is not slowed by
events due in an hour). Past the bound, the channel's overflow policy applies
to the area: ``block`` waits (up to the publish's ``timeout``) for events to
fall due, ``reject`` raises :class:`~reactor.ChannelFull`, ``drop_newest``
drops the new events, ``drop_oldest`` drops the events scheduled longest ago;
dropped events are counted and reported on ``$system.event.dropped`` by the channel.

**Lifetime.** The area dies with the process: a channel whose delayed events must
survive a restart is a durable one (``sqlite``, ``redis``), whose areas are in
their stores. When the channel closes with events still scheduled, it says how
many were lost on the ``reactor`` logger.

Thread-safety: every method may be called from any thread (one lock).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time

from reactor.channels.gate import Overflow
from reactor.errors import BackpressureTimeout, ChannelFull, SystemStoppedError
from reactor.messages.event import Event

__all__ = ["ScheduledArea"]


class ScheduledArea:
    """Delayed events of one memory channel, by due time, at most ``capacity`` of them."""

    def __init__(self, channel: str, capacity: int, overflow: Overflow) -> None:
        self.channel = channel
        self.capacity = capacity
        self.overflow = overflow
        # (due, order, event): the order keeps events due at one time in scheduling order.
        self._heap: list[tuple[float, int, Event]] = []
        self._order = itertools.count()
        self._cond = threading.Condition(threading.Lock())
        self._closed = False

    def __len__(self) -> int:
        return len(self._heap)

    def add(
        self, events: tuple[Event, ...], due: float, timeout: float | None
    ) -> tuple[int, list[Event]]:
        """Keep ``events`` until ``due``, applying the overflow policy when full.

        Returns:
            ``(kept, dropped)``: how many of ``events`` were kept, and the events
            the policy dropped (new ones under ``drop_newest``, the oldest
            scheduled under ``drop_oldest``) for the channel to count and report.

        Raises:
            ChannelFull: ``reject`` and no room for every event (none was kept).
            BackpressureTimeout: ``block`` and still full after ``timeout`` (the
                events before the one that waited were kept).
            SystemStoppedError: the channel closed.
        """
        kept = 0
        dropped: list[Event] = []
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._check_open()
            heap = self._heap
            free = self.capacity - len(heap)
            if len(events) > free:
                if self.overflow == "reject":
                    raise ChannelFull(
                        f"channel {self.channel!r} has {len(heap)}/{self.capacity} delayed events "
                        "scheduled (its scheduled area is full) and its overflow policy is "
                        "'reject'; retry later, raise capacity, or use a durable channel "
                        "(sqlite, redis), whose scheduled events are stored, not held in memory"
                    )
                if self.overflow == "drop_newest":
                    dropped = list(events[max(0, free) :])
                    events = events[: max(0, free)]
                elif self.overflow == "drop_oldest":
                    dropped = self._evict(min(len(events) - free, len(heap)))
                    if len(events) > self.capacity:  # the oldest of the new ones go too
                        dropped += events[: len(events) - self.capacity]
                        events = events[len(events) - self.capacity :]
            for event in events:
                while len(heap) >= self.capacity:  # block
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise BackpressureTimeout(
                            f"channel {self.channel!r} kept {len(heap)}/{self.capacity} delayed "
                            f"events scheduled (its scheduled area is full) for {timeout}s; "
                            f"{kept} of {len(events)} were scheduled. Raise capacity, pass a "
                            "longer timeout, or use a durable channel (sqlite, redis)"
                        )
                    self._cond.wait(remaining)
                    self._check_open()
                heapq.heappush(heap, (due, next(self._order), event))
                kept += 1
        return kept, dropped

    def take_due(self, now: float) -> list[Event]:
        """Remove and return the events due at wall time ``now``, in due order."""
        heap = self._heap
        taken: list[Event] = []
        with self._cond:
            while heap and heap[0][0] <= now:
                taken.append(heapq.heappop(heap)[2])
            if taken:
                self._cond.notify_all()  # publishers waiting for room (block)
        return taken

    def next_due(self) -> float | None:
        """The earliest due time in the area, or None if it is empty."""
        with self._cond:
            return self._heap[0][0] if self._heap else None

    def close(self) -> int:
        """Refuse new events, wake waiting publishers; returns how many were still scheduled."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            left = len(self._heap)
            self._heap.clear()
        return left

    def _evict(self, count: int) -> list[Event]:
        """Remove the ``count`` events scheduled longest ago (lock held)."""
        heap = self._heap
        victims = set(heapq.nsmallest(count, range(len(heap)), key=lambda i: heap[i][1]))
        evicted = [heap[i][2] for i in sorted(victims, key=lambda i: heap[i][1])]
        heap[:] = [item for i, item in enumerate(heap) if i not in victims]
        heapq.heapify(heap)
        return evicted

    def _check_open(self) -> None:
        if self._closed:
            raise SystemStoppedError(
                f"channel {self.channel!r} is closed (its system stopped); it schedules no "
                "more events"
            )
