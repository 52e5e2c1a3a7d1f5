"""The dedup window of an idempotent group on a sqlite channel, kept in the log's file."""

from __future__ import annotations

import logging

from reactor.channels.dedup import DedupWindow
from reactor.channels.sqlite.store import ChannelStore

__all__ = ["DurableDedupWindow"]

logger = logging.getLogger("reactor")


class DurableDedupWindow(DedupWindow):
    """A :class:`~reactor.channels.dedup.DedupWindow` whose ids are also in the log's file.

    ``add`` commits the id before it returns, so an event whose handler returned
    (and which the consumer then acks) is skipped after a restart even if its ack
    never reached the file. The window keeps the last ``size`` ids, in memory and
    on disk; opening it reloads them.

    Thread-safety: members of one group share the window; ``add`` may be called
    from any thread.
    """

    __slots__ = ("_group", "_n", "_store")

    def __init__(self, store: ChannelStore, group: str, size: int) -> None:
        super().__init__(size)
        self._store = store
        self._group = group
        rows = store.seen_ids(group, size)
        self._n = int(rows[0][0]) if rows else 0
        for _, event_id in reversed(rows):
            super().add(event_id)

    def add(self, event_id: str) -> None:
        store = self._store
        with store.file.lock:
            if event_id in self:
                return
            super().add(event_id)
            self._n += 1
            n = self._n
            forget = n - self.size if n % max(1, self.size // 4) == 0 else None
            if not store.record_seen(self._group, n, event_id, forget):
                logger.debug("dedup window of group %r: log closed, id not recorded", self._group)
