"""How a redis channel's gate counts what is unsettled across every process.

*Unsettled* means: in the stream and not yet acked by every group, across all
processes: ``max`` over the topology's groups of ``lag + pending`` from
``XINFO GROUPS``. The :class:`Monitor` thread reads it every few milliseconds
while anything is unsettled, and at once when woken (after this process acks or
publishes), and sets the gate to it plus the events this process has taken
credits for but not yet written (:class:`Writes`).

Thread-safety: every method may be called from any thread.
"""

from __future__ import annotations

import logging
import threading

from reactor.actors.base import THREAD_PREFIX
from reactor.channels.redis.client import is_connection_error, is_missing_group
from reactor.channels.redis.link import RedisLink

__all__ = ["Monitor", "Writes"]

logger = logging.getLogger("reactor")

_POLL_BUSY_S = 0.01
_POLL_IDLE_S = 0.1


class Writes:
    """The publishers' writes to Redis, as the gate's count needs to know them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.resolved = 0  # credits whose events were written, or failed to be
        self.writing = 0  # writes under way
        self.starts = 0  # writes ever started

    def begin(self) -> None:
        """A publisher starts writing events it holds credits for."""
        with self._lock:
            self.writing += 1
            self.starts += 1

    def end(self, count: int) -> None:
        """The publisher's write of ``count`` events is over (written, or failed)."""
        with self._lock:
            self.resolved += count
            self.writing -= 1

    def snapshot(self) -> tuple[int, int, int]:
        """What :meth:`count` needs to know about writes, taken before Redis is asked."""
        with self._lock:
            return self.resolved, self.starts, self.writing

    def count(self, backlog: int, before: tuple[int, int, int], used: int, taken: int) -> int:
        """The gate's new count: ``backlog`` read from Redis plus the credits not yet written.

        ``before`` is :meth:`snapshot` from before Redis was asked. If a write was
        under way meanwhile, its events may be in ``backlog`` and in the credits at
        once: such a reading may lower the count but not raise it, so a double count
        never makes a ``drop_newest`` or ``reject`` publisher refuse events it has
        room for, and a lowered count is still never below the truth.
        """
        resolved, starts, writing = before
        with self._lock:
            new = backlog + max(0, taken - resolved)
            if writing or self.writing or self.starts != starts or self.resolved != resolved:
                new = min(new, used)
            return new


class Monitor(threading.Thread):
    """Reads the backlog from Redis and sets the channel's gate to it."""

    def __init__(self, link: RedisLink, writes: Writes, lags: dict[str, int]) -> None:
        super().__init__(name=f"{THREAD_PREFIX}redis:{link.name}:monitor", daemon=True)
        self.link = link
        self.writes = writes
        self.lags = lags  # group -> undelivered in Redis, as last read
        self.names = frozenset(spec.name for spec in link.config.groups)
        self._wake = threading.Event()

    def wake(self) -> None:
        """Read the backlog again now (something was acked or published)."""
        self._wake.set()

    def sync(self) -> None:
        """Read the backlog and set the gate to it, in the caller's thread.

        Raises:
            Exception: what Redis raised (the caller decides what an outage means).
        """
        before = self.writes.snapshot()
        backlog = self.read_backlog()
        self.link.gate.recount(lambda used, taken: self.writes.count(backlog, before, used, taken))

    def read_backlog(self) -> int:
        if not self.names:
            return 0
        link = self.link
        backlog, lags, seen = link.client.backlog(self.names, link.gate.capacity + 1)
        self.lags.update(lags)
        if seen < len(self.names):
            link.ensure_groups(force=True)
        return backlog

    def run(self) -> None:
        link = self.link
        attempt = 0
        while not link.stopping.is_set():
            try:
                self.sync()
            except Exception as exc:
                if is_connection_error(exc):
                    link.lost(exc)
                elif is_missing_group(exc):
                    link.recreate_groups()
                else:
                    logger.exception("channel %r: monitor failed", link.name)
                attempt += 1
                link.stopping.wait(link.backoff(attempt))
                continue
            attempt = 0
            link.found()
            self._wake.wait(_POLL_BUSY_S if link.gate.used else _POLL_IDLE_S)
            self._wake.clear()
