"""The dedup window of an idempotent group on a redis channel, shared by every worker."""

from __future__ import annotations

import logging
import threading

from reactor.channels.dedup import DedupWindow
from reactor.channels.redis.client import is_connection_error
from reactor.channels.redis.link import RedisLink

__all__ = ["RedisDedupWindow"]

logger = logging.getLogger("reactor")


class RedisDedupWindow(DedupWindow):
    """A dedup window shared by every worker of a group, kept in Redis.

    ``idempotent=True`` consumers on a redis channel get one: ``add`` records the
    id (``ZADD`` into ``{prefix}:{channel}:seen:{group}``, scored by wall time,
    trimmed to the last ``size`` ids) before the consumer acks, so a worker that
    claims the entry of a worker killed between the handler's return and its ack
    skips it. ``in`` asks Redis when the id is not in the local window (one round
    trip per new event: the price of idempotence across processes). If Redis is
    unreachable the check answers "not seen" (handle again: at-least-once).

    Thread-safety: members of one group share the window; methods may be called
    from any thread.
    """

    __slots__ = ("_group", "_link", "_lock", "_n")

    def __init__(self, link: RedisLink, group: str, size: int) -> None:
        super().__init__(size)
        self._link = link
        self._group = group
        self._lock = threading.Lock()
        self._n = 0

    def __contains__(self, event_id: object) -> bool:
        if super().__contains__(event_id):
            return True
        try:
            found = self._link.client.seen(self._group, str(event_id))
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            return False
        if found:
            super().add(str(event_id))
        return found

    def add(self, event_id: str) -> None:
        with self._lock:
            if super().__contains__(event_id):
                return
            super().add(event_id)
            self._n += 1
            n = self._n
        keep = self.size if n % max(1, self.size // 4) == 0 else None
        try:
            self._link.client.add_seen(self._group, event_id, self._link.clock.wall(), keep)
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            logger.warning(
                "channel %r: could not record handled event %s in Redis (%s); another worker "
                "may handle it again if this one dies before acking it",
                self._link.name,
                event_id,
                exc,
            )
