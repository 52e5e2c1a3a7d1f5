"""The in-process side of consumer groups, shared by every channel backend.

A channel actor keeps, per group it serves:

* a ``shared`` queue of unkeyed seqs any member may take, and per member a
  ``keyed`` queue: keyed events are partitioned to a member by a stable hash of
  the key (crc32 over the members sorted by name), so one key is handled by one
  member, in order, while the membership is stable; keyed seqs that arrive while
  the group has no member wait in ``orphans``;
* per member, ``in_flight`` (seq -> attempt) and ``demand`` (credits left), and
  an ``epoch`` that fences off the acks of an earlier incarnation.

Queues stay sorted by seq (but for unkeyed retries that fell due, which go to
the front of the shared queue), so a member's next batch is a merge of the heads of
its keyed queue and the group's shared queue. Where the events themselves live
is the backend's business: a :class:`Group` reads them from ``events``, a dict
``seq -> Event`` the backend owns and keeps up to date (the memory backend shares
one table among its groups; sqlite and redis keep one per group). A backend that
reads events back from storage may hold them as
:class:`~reactor.messages.control.Encoded` instead, for the consumer to decode.
A seq missing from it (evicted, expired, settled elsewhere) is skipped where it
is queued.

Nothing here calls back into the backend: each operation does its bookkeeping
and returns what the backend has to act on (a :class:`Deliver` to send, the seqs
an ack settled, the attempt a nack spent), so each backend adds only what is
truly its own: storage, settlement, dead letters.

One concept, so one module despite its length: consumer-group bookkeeping (the
queues of a :class:`Group`, the member messages applied to a channel's groups, and
the counters that feed its statistics).

Thread-safety: everything here belongs to the channel actor's thread, except
:meth:`Group.queued`, :meth:`Group.in_flight` and :meth:`Group.stats`, which
``stats()`` may call from any thread (they read a snapshot of the members).
"""

from __future__ import annotations

import heapq
import zlib
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from heapq import merge
from itertools import repeat
from operator import attrgetter, itemgetter
from typing import Any, Generic, TypeVar

from reactor.actors.address import Address
from reactor.channels.backend import ChannelMetrics, GroupMetrics, GroupSpec
from reactor.channels.gate import CapacityGate
from reactor.errors import UnknownGroupError
from reactor.messages.control import Ack, Deliver, Encoded, ErrorInfo, Join, Leave, Nack, Release
from reactor.messages.event import Event
from reactor.messages.topics import TopicPattern

__all__ = [
    "Counters",
    "Group",
    "Member",
    "ack",
    "channel_stats",
    "find_member",
    "give_back",
    "join",
    "leave",
    "nack",
]

G = TypeVar("G", bound="Group[Any]")
# What a group holds per seq: the event, or (sqlite) its stored form.
Held = TypeVar("Held", Event, Event | Encoded)
_by_name = attrgetter("name")
_has_keyed = attrgetter("keyed")


class Member:
    """One member of a group, as the channel sees it."""

    __slots__ = ("address", "demand", "epoch", "in_flight", "keyed", "nacks", "name")

    def __init__(self, name: str, address: Address, demand: int) -> None:
        self.name = name
        self.address = address
        self.demand = demand
        self.epoch = 1
        # Nacks taken from this incarnation; every batch carries the count, so the
        # member can tell a batch made before its nack held a key from one made after.
        self.nacks = 0
        self.keyed: deque[int] = deque()
        self.in_flight: dict[int, int] = {}  # seq -> attempt


