"""Fanout: one feed, several groups, an autoscaled pool, and backpressure.

::

    ticker ─┐                    ┌─▶ indexer        (fast)
            ├─feed.tick──▶ [feed]├─▶ workers pool   (1..4 members, scales on backlog)
    burst ──┘                    └─▶ forwarder ──archive.record──▶ [archive] ──▶ archiver
                                                                  capacity 20     (slow)

* Every group gets every event of the feed; members of one group share them.
* Every ten seconds ``burst`` floods the feed for a few seconds: the ``workers``
  pool grows to keep up, then shrinks back when the backlog is gone.
* The ``archive`` channel is small and its ``archiver`` slow: during a burst it
  fills up, ``forwarder`` waits for room, its backlog on ``feed`` grows, and
  the producers are slowed down (credit-based backpressure) instead of memory growing.
"""

from __future__ import annotations

import time
from typing import Any

from reactor.messages.event import Event
from reactor.runtime.pool import PoolScaling
from reactor.runtime.topology import Topology

__all__ = ["DESCRIPTION", "Burst", "Ticker", "build"]

DESCRIPTION = "one feed, many groups, a pool that scales with bursts, backpressure"

TICK_INTERVAL_S = 0.05
BURST_INTERVAL_S = 0.01
BURST_PERIOD_S = 10.0
BURST_START_S = 1.0
BURST_LENGTH_S = 3.0
WORK_S = 0.025
ARCHIVE_S = 0.015


class Ticker:
    """A steady feed: one tick per poll."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> dict[str, Any]:
        self.n += 1
        return {"n": self.n, "kind": "steady"}


class Burst:
    """Silent most of the time; one event per poll during a burst window of each period."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._started: float | None = None
        self.n = 0

    def __call__(self) -> dict[str, Any] | None:
        now = self._clock()
        if self._started is None:
            self._started = now
        phase = (now - self._started) % BURST_PERIOD_S
        if not BURST_START_S <= phase < BURST_START_S + BURST_LENGTH_S:
            return None
        self.n += 1
        return {"n": self.n, "kind": "burst"}


def index(event: Event) -> None:
    """The fast group: an in-memory index, nothing to wait for."""


def work(event: Event) -> None:
    """The pool's job: some tens of milliseconds of I/O per event."""
    time.sleep(WORK_S)  # stands for a call to a remote service


def forward(event: Event) -> tuple[str, Any]:
    """Copies each feed event to the small ``archive`` channel."""
    return ("archive.record", event.data)


def archive(event: Event) -> None:
    """The slow sink: a disk write per event."""
    time.sleep(ARCHIVE_S)  # stands for a synchronous write


def build() -> Topology:
    """The fanout topology."""
    topo = Topology("fanout")
    topo.channel("feed", capacity=300)
    topo.channel("archive", capacity=20)
    topo.producer(
        "ticker", channel="feed", topic="feed.tick", source=Ticker(), interval=TICK_INTERVAL_S
    )
    topo.producer(
        "burst", channel="feed", topic="feed.tick", source=Burst(), interval=BURST_INTERVAL_S
    )
    topo.consumer("indexer", index, channel="feed", pattern="feed.#")
    topo.pool(
        "workers",
        work,
        channel="feed",
        pattern="feed.#",
        min_size=1,
        max_size=4,
        prefetch=4,
        scaling=PoolScaling(interval_s=0.2, scale_up_backlog=10, up_after=2, down_after=10),
    )
    topo.consumer(
        "forwarder", forward, channel="feed", pattern="feed.#", output="archive", prefetch=8
    )
    topo.consumer("archiver", archive, channel="archive", pattern="archive.#", prefetch=2)
    return topo
