"""Retention on a sqlite channel: what ``max_events`` / ``max_age`` delete, and who is told.

Retention never deletes an event a group has not settled silently: each group
moves past the deleted events, counts them as expired, and a
``$system.retention.forced`` event says which (groups in the file that the
topology no longer declares included).

Thread-safety: runs on the channel actor's thread.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from reactor.channels.sqlite.group import count_routed, first_at_or_after
from reactor.messages import lifecycle

if TYPE_CHECKING:
    from reactor.channels.sqlite.log import SqliteLog

__all__ = ["retain"]

logger = logging.getLogger("reactor")


def retain(log: SqliteLog, now: float | None) -> int:
    """Apply ``max_events`` / ``max_age`` to ``log`` as of wall time ``now`` (the clock's if None).

    Returns:
        How many events were deleted.
    """
    options = log.options
    cutoff = log.low  # first offset to keep
    if options.max_events is not None:
        cutoff = max(cutoff, log.head - options.max_events + 1)
    if options.max_age is not None:
        wall = log.clock.wall() if now is None else now
        cutoff = max(
            cutoff, first_at_or_after(log.store, wall - options.max_age, log.low, log.head)
        )
    if cutoff <= log.low:
        return 0
    last = cutoff - 1
    forced = _expire(log, last)
    log.flush()
    deleted = log.store.delete_before(cutoff, log.head)
    log.low = cutoff
    for name, lost, first in forced:
        logger.warning(
            "channel %r: retention deleted %d event(s) group %r had not acked (offsets %d..%d)",
            log.channel,
            lost,
            name,
            first,
            last,
        )
        log.publish_system(
            lifecycle.retention_forced(log.channel, name, lost, first=first, last=last)
        )
    return deleted


def _expire(log: SqliteLog, last: int) -> list[tuple[str, int, int]]:
    """Settle what every group routes up to ``last``; returns (group, lost, first lost)."""
    counters = log.counters
    forced: list[tuple[str, int, int]] = []
    for group in log.groups.values():
        if group.committed >= last:
            continue
        lost = 0
        for queue in (group.shared, group.orphans, *(m.keyed for m in group.order)):
            doomed = [s for s in queue if s <= last and s in group.events]
            log.forget(group, doomed)
            lost += len(doomed)
        if group.cursor < last:
            unread = count_routed(log.store, group, group.cursor, last)
            group.owed -= unread
            log.release += unread
            lost += unread
            group.cursor = last
        group.preacked = {s for s in group.preacked if s > last}
        if lost:
            forced.append((group.name, lost, group.committed + 1))
            group.expired += lost
            counters.expired += lost
        log.advance(group)
    # Groups in the file that this topology does not declare lose events too: say so.
    for name, committed in log.store.groups_behind(last):
        if name not in log.groups:
            lost = last - max(committed, log.low - 1)
            if lost > 0:
                forced.append((name, lost, max(committed, log.low - 1) + 1))
                counters.expired += lost
    return forced