class Group(Generic[Held]):
    """One declared group: its members, queues, attempts and counters.

    Backends that keep more per group subclass it.

    Args:
        spec: the group as the topology declares it.
        channel: the channel's name, for the batches it builds.
        events: where the group finds the event of a seq it holds (see the module).
    """

    __slots__ = (
        "_matched",
        "acked",
        "attempts",
        "channel",
        "dead_lettered",
        "delayed",
        "delivered",
        "errors",
        "events",
        "held_keys",
        "max_deliveries",
        "members",
        "moving",
        "nacked",
        "name",
        "order",
        "orphans",
        "patterns",
        "redelivered",
        "rotation",
        "shared",
    )

    def __init__(self, spec: GroupSpec, channel: str, events: dict[int, Held]) -> None:
        self.name = spec.name
        self.channel = channel
        self.patterns = tuple(TopicPattern.compile(p) for p in spec.patterns)
        self.max_deliveries = spec.max_deliveries
        self.events: dict[int, Held] = events
        self.members: dict[str, Member] = {}
        self.order: list[Member] = []  # members sorted by name: the partition ring
        self.rotation = 0  # who is served first next time (see turn())
        self._matched: dict[str, bool] = {}  # topic -> matches, for matches()
        self.shared: deque[int] = deque()
        self.orphans: deque[int] = deque()  # keyed seqs waiting for a first member
        self.attempts: dict[int, int] = {}  # seq -> deliveries already spent, when not fresh
        # Failed events waiting out their retry delay: a heap of (due, seq, key). While a
        # keyed one waits, later events of its key wait too (``held_keys``: key -> how
        # many of its events are delayed), so per-key order holds across retries.
        self.delayed: list[tuple[float, int, str | None]] = []
        self.held_keys: dict[str, int] = {}
        # Keys that changed hands while events of theirs were in flight: key -> (seq,
        # member) of those events. Their new owner waits until they are settled, so a
        # change of membership (a pool scaling, a restart) never reorders a key.
        self.moving: dict[str, list[tuple[int, Member]]] = {}
        self.errors: dict[int, ErrorInfo] = {}  # seq -> why its last attempt failed
        self.delivered = 0
        self.acked = 0
        self.nacked = 0
        self.redelivered = 0
        self.dead_lettered = 0

    def turn(self) -> Iterable[Member]:
        """The members that may take something, in the order to serve them this time.

        The first place rotates: events that arrive one at a time (a consumer that
        keeps up) must spread over the members, not all land on the first one
        while it still has demand. With nothing shared queued, only members with
        keyed seqs can take anything, and the others are skipped in C: a group of
        10,000 members is served after each of their 10,000 joins.
        """
        order = self.order
        if len(order) > 1:
            self.rotation = start = (self.rotation + 1) % len(order)
            order = order[start:] + order[:start]
        return order if self.shared else filter(_has_keyed, order)

    def matches(self, topic: str) -> bool:
        """Whether ``topic`` matches one of the group's patterns (cached per topic)."""
        matched = self._matched.get(topic)
        if matched is None:
            if len(self._matched) >= _MATCH_CACHE:
                self._matched.clear()  # topics come from code; a flood of new ones starts over
            matched = self._matched[topic] = any(p.matches(topic) for p in self.patterns)
        return matched

    def queued(self) -> int:
        """Events waiting for a member, including failed ones waiting out their retry delay."""
        return (
            len(self.shared)
            + len(self.orphans)
            + len(self.delayed)
            + sum(len(m.keyed) for m in list(self.order))
        )

    def in_flight(self) -> int:
        return sum(len(m.in_flight) for m in list(self.order))

    def stats(self, backlog: int, expired: int = 0) -> GroupMetrics:
        return GroupMetrics(
            name=self.name,
            patterns=tuple(p.pattern for p in self.patterns),
            members=len(self.order),
            backlog=backlog,
            in_flight=self.in_flight(),
            delivered=self.delivered,
            acked=self.acked,
            nacked=self.nacked,
            redelivered=self.redelivered,
            dead_lettered=self.dead_lettered,
            expired=expired,
        )

    # -- queues --------------------------------------------------------------------

    def place(self, seq: int, key: str | None) -> None:
        """Queue a seq newer than every seq queued (arrivals come in order)."""
        if key is None:
            self.shared.append(seq)
        elif self.order:
            self.order[zlib.crc32(key.encode()) % len(self.order)].keyed.append(seq)
        else:
            self.orphans.append(seq)

    def requeue(self, seq: int, key: str | None) -> None:
        """Queue a seq in its place by order, wherever it falls."""
        if key is None:
            _insert_sorted(self.shared, seq)
        elif self.order:
            _insert_sorted(self.order[zlib.crc32(key.encode()) % len(self.order)].keyed, seq)
        else:
            _insert_sorted(self.orphans, seq)

    def release(self, member: Member) -> None:
        """Hand back everything a member holds, unhandled: its attempts are not spent."""
        self.give_back(member, sorted(member.in_flight))

    def give_back(self, member: Member, seqs: Iterable[int]) -> int:
        """Queue again seqs ``member`` holds but never handled; returns how many it held.

        Their attempts are not spent, and they keep their place in order.
        """
        in_flight = member.in_flight
        events = self.events
        count = 0
        for seq in seqs:
            attempt = in_flight.pop(seq, None)
            if attempt is None:
                continue
            count += 1
            event = events.get(seq)
            if event is None:
                continue
            if attempt > 1:
                self.attempts[seq] = attempt - 1
            self.requeue(seq, event.key)
        member.demand += count
        return count

    def repartition(self) -> None:
        """Spread keyed seqs over the current members (membership changed).

        A key whose events are in flight at a member when it changes hands is
        pinned (``moving``) until they are settled: its new owner gets its next
        events only then.
        """
        events = self.events
        for member in self.order:
            for seq in member.in_flight:
                event = events.get(seq)
                if event is not None and event.key is not None:
                    self.moving.setdefault(event.key, []).append((seq, member))
        old_queues = [m.keyed for m in self.order]
        # C-level key and test: a group of 10,000 members is joined 10,000 times.
        self.order = sorted(self.members.values(), key=_by_name)
        if not self.orphans and not any(map(len, old_queues)):
            return  # nothing keyed is queued: only the order changed
        pending = list(merge(self.orphans, *old_queues))
        for member in self.order:
            member.keyed = deque()
        self.orphans = deque()
        for seq in pending:
            event = events.get(seq)
            if event is not None:
                self.place(seq, event.key)  # in order: appending keeps the queues sorted

    # -- delivery ------------------------------------------------------------------

    def fill(
        self, member: Member, limit: int, abandoned: list[tuple[int, int]] | None = None
    ) -> Deliver | None:
        """Take up to ``limit`` (and the member's demand) queued seqs for ``member``.

        Args:
            member: who gets the batch; its demand and in-flight table are updated.
            limit: the most events in one batch.
            abandoned: if given, a seq whose attempts are all spent already is not
                delivered but added here as ``(seq, attempts)``, to be dead-lettered
                by the caller (a durable log learns of attempts a crash spent).

        Returns:
            The batch to send to ``member.address``, or None if nothing was queued.
        """
        limit = min(member.demand, limit)
        events = self.events
        attempts = self.attempts
        keyed = member.keyed
        shared = self.shared
        if not keyed and shared and (abandoned is None or not attempts):
            deliver = self._fill_fresh(member, limit)
            if deliver is not None:
                return deliver
        max_deliveries = self.max_deliveries
        in_flight = member.in_flight
        held_keys = self.held_keys
        moving = self.moving
        waiting: list[int] = []  # keyed seqs behind a delayed event of their key
        seqs: list[int] = []
        batch: list[Held] = []
        tries: list[int] = []
        while len(seqs) < limit:
            if keyed and (not shared or keyed[0] < shared[0]):
                seq = keyed.popleft()
                if held_keys or moving:
                    event = events.get(seq)
                    if event is not None and (
                        event.key in held_keys or (moving and self._pinned(event.key, member))
                    ):
                        waiting.append(seq)
                        continue
            elif shared:
                seq = shared.popleft()
            else:
                break
            event = events.get(seq)
            if event is None:
                continue  # gone while queued
            if attempts:
                spent = attempts.pop(seq, 0)
                if abandoned is not None and spent >= max_deliveries:
                    abandoned.append((seq, spent))
                    continue
                attempt = spent + 1
            else:
                attempt = 1
            in_flight[seq] = attempt
            seqs.append(seq)
            batch.append(event)
            tries.append(attempt)
        if waiting:
            keyed.extendleft(reversed(waiting))
        if not seqs:
            return None
        count = len(seqs)
        member.demand -= count
        self.delivered += count
        errors = self.errors
        failures = {seq: errors.pop(seq) for seq in seqs if seq in errors} if errors else None
        return Deliver(
            self.channel,
            self.name,
            member.epoch,
            tuple(seqs),
            tuple(batch),
            tuple(tries),
            failures or None,
            member.nacks,
        )

    def _pinned(self, key: str | None, member: Member) -> bool:
        """Whether ``key`` still has events in flight at a member other than ``member``."""
        if key is None:
            return False
        pins = self.moving.get(key)
        if pins is None:
            return False
        # Checked afresh: whatever settled them (ack, nack, a leave) settled the pin.
        pins = [(seq, holder) for seq, holder in pins if seq in holder.in_flight]
        if not pins:
            del self.moving[key]
            return False
        self.moving[key] = pins
        return any(holder is not member for _, holder in pins)

    def _fill_fresh(self, member: Member, limit: int) -> Deliver | None:
        """:meth:`fill` when only the shared queue has seqs (and none may be abandoned).

        The usual case under load, done a batch at a time: C loops instead of one
        round of the general loop per event. None if some seq was gone while queued:
        the seqs are queued again, for the general loop to skip what is gone.
        """
        shared = self.shared
        events = self.events
        popleft = shared.popleft
        seqs = [popleft() for _ in range(min(limit, len(shared)))]
        try:
            batch: tuple[Held, ...] = (
                itemgetter(*seqs)(events) if len(seqs) > 1 else (events[seqs[0]],)
            )
        except KeyError:
            shared.extendleft(reversed(seqs))
            return None
        count = len(seqs)
        attempts = self.attempts
        failures: dict[int, ErrorInfo] | None = None
        if attempts:  # retries among them (poison events, most often): their counts go on
            tries = tuple([attempts.pop(seq, 0) + 1 for seq in seqs])
            member.in_flight.update(zip(seqs, tries, strict=True))
            errors = self.errors
            if errors:
                failures = {seq: errors.pop(seq) for seq in seqs if seq in errors} or None
        else:
            tries = (1,) * count
            member.in_flight.update(dict.fromkeys(seqs, 1))
        member.demand -= count
        self.delivered += count
        return Deliver(
            self.channel,
            self.name,
            member.epoch,
            tuple(seqs),
            batch,
            tries,
            failures,
            member.nacks,
        )

    # -- settlement ----------------------------------------------------------------

    def ack(self, member: Member, seqs: Sequence[int]) -> Sequence[int]:
        """Take back the acked seqs ``member`` holds; returns them, for the caller to settle."""
        in_flight = member.in_flight
        held = len(in_flight)
        # One C loop; the usual ack names only seqs the member holds, and is returned as is.
        attempts = list(map(in_flight.pop, seqs, repeat(None)))
        count = held - len(in_flight)
        settled = (
            seqs
            if count == len(seqs)
            else [seq for seq, attempt in zip(seqs, attempts, strict=True) if attempt is not None]
        )
        member.demand += count
        self.acked += count
        return settled

    def nack(
        self,
        member: Member,
        seq: int,
        *,
        final: bool = False,
        due: float | None = None,
        error: ErrorInfo | None = None,
    ) -> tuple[int, Held | None]:
        """Take back a nacked seq, and queue it again if it has attempts left.

        Args:
            member: who nacked it.
            seq: what it nacked.
            final: no retry can succeed (see :class:`~reactor.messages.control.Nack`).
            due: when the retry may be delivered (clock time); None: at once. Until
                then later events of its key wait behind it (see :meth:`release_due`).
            error: why the attempt failed, handed to the handler with the retry.

        Returns:
            ``(attempt, event)``: the attempt the nack ends (0 if ``member`` did not
            hold ``seq``: nothing was done) and the event (None if the group no
            longer has it). If ``final`` or ``attempt >= max_deliveries`` the event
            was not queued again: the caller dead-letters and settles it.
        """
        attempt = member.in_flight.pop(seq, None)
        if attempt is None:
            return 0, None
        member.demand += 1
        member.nacks += 1
        self.nacked += 1
        event = self.events.get(seq)
        if event is not None and not final and attempt < self.max_deliveries:
            self.attempts[seq] = attempt
            self.redelivered += 1
            if error is not None:
                self.errors[seq] = error
            key = event.key
            if due is None:
                self.requeue(seq, key)
            else:
                heapq.heappush(self.delayed, (due, seq, key))
                if key is not None:
                    self.held_keys[key] = self.held_keys.get(key, 0) + 1
        return attempt, event

    def next_due(self) -> float | None:
        """When the earliest delayed retry falls due (clock time); None if none waits."""
        return self.delayed[0][0] if self.delayed else None

    def release_due(self, now: float) -> bool:
        """Queue every delayed retry due by ``now`` in its place; True if any was."""
        delayed = self.delayed
        released = False
        while delayed and delayed[0][0] <= now:
            _, seq, key = heapq.heappop(delayed)
            if key is not None:
                left = self.held_keys[key] - 1
                if left:
                    self.held_keys[key] = left
                else:
                    del self.held_keys[key]
            if seq in self.events:
                if key is None:
                    # It has waited its delay: first in line. (A sorted insert would scan
                    # the whole shared queue, once per retry; unkeyed events have no order.)
                    self.shared.appendleft(seq)
                else:
                    self.requeue(seq, key)  # in its place: its key's later events wait for it
                released = True
        return released

    def forget(self, seq: int) -> None:
        """Drop what the group remembers of a seq gone from the channel (evicted, expired)."""
        self.attempts.pop(seq, None)
        self.errors.pop(seq, None)


