"""The sqlite backend's side of the group-channel actor: the log, paging, watermarks.

One concept: how a channel actor follows a durable log (the protocol with the
members is :mod:`reactor.channels.actor`'s). Each group keeps a window of the
log in memory, paged from the file as demand arrives, and a watermark
(``committed``) below which everything it routes is settled. Attempts, acks
above the watermark, watermarks and dead letters are buffered and written in
one transaction (:meth:`SqliteLog.flush`) before deliveries leave, when the
mailbox is empty, or when enough acks piled up. Retention and replay move the
watermarks too. See :mod:`reactor.channels.sqlite` for what is stored and why.

Thread-safety: the state belongs to the channel actor's thread, except the
counters the publishers bump in :meth:`~reactor.channels.sqlite.channel.SqliteChannel.send`
and what ``stats()`` reads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import repeat
from typing import Any

import attrs

from reactor.actors.address import Address
from reactor.channels.actor import Doomed, GroupChannelActor, GroupLog
from reactor.channels.backend import ChannelParts
from reactor.channels.dedup import DedupWindow
from reactor.channels.groups import Counters, Group, Member
from reactor.channels.routes import RouteCache
from reactor.channels.sqlite.group import SqliteGroup, count_routed, position, recover
from reactor.channels.sqlite.options import SqliteOptions
from reactor.channels.sqlite.retention import retain
from reactor.channels.sqlite.store import ChannelStore, DeadLetterRow, Progress, Row
from reactor.clock import Timer
from reactor.errors import DecodeError, UnknownGroupError
from reactor.messages import lifecycle
from reactor.messages.codecs import JsonCodec
from reactor.messages.control import Deliver, Encoded, decoded
from reactor.messages.control import unreadable as unreadable_item
from reactor.messages.event import Event
from reactor.text import names_or_none

__all__ = ["Appended", "Replay", "Retain", "SqliteLog"]

# Rows read from the file per page, and the most events one group keeps in memory
# ahead of its watermark (at least this, or the channel's capacity if larger).
PAGE = 512
MIN_WINDOW = 1024
# Acks are written lazily (when the mailbox is empty, before any delivery, or past this).
_ACK_FLUSH = 4096

codec = JsonCodec()


# -- messages --------------------------------------------------------------------------


@attrs.frozen(slots=True)
class Appended:
    """Events stored at offsets ``first ..``; sent by ``send`` in offset order.

    ``owners`` (a redrive) names, per event, the one group it is for: the file
    holds it acked already for every other group.
    """

    first: int
    events: tuple[Event, ...]
    owners: tuple[str, ...] | None = None


@attrs.frozen(slots=True)
class Replay:
    """Rewind ``group`` to ``start``; the reply is the first offset it gets again."""

    group: str
    start: Any


@attrs.frozen(slots=True)
class Retain:
    """Enforce retention now (timer or test); the reply is how many events were deleted."""

    now: float | None = None
    timer: bool = False


# -- state -----------------------------------------------------------------------------


class SqliteLog(GroupLog):
    """The channel actor's view of one channel's log; survives restarts of the actor.

    Opening it recovers each declared group from the file: its watermark, the
    attempts spent above it and what was acked there, and the credits it still owes.
    """

    refills = True
    abandons = True

    def __init__(
        self,
        parts: ChannelParts,
        options: SqliteOptions,
        store: ChannelStore,
        release: Callable[[float], float | None],
    ) -> None:
        config = parts.config
        gate = self.gate = parts.gate
        self.channel = config.name
        self.options = options
        self.clock = parts.services.clock
        self.publish_system = parts.services.publish_system
        self.store = store
        self.address = parts.address
        self.window = max(MIN_WINDOW, config.capacity)
        self.max_batch = config.max_batch
        self.counters = Counters()
        self.head = store.head  # last offset the actor has heard of
        self.low = store.low()  # first offset still in the file (head + 1 when empty)
        self.groups, owed = recover(store, config.groups, config.name, self.low, self.head)
        if owed:
            # What earlier runs left unsettled: wait_idle waits for it, publishers make room for it.
            gate.hold(owed)
        self.routes = RouteCache(self.groups)
        self.attempts: list[tuple[str, int, int]] = []  # redeliveries to record
        self.dead_letters: list[DeadLetterRow] = []
        # Letters in the file (this process's count: written under the file's lock).
        self.stored_letters = store.count_dead_letters()
        # Delayed events in the file (written under the file's lock, like the letters).
        self.scheduled = store.count_scheduled()
        # The handle's move of due events into the log: it owns the head and the lock.
        self._release = release
        self.dirty: set[SqliteGroup] = set()
        self.outbox: list[tuple[Address, Deliver]] = []
        self.release = 0
        self.timer: Timer | None = None
        self.dedup: dict[str, DedupWindow] = {}  # filled by SqliteChannel.dedup_window

    actor: GroupChannelActor  # the incarnation running now, set by bind()

    def position(self, start: Any, what: str) -> int:
        """The committed offset for a group starting at ``start`` (see :func:`position`)."""
        what = f"channel {self.channel!r}, {what}"
        return position(self.store, start, what, self.low, self.head)

    # -- the actor's lifecycle ---------------------------------------------------------

    def bind(self, actor: GroupChannelActor) -> dict[type, Callable[[Any], Any]]:
        self.actor = actor
        return {Appended: self.appended, Replay: self.replay, Retain: self.retain_message}

    def started(self) -> None:
        self._arm_timer()

    def stopped(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.flush()
        self._send_outbox()

    def crashed(self) -> None:
        if self.timer is not None:
            self.timer.cancel()

    def release_due(self, now: float) -> float | None:
        return self._release(now)

    def _arm_timer(self) -> None:
        age = self.options.max_age
        if age is None:
            return
        address = self.address
        self.timer = self.clock.call_later(
            min(60.0, age / 4), lambda: address.tell(Retain(timer=True))
        )

    def end_of_message(self) -> None:
        if self.outbox or self.dead_letters:
            self.flush()  # attempts must be on disk before the deliveries leave
            self._send_outbox()
        elif self.dirty and (
            self.address.depth() == 0
            or sum(len(g.acked_unflushed) for g in self.dirty) > _ACK_FLUSH
        ):
            self.flush()
        if self.release:
            released, self.release = self.release, 0
            self.gate.release(released)

    def _send_outbox(self) -> None:
        outbox, self.outbox = self.outbox, []
        for address, deliver in outbox:
            address.tell(deliver)

    # -- appends and paging -------------------------------------------------------------

    def appended(self, message: Appended) -> None:
        first = message.first
        events = message.events
        last = first + len(events) - 1
        self.head = last
        routes = self.routes
        owners = message.owners
        skipped: list[tuple[SqliteGroup, int]] = []  # redriven seqs for another group
        taken: dict[SqliteGroup, bool] = {}
        for offset, event in enumerate(events):
            groups = routes[event.topic]
            if not groups:
                continue
            seq = first + offset
            if owners is not None:
                groups = self._redriven(groups, owners[offset], seq, skipped)
            for group in groups:
                group.owed += 1
                live = taken.get(group)
                if live is None:
                    # Caught up with the log and room in the window: take them as they come.
                    live = taken[group] = (
                        group.cursor == first - 1 and len(group.outstanding) < self.window
                    )
                if live:
                    self._take(group, seq, event)
        for group in self.groups.values():
            if taken.get(group, group.cursor == first - 1):
                group.cursor = last
        for group, seq in skipped:
            if group.cursor < seq:
                group.preacked.add(seq)  # it pages this seq later: skip it there
        if self.gate.overflow == "drop_oldest" and self.gate.over_capacity:
            self._evict_oldest()
        max_events = self.options.max_events
        if max_events is not None and self.head - self.low + 1 > max_events + max_events // 10:
            retain(self, None)
        for group in taken:
            self.actor.dispatch(group)

    def _redriven(
        self,
        groups: tuple[SqliteGroup, ...],
        owner: str,
        seq: int,
        skipped: list[tuple[SqliteGroup, int]],
    ) -> tuple[SqliteGroup, ...]:
        """The groups a redriven ``seq`` is for: its owner (the others go to ``skipped``).

        The file holds ``seq`` acked for every other group already.
        """
        mine: list[SqliteGroup] = []
        for group in groups:
            if group.name == owner:
                mine.append(group)
            else:
                skipped.append((group, seq))
        for group in self.groups.values():
            if group.name != owner:
                # Its -1 row in the file is deleted when the watermark passes it.
                group.pending_max = max(group.pending_max, seq)
        return tuple(mine)

    def _take(self, group: SqliteGroup, seq: int, event: Event | Encoded) -> None:
        group.outstanding.append(seq)
        group.events[seq] = event
        if group.charge and seq <= group.recovered_hwm:
            # The lowest event the last run delivered and did not settle: the one most
            # likely in a handler when that run ended. Only it is charged an attempt; the
            # rest of what was delivered comes back with the attempts it had spent.
            group.charge = False
            group.attempts[seq] = group.attempts.get(seq, 0) + 1
        group.place(seq, event.key)

    def _take_page(
        self, group: SqliteGroup, seqs: list[int], items: Sequence[Event | Encoded], keyed: bool
    ) -> None:
        """:meth:`_take` for a page of rising seqs, in bulk when none is keyed or recovered."""
        if keyed or (group.charge and seqs[0] <= group.recovered_hwm):
            for seq, item in zip(seqs, items, strict=True):
                self._take(group, seq, item)
            return
        group.outstanding += seqs
        group.events.update(zip(seqs, items, strict=True))
        group.shared += seqs

    def refill(self, group: Group[Any]) -> bool:
        """Page ``group``'s next events in if its members want more than it has queued."""
        assert isinstance(group, SqliteGroup)
        demand = sum(m.demand for m in group.order)
        if (
            demand > 0
            and group.cursor < self.head
            and len(group.outstanding) < self.window
            and group.queued() < max(demand, self.max_batch)
        ):
            before = group.cursor
            self._page(group)
            return group.cursor != before
        return False

    def _page(self, group: SqliteGroup) -> None:
        """Read the next events ``group`` routes from the file, up to its window.

        An event only this group routes stays :class:`Encoded`: its consumer decodes
        it. One that several groups route is decoded here once, and the groups
        share the :class:`Event`.
        """
        routes = self.routes
        while group.cursor < self.head and len(group.outstanding) < self.window:
            rows, unreadable = self.store.page(group.cursor, self.head, PAGE)
            if not rows:
                group.cursor = self.head  # deleted by retention meanwhile
                break
            rows = rows[: self.window - len(group.outstanding)]
            seqs, topics, keys, bodies = zip(*rows, strict=True)
            fanout: dict[str | None, int] = {}  # topic -> groups routing it, 0 if not this one
            for topic in set(topics):
                if topic is not None:
                    groups = routes[topic]
                    fanout[topic] = len(groups) if group in groups else 0
            if unreadable:
                fanout[None] = 1  # a row no group can route: each takes it, to dead-letter it
                self._take_rows(group, rows, fanout, unreadable)
            elif set(fanout.values()) == {1} and not group.preacked:
                # The usual page: every event on it is this group's alone. Built in
                # bulk, by C loops (tuple.__new__ makes an Encoded without the named
                # tuple's Python constructor).
                items = list(map(tuple.__new__, repeat(Encoded), zip(keys, bodies, repeat(codec))))
                group.cursor = seqs[-1]
                self._take_page(group, list(seqs), items, keys.count(None) < len(keys))
            else:
                self._take_rows(group, rows, fanout)
        self.advance(group)

    def _take_rows(
        self,
        group: SqliteGroup,
        rows: list[Row],
        fanout: dict[str | None, int],
        unreadable: dict[int, str] | None = None,
    ) -> None:
        """:meth:`_page` for a page that is not all this group's alone: row by row.

        A row in ``unreadable`` (its topic or key is not text) is taken as bytes
        that cannot be decoded: its consumer dead-letters them, with the reason.
        """
        others = [g.events for g in self.groups.values() if g is not group]
        preacked = group.preacked
        seqs: list[int] = []
        items: list[Event | Encoded] = []
        keyed = False
        for seq, topic, key, body in rows:
            group.cursor = seq
            shared = fanout[topic]
            if not shared:
                continue
            if preacked and seq in preacked:
                preacked.discard(seq)
                continue
            if unreadable and seq in unreadable:
                items.append(unreadable_item(body, unreadable[seq]))
                seqs.append(seq)
                continue
            event = None if shared == 1 else _shared_event(others, seq, body)
            # (Undecodable bytes stay Encoded too: the consumer dead-letters them.)
            items.append(Encoded(key, body, codec) if event is None else event)
            seqs.append(seq)
            keyed = keyed or key is not None
        if seqs:
            self._take_page(group, seqs, items, keyed)

    # -- the actor's hooks ---------------------------------------------------------------

    def deliver(self, member: Member, deliver: Deliver) -> None:
        """Record the delivery's attempts; it leaves once they are on disk."""
        group = self.groups[deliver.group]
        if max(deliver.attempts) == 1:
            # First deliveries only (the usual case): the batch's seqs rise, so the last is
            # the highest.
            group.delivered_hwm = max(group.delivered_hwm, deliver.seqs[-1])
        else:
            for seq, n in zip(deliver.seqs, deliver.attempts, strict=True):
                if n > 1:
                    # What it spent before this delivery (a crash's charge included).
                    self.attempts.append((group.name, seq, n - 1))
                elif seq > group.delivered_hwm:
                    group.delivered_hwm = seq
        self.dirty.add(group)
        self.outbox.append((member.address, deliver))

    def settle(self, group: Group[Any], seqs: Sequence[int]) -> None:
        """``group`` is done with ``seqs``: acked, dead-lettered, dropped or expired."""
        assert isinstance(group, SqliteGroup)
        self.forget(group, seqs)
        self.advance(group)

    def forget(self, group: SqliteGroup, seqs: Sequence[int]) -> None:
        forget = group.events.pop
        for seq in seqs:
            forget(seq, None)
        group.owed -= len(seqs)
        group.acked_unflushed += seqs
        self.release += len(seqs)

    def advance(self, group: SqliteGroup) -> None:
        """Move the watermark over the unbroken run of settled events at its front."""
        outstanding = group.outstanding
        unsettled = group.events
        while outstanding and outstanding[0] not in unsettled:
            outstanding.popleft()
        group.committed = outstanding[0] - 1 if outstanding else group.cursor
        if group.committed != group.flushed or group.acked_unflushed:
            self.dirty.add(group)

    def retrying(self, group: Group[Any], seq: int, attempt: int) -> None:
        """A nack spent ``attempt``: written with the next flush, so a crash keeps the count."""
        assert isinstance(group, SqliteGroup)
        self.attempts.append((group.name, seq, attempt))
        self.dirty.add(group)

    def owned(self, group: Group[Any], member: Member, seqs: Sequence[int]) -> Sequence[int]:
        """Seqs ``member`` held from before a replay are not settled: only their demand comes back."""
        assert isinstance(group, SqliteGroup)
        ghosts = group.ghosts.get(member.name)
        if not ghosts:
            return seqs
        fresh = []
        for seq in seqs:
            if seq in ghosts:
                ghosts.discard(seq)
                member.demand += 1
            else:
                fresh.append(seq)
        return fresh

    def incarnation_ended(self, group: Group[Any], member: str) -> None:
        assert isinstance(group, SqliteGroup)
        group.ghosts.pop(member, None)

    def where(self, seq: int) -> dict[str, Any]:
        return {"offset": seq}

    def keep_dead_letter(self, group: Group[Any], letter: Doomed) -> None:
        """Kept in ``reactor_deadletters`` (written with the next flush, before any delivery)."""
        item = letter.item
        body = item.body if isinstance(item, Encoded) else codec.encode(item)
        self.dead_letters.append(
            (
                group.name,
                letter.seq,
                letter.attempts,
                letter.error.type,
                letter.error.message,
                letter.error.traceback,
                body,
                letter.consumer,
                self.clock.wall(),
            )
        )

    def _evict_oldest(self) -> None:
        excess = self.gate.over_capacity
        candidates: list[tuple[int, SqliteGroup]] = []
        for group in self.groups.values():
            queues = [group.shared, group.orphans, *(m.keyed for m in group.order)]
            candidates += [(seq, group) for queue in queues for seq in queue if seq in group.events]
        candidates.sort(key=lambda item: item[0])
        for seq, group in candidates[:excess]:
            item = group.events.get(seq)
            if item is None:
                continue
            self.counters.dropped += 1
            event = decoded(item)
            if event is not None:  # bytes that are no event are dropped all the same
                self.publish_system(
                    lifecycle.dropped(event, channel=self.channel, policy="drop_oldest")
                )
            group.forget(seq)
            self.forget(group, [seq])  # its queue entry is skipped lazily
        for group in self.groups.values():
            self.advance(group)

    # -- replay and retention ----------------------------------------------------------------

    def replay(self, replay: Replay) -> int:
        group = self.groups.get(replay.group)
        if group is None:
            raise UnknownGroupError(
                f"channel {self.channel!r} has no group {replay.group!r} "
                f"(groups: {names_or_none(self.groups)}); "
                "replay a group the topology declares on this channel"
            )
        position = self.position(replay.start, f"replay of group {group.name!r}")
        owed = count_routed(self.store, group, position, self.head)
        if owed:
            self.gate.hold(owed)  # before the release: never look idle
        # Whatever members hold now is theirs to finish; their acks only give demand back.
        for member in group.order:
            if member.in_flight:
                group.ghosts.setdefault(member.name, set()).update(member.in_flight)
                member.in_flight.clear()
            member.keyed.clear()
        self.release += group.owed
        group.owed = owed
        group.events.clear()
        group.outstanding.clear()
        group.shared.clear()
        group.orphans.clear()
        group.attempts.clear()
        group.preacked.clear()
        group.acked_unflushed.clear()
        group.committed = group.cursor = position
        group.delivered_hwm = group.flushed_hwm = group.recovered_hwm = position
        group.charge = False
        group.pending_max = 0
        self.store.rewind(group.name, position)
        group.flushed = position
        self.actor.dispatch(group)
        return position + 1

    def retain_message(self, message: Retain) -> int:
        deleted = retain(self, message.now)
        if message.timer:
            self._arm_timer()
        return deleted

    # -- writing -----------------------------------------------------------------------------

    def flush(self) -> None:
        """Write attempts, acks, watermarks and dead letters in one transaction."""
        if not (self.attempts or self.dirty or self.dead_letters):
            return
        attempts, self.attempts = self.attempts, []
        dead_letters, self.dead_letters = self.dead_letters, []
        dirty, self.dirty = self.dirty, set()
        pending_max: dict[str, int] = {}  # group -> highest seq given a row in reactor_pending
        for name, seq, _ in attempts:
            pending_max[name] = max(pending_max.get(name, 0), seq)
        acked: list[tuple[str, int]] = []
        cleared: list[tuple[str, int]] = []
        positions: list[tuple[str, int, int]] = []
        moved: list[SqliteGroup] = []
        for group in dirty:
            name = group.name
            done, group.acked_unflushed = group.acked_unflushed, []
            above = [seq for seq in done if seq > group.committed]
            if above:
                acked += [(name, seq) for seq in above]
                pending_max[name] = max(pending_max.get(name, 0), *above)
            highest = max(group.pending_max, pending_max.get(name, 0))
            if group.committed != group.flushed and highest > group.flushed:
                cleared.append((name, group.committed))
            if group.committed != group.flushed or group.delivered_hwm != group.flushed_hwm:
                positions.append((name, group.committed, group.delivered_hwm))
                moved.append(group)
        progress = Progress(attempts, acked, cleared, positions, dead_letters)
        if not (attempts or acked or cleared or positions or dead_letters):
            return
        self.store.save(progress)
        if dead_letters:
            with self.store.file.lock:
                self.stored_letters += len(dead_letters)
        for name, seq in pending_max.items():
            group = self.groups[name]
            group.pending_max = max(group.pending_max, seq)
        for group in moved:
            group.flushed = group.committed
            group.flushed_hwm = group.delivered_hwm


def _shared_event(others: list[dict[int, Event | Encoded]], seq: int, body: bytes) -> Event | None:
    """The event at ``seq``, from a group that holds it decoded, or decoded now.

    None if the bytes are not an event.
    """
    for held in others:
        event = held.get(seq)
        if isinstance(event, Event):
            return event
    try:
        return codec.decode(body)
    except DecodeError:
        return None
