"""A group on a sqlite channel: where it is in the log, and where it starts or resumes.

A group's place in the log is its watermark (``committed``: every event it
routes at or below it is settled), the highest offset ever delivered, and the
attempts and acks recorded above the watermark. :func:`recover` reads them back
when a channel opens; :func:`position` turns a ``start=`` (or a replay's
``from_``) into a watermark.

Thread-safety: a group belongs to the channel actor's thread (and the channel's
opening); ``stats()`` reads it from any thread.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from reactor.channels.backend import GroupSpec
from reactor.channels.groups import Group
from reactor.channels.sqlite.store import ChannelStore
from reactor.errors import TopologyError
from reactor.messages.control import Encoded
from reactor.messages.event import Event

__all__ = ["SqliteGroup", "count_routed", "first_at_or_after", "position", "recover"]


class SqliteGroup(Group[Event | Encoded]):
    """One declared group: its position in the log and the window it holds in memory.

    ``events`` holds the routed seqs in (committed, cursor] not settled yet
    (queued or in flight), with their events.
    """

    __slots__ = (
        "acked_unflushed",
        "charge",
        "committed",
        "cursor",
        "delivered_hwm",
        "expired",
        "flushed",
        "flushed_hwm",
        "ghosts",
        "outstanding",
        "owed",
        "pending_max",
        "preacked",
        "recovered_hwm",
    )

    def __init__(self, spec: GroupSpec, channel: str, committed: int, delivered: int = 0) -> None:
        super().__init__(spec, channel, {})
        self.committed = committed  # every routed seq <= committed is settled
        self.flushed = committed  # what the file says
        # First deliveries are not written one by one: the file keeps the highest offset
        # ever delivered. Attempts spent (failed, or charged to a crash) get a row each in
        # reactor_pending, written when a nack spends one and before a redelivery leaves.
        self.delivered_hwm = delivered
        self.flushed_hwm = delivered
        self.recovered_hwm = delivered
        # After a crash, one attempt is charged: to the lowest unsettled offset the last
        # run delivered (see the package docstring). True until it has been taken.
        self.charge = delivered > committed
        self.cursor = committed  # every seq <= cursor has been looked at
        self.outstanding: deque[int] = deque()  # routed seqs in (committed, cursor], in order
        self.preacked: set[int] = set()  # acked above the watermark in an earlier run
        self.ghosts: dict[str, set[int]] = {}  # member -> seqs it held when a replay rewound us
        self.acked_unflushed: list[int] = []
        # Highest seq that may have a row in reactor_pending: while it is at or below
        # the flushed watermark, there is nothing there to delete.
        self.pending_max = 0
        self.owed = 0  # credits: routed events in (committed, head] not settled
        self.expired = 0


def recover(
    store: ChannelStore, specs: Sequence[GroupSpec], channel: str, low: int, head: int
) -> tuple[dict[str, SqliteGroup], int]:
    """Each declared group as the file left it (new ones start where their spec says).

    A row of ``reactor_pending`` holds the attempts an event has spent (-1: acked);
    the delivery that was in flight when the last run ended is not among them
    (:attr:`SqliteGroup.charge` says whether one is still to be charged).

    Returns:
        The groups, and the credits they owe: routed events above their
        watermarks that earlier runs left unsettled.
    """
    known = store.positions()
    groups: dict[str, SqliteGroup] = {}
    new: list[tuple[str, int]] = []
    for spec in specs:
        if spec.name in known:
            committed, delivered = known[spec.name]
        else:
            what = f"channel {channel!r}, group {spec.name!r}"
            committed = delivered = position(store, spec.start, what, low, head)
            new.append((spec.name, committed))
        groups[spec.name] = SqliteGroup(spec, channel, committed, delivered)
    if new:
        store.add_groups(new)
    owed = 0
    for group in groups.values():
        for seq, attempts, topic in store.pending(group.name, group.committed):
            # Rows at or below the watermark are deleted with it, so these are all there are.
            group.pending_max = max(group.pending_max, seq)
            if topic is not None and not group.matches(topic):
                continue  # (a topic that is not text is every group's to dead-letter)
            if attempts < 0:
                group.preacked.add(seq)
            else:
                group.attempts[seq] = attempts
        group.owed = count_routed(store, group, group.committed, head) - len(group.preacked)
        owed += group.owed
    return groups, owed


def position(store: ChannelStore, start: Any, what: str, low: int, head: int) -> int:
    """The committed offset for a group starting at ``start``: one before its first event.

    Args:
        store: the channel's rows.
        start: ``"earliest"``, ``"latest"``, an offset or a ``datetime`` (naive is UTC).
        what: who asks, for the error (``channel 'c', group 'g'``).
        low: the first offset in the log.
        head: the last offset in the log.

    Raises:
        TopologyError: ``start`` is no position in a log.
    """
    if start == "earliest":
        return low - 1
    if start == "latest":
        return head
    if isinstance(start, int) and not isinstance(start, bool) and start >= 0:
        return min(max(start - 1, low - 1), head)
    if isinstance(start, datetime):
        when = start if start.tzinfo is not None else start.replace(tzinfo=UTC)
        return first_at_or_after(store, when.timestamp(), low, head) - 1
    raise TopologyError(
        f"{what}: start must be 'earliest', 'latest', an offset >= 0 or a datetime, got {start!r}"
    )


def first_at_or_after(store: ChannelStore, timestamp: float, low: int, head: int) -> int:
    """The first offset appended at or after wall time ``timestamp`` (``head + 1`` if none)."""
    # Append times never decrease with the offset (send() makes sure), and offsets in
    # [low, head] are contiguous, so a binary search over point reads finds the first.
    lo, hi = low, head + 1
    while lo < hi:
        mid = (lo + hi) // 2
        appended = store.appended_at(mid)
        if appended is None or appended >= timestamp:
            hi = mid
        else:
            lo = mid + 1
    return lo


def count_routed(store: ChannelStore, group: Group[Any], after: int, upto: int) -> int:
    """How many events in offsets ``(after, upto]`` ``group`` routes."""
    if upto <= after:
        return 0
    # A topic that is not text: every group takes the event, to dead-letter it.
    return sum(
        count
        for topic, count in store.topic_counts(after, upto)
        if topic is None or group.matches(topic)
    )