_MATCH_CACHE = 4096


def _insert_sorted(queue: deque[int], seq: int) -> None:
    if not queue or seq > queue[-1]:
        queue.append(seq)  # the usual case: entries arrive in order (redis reads)
        return
    if seq < queue[0]:
        queue.appendleft(seq)
        return
    for index, value in enumerate(queue):
        if seq < value:
            queue.insert(index, seq)
            return
    queue.append(seq)


# -- membership ----------------------------------------------------------------------


def find_member(
    groups: Mapping[str, G], group_name: str, member_name: str, epoch: int
) -> tuple[G, Member] | None:
    """The group and member an ack or nack comes from, if that incarnation still counts."""
    group = groups.get(group_name)
    if group is None:
        return None
    member = group.members.get(member_name)
    if member is None or member.epoch != epoch:
        return None  # a fenced-off incarnation: its word no longer counts
    return group, member


def ack(groups: Mapping[str, G], message: Ack) -> tuple[G, Sequence[int]] | None:
    """:meth:`Group.ack` for the member that sent ``message``; None if its word does not count."""
    found = find_member(groups, message.group, message.member, message.epoch)
    if found is None:
        return None
    group, member = found
    return group, group.ack(member, message.seqs)


def nack(groups: Mapping[str, G], message: Nack, now: float) -> tuple[G, int, Any] | None:
    """:meth:`Group.nack` for the member that sent ``message``, as ``(group, attempt, event)``.

    A retry the message delays falls due at ``now + message.delay`` (clock time).

    ``event`` is whatever the group holds for the seq (typed ``Any``: Python's types
    cannot say "the held type of ``G``").

    None if the message does not count (a fenced-off incarnation, or a seq its
    member does not hold).
    """
    found = find_member(groups, message.group, message.member, message.epoch)
    if found is None:
        return None
    group, member = found
    attempt, event = group.nack(
        member,
        message.seq,
        final=message.final,
        due=now + message.delay if message.delay > 0 else None,
        error=message.error,
    )
    if not attempt:
        return None
    return group, attempt, event


