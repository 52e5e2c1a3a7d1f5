"""Per-actor counters, written by the actor and read by anyone without locking.

Only the owning actor's thread writes. Readers take a :meth:`ActorCounters.snapshot`;
under the GIL each integer read is atomic, so a snapshot is a consistent-enough
view for dashboards and metrics without ever blocking the actor.
"""

from __future__ import annotations

import attrs

__all__ = ["ActorCounters", "LatencySnapshot", "LatencySummary"]

_RING = 1024


@attrs.frozen(slots=True)
class LatencySnapshot:
    """Handler latency over the last ``window`` calls, in seconds."""

    count: int
    window: int
    p50: float
    p99: float
    max: float
    mean: float


class LatencySummary:
    """A ring of the last 1024 latencies plus running totals: O(1) to record."""

    __slots__ = ("_ring", "count", "total")

    def __init__(self) -> None:
        self._ring: list[float] = []
        self.count = 0
        self.total = 0.0

    def record(self, seconds: float) -> None:
        count = self.count = self.count + 1
        self.total += seconds
        ring = self._ring
        if count <= _RING:
            ring.append(seconds)
        else:
            ring[count % _RING] = seconds

    def snapshot(self) -> LatencySnapshot:
        values = sorted(self._ring[:])  # slicing a list is one C call: safe against the writer
        if not values:
            return LatencySnapshot(count=self.count, window=0, p50=0.0, p99=0.0, max=0.0, mean=0.0)
        last = len(values) - 1
        return LatencySnapshot(
            count=self.count,
            window=len(values),
            p50=values[last // 2],
            p99=values[min(last, round(last * 0.99))],
            max=values[last],
            mean=self.total / self.count if self.count else 0.0,
        )


class ActorCounters:
    """Counters of one actor, kept across its restarts (they live with its address)."""

    @property
    def busy_since(self) -> float | None:
        """When the current handler call began (clock time), or None when idle."""
        current = self.current
        return current[2] if current is not None else None

    __slots__ = (
        "batches",
        "current",
        "event_failures",
        "failed",
        "handled",
        "in_flight",
        "latency",
        "problem",
        "received",
        "restarts",
        "state",
    )

    def __init__(self) -> None:
        self.received = 0
        self.handled = 0
        self.failed = 0  # incarnations that ended abnormally
        self.event_failures = 0  # handler calls that raised (each one event's failure)
        self.batches = 0  # batches a batch consumer's handler took (0 for other actors)
        # Why the actor is degraded although it runs (a consumer failing event after
        # event), one line; None when it is fine. Health reports it.
        self.problem: str | None = None
        self.in_flight = 0
        self.restarts = 0
        self.state = "starting"
        # What the actor is working on, set and cleared as one tuple so a reader in
        # another thread never sees half of it: (epoch, seq, monotonic start) for a
        # consumer. The supervisor's watchdog reads it to find hung handlers.
        self.current: tuple[int, int, float] | None = None
        self.latency = LatencySummary()
