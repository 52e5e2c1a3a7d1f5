"""Capacity credits between publishers and a channel.

A channel lends ``capacity`` credits. A publisher takes one per event *before* the
event enters the channel's mailbox, and the channel returns it once every group
has acked the event, or the event was dropped or dead-lettered. So the number of
published-but-unsettled events never exceeds ``capacity`` (plus the documented
overdraft below), whatever the publishers do, and memory stays bounded.

The gate is also how the system knows it is idle: ``used == 0`` on every gate
means nothing is in flight anywhere.

A backend whose count lives elsewhere (a broker shared by many processes) reads
it back and sets it with :meth:`CapacityGate.recount`, and closes the gate while
it cannot reach the broker with :meth:`CapacityGate.suspend`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal

from reactor.errors import BackpressureTimeout, ChannelFull, SystemStoppedError

__all__ = ["OVERFLOW_POLICIES", "CapacityGate", "Overflow"]

Overflow = Literal["block", "drop_oldest", "drop_newest", "reject"]
OVERFLOW_POLICIES: tuple[Overflow, ...] = ("block", "drop_oldest", "drop_newest", "reject")

# ``drop_oldest`` admits every publish and lets the channel evict queued events, so the
# mailbox can briefly hold more than ``capacity``; past this multiple publishers wait.
# An overdraft (see ``acquire``) stops at the same multiple: one capacity more, at most.
_DROP_OLDEST_CEILING = 2
_OVERDRAFT_CEILING = 2


class CapacityGate:
    """Counts a channel's unsettled events and applies its overflow policy.

    Thread-safety: every method may be called from any thread.
    """

    def __init__(
        self,
        channel: str,
        capacity: int,
        overflow: Overflow,
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        self.channel = channel
        self.capacity = capacity
        self.overflow = overflow
        self.used = 0
        self.peak = 0
        self.dropped = 0
        self.taken = 0  # credits ever taken
        self.suspended: str | None = None  # why the channel takes no events now
        # The condition's lock, used bare (a C context manager) where nobody waits.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._waiting = 0  # publishers blocked in acquire(); release() skips notify when 0
        self._closed = False
        self._on_idle = on_idle

    def acquire(self, count: int, timeout: float | None, *, overdraft: bool = False) -> int:
        """Take up to ``count`` credits; return how many the caller may publish.

        Returns fewer than ``count`` (possibly 0) only under ``drop_newest``: the
        caller drops the rest. ``overdraft`` admits everything at once, up to one
        capacity beyond capacity; a handler uses it when publishing back into the
        channel it consumes from, where waiting for capacity would wait on itself.

        While the gate is suspended it counts as full: ``reject`` raises,
        ``drop_newest`` admits nothing, the others wait for it to resume.

        Raises:
            BackpressureTimeout: ``block`` policy and no credit within ``timeout``.
            ChannelFull: ``reject`` policy and not enough credit for all ``count``,
                or an overdraft past one capacity beyond capacity.
            SystemStoppedError: the gate was closed (the system stopped) while waiting.
        """
        if self.try_take(count):
            return count
        with self._cond:
            if self.suspended is not None and not overdraft:
                if self.overflow == "reject":
                    raise ChannelFull(
                        self._suspended_text("its overflow policy is 'reject'; retry later")
                    )
                if self.overflow == "drop_newest":
                    return 0
                timeout = self._wait_resumed(timeout)
            free = self.capacity - self.used
            if free >= count:
                return self._take(count)
            if overdraft:
                if self.used + count > self.capacity * _OVERDRAFT_CEILING:
                    raise ChannelFull(
                        f"channel {self.channel!r} holds {self.used} unsettled events, a whole "
                        f"capacity ({self.capacity}) over, mostly published into it by its own "
                        "consumers; the event whose outputs these are fails and is retried "
                        "later. Publish outputs to another channel, raise capacity, or make "
                        "fewer outputs per event"
                    )
                return self._take(count)
            if self.overflow == "reject":
                raise ChannelFull(
                    f"channel {self.channel!r} is full ({self.used}/{self.capacity} events "
                    "unsettled) and its overflow policy is 'reject'; retry later, raise "
                    "capacity, or choose another overflow policy"
                )
            if self.overflow == "drop_newest":
                return self._take(max(0, free))
            # block (and drop_oldest past its ceiling): take what is free as soon as
            # any is, so a big batch cannot starve behind small ones.
            limit = self.capacity * (_DROP_OLDEST_CEILING if self.overflow == "drop_oldest" else 1)
            if self.used >= limit:
                self._waiting += 1
                try:
                    if not self._cond.wait_for(lambda: self.used < limit or self._closed, timeout):
                        raise self._timeout(timeout)
                finally:
                    self._waiting -= 1
                if self._closed:
                    raise SystemStoppedError(
                        f"the system stopped while this publisher waited for room in channel "
                        f"{self.channel!r}; nothing was published. Publish to a running system"
                    )
            return self._take(min(count, limit - self.used))

    def try_take(self, count: int) -> bool:
        """Take ``count`` credits if they are free now and the gate is open; else take none.

        The publisher's fast path: no policy applies while there is room.
        """
        with self._lock:
            used = self.used + count
            if used > self.capacity or self.suspended is not None:
                return False
            self.used = used
            self.taken += count
            self.peak = max(self.peak, used)
            return True

    def hold(self, count: int) -> None:
        """Count ``count`` events the channel holds already, whatever its capacity.

        Not a publish: a durable log counts what earlier runs left unsettled, or what
        a replay or a fan-out to several groups adds, so that ``wait_idle`` waits for
        it and publishers make room for it.
        """
        with self._cond:
            self._take(count)

    def close(self) -> None:
        """Wake every publisher waiting for room with :class:`SystemStoppedError`.

        The system closes its gates as it stops: no publisher may wait on a channel
        that nothing will drain any more.
        """
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def release(self, count: int) -> None:
        """Give back credits for settled events."""
        if count <= 0:
            return
        with self._lock:
            self.used -= count
            if self._waiting:
                self._cond.notify_all()
            idle = self.used == 0
        if idle and self._on_idle is not None:
            self._on_idle()

    def suspend(self, reason: str | None) -> None:
        """Close the gate (``reason`` says why, after the channel's name) or reopen it (None)."""
        with self._cond:
            self.suspended = reason
            self._cond.notify_all()

    def recount(self, count: Callable[[int, int], int]) -> None:
        """Set the number of unsettled events to ``count(used, taken)``, atomically.

        For a backend whose true count is read back from elsewhere; ``taken`` is
        every credit ever taken. ``count`` runs under the gate's lock: it must be
        quick and must not call the gate.
        """
        with self._cond:
            old = self.used
            new = self.used = count(old, self.taken)
            if new < old and self._waiting:
                self._cond.notify_all()
            idle = new == 0 and old != 0
        if idle and self._on_idle is not None:
            self._on_idle()

    def count_dropped(self, count: int) -> None:
        with self._cond:
            self.dropped += count

    @property
    def over_capacity(self) -> int:
        """How many events the channel holds beyond capacity (``drop_oldest`` evicts them)."""
        return max(0, self.used - self.capacity)

    def _wait_resumed(self, timeout: float | None) -> float | None:
        """Wait (lock held) until the gate is resumed; returns what is left of ``timeout``."""
        started = time.monotonic()
        self._waiting += 1
        try:
            if not self._cond.wait_for(lambda: self.suspended is None, timeout):
                raise BackpressureTimeout(
                    self._suspended_text(f"for {timeout}s; the events were not published")
                )
        finally:
            self._waiting -= 1
        return None if timeout is None else max(0.0, timeout - (time.monotonic() - started))

    def _suspended_text(self, tail: str) -> str:
        return f"channel {self.channel!r} {self.suspended} {tail}"

    def _take(self, count: int) -> int:
        self.taken += count
        self.used += count
        self.peak = max(self.peak, self.used)
        return count

    def _timeout(self, timeout: float | None) -> BackpressureTimeout:
        return BackpressureTimeout(
            f"channel {self.channel!r} stayed full ({self.used}/{self.capacity} events "
            f"unsettled) for {timeout}s; its consumers are slower than its publishers: "
            "add consumers, raise capacity, or pass a longer timeout"
        )