def give_back(groups: Mapping[str, G], message: Release) -> G | None:
    """:meth:`Group.give_back` for the member that sent ``message``; None if it does not count."""
    found = find_member(groups, message.group, message.member, message.epoch)
    if found is None:
        return None
    group, member = found
    return group if group.give_back(member, message.seqs) else None


def join(groups: Mapping[str, G], message: Join, channel: str) -> tuple[G, Member]:
    """Add a member, or start a new incarnation of one; the caller then dispatches.

    Raises:
        UnknownGroupError: the channel has no such group.
    """
    group = groups.get(message.group)
    if group is None:
        raise UnknownGroupError(
            f"channel {channel!r} has no group {message.group!r}; declare the "
            "consumer in the topology so the channel knows its subscription"
        )
    member = group.members.get(message.member)
    if member is not None:
        # A new incarnation of the same member: take back what the old one held,
        # and bump the epoch so the old one's late acks are ignored.
        group.release(member)
        member.epoch += 1
        member.nacks = 0
        member.address = message.address
        member.demand = message.demand
    else:
        member = Member(message.member, message.address, message.demand)
        group.members[message.member] = member
        group.repartition()
    return group, member


def leave(groups: Mapping[str, G], message: Leave) -> G | None:
    """Remove a member, handing back what it holds; None if the message does not count.

    Epoch 0 is the supervisor removing the member, whatever its incarnation.
    """
    group = groups.get(message.group)
    member = group.members.get(message.member) if group is not None else None
    if group is None or member is None:
        return None
    if message.epoch and message.epoch != member.epoch:
        return None
    group.release(member)
    del group.members[member.name]
    group.repartition()
    return group


# -- statistics ----------------------------------------------------------------------


class Counters:
    """A channel's running totals, kept by its actor (and, for some, its publishers)."""

    def __init__(self) -> None:
        self.published = 0
        self.delivered = 0
        self.acked = 0
        self.dropped = 0
        self.dead_lettered = 0
        self.unrouted = 0
        self.expired = 0


def channel_stats(
    name: str,
    backend: str,
    gate: CapacityGate,
    counters: Counters,
    groups: tuple[GroupMetrics, ...],
) -> ChannelMetrics:
    """A channel's :class:`ChannelMetrics`, from its gate, totals and group statistics."""
    return ChannelMetrics(
        name=name,
        backend=backend,
        capacity=gate.capacity,
        overflow=gate.overflow,
        unsettled=gate.used,
        peak_unsettled=gate.peak,
        published=counters.published,
        delivered=counters.delivered,
        acked=counters.acked,
        dropped=counters.dropped + gate.dropped,
        dead_lettered=counters.dead_lettered,
        unrouted=counters.unrouted,
        backlog=sum(g.backlog for g in groups),
        in_flight=sum(g.in_flight for g in groups),
        groups=groups,
        expired=counters.expired,
    )
