"""The window of recently handled event ids behind ``idempotent=True``."""

from __future__ import annotations

from collections import deque

from reactor.errors import TopologyError

__all__ = ["DedupWindow"]


class DedupWindow:
    """Remembers the last ``size`` handled event ids of one consumer group.

    An event redelivered after its handler returned (because the ack was lost to a
    crash or an abandoned handler) is skipped if its id is still in the window.
    Redeliveries happen within moments of the first delivery, so a window of
    100,000 ids covers them with room to spare while keeping memory bounded
    (about 10 MB at the default).

    Thread-safety: members of one group share a window; ``add`` and ``__contains__``
    are single operations on a set and a deque, atomic under the GIL.
    """

    __slots__ = ("_order", "_seen", "size")

    def __init__(self, size: int = 100_000) -> None:
        if size < 1:
            raise TopologyError(
                f"dedup window size must be >= 1, got {size}; give the idempotent consumer "
                "a window of at least one event id"
            )
        self.size = size
        self._seen: set[str] = set()
        self._order: deque[str] = deque()

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._seen

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, event_id: str) -> None:
        if event_id in self._seen:
            return
        self._seen.add(event_id)
        self._order.append(event_id)
        while len(self._order) > self.size:
            self._seen.discard(self._order.popleft())
