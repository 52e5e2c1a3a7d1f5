"""The ``memory`` backend: a channel whose log lives in the channel actor's process.

Layout of the state (all owned by the channel actor's thread):

* ``entries``: seq -> event not yet settled by every group, in publish order;
* per group, a ``shared`` queue of unkeyed seqs any member may take, and per
  member a ``keyed`` queue: keyed events are partitioned to a member by a stable
  hash of the key, so one key is handled by one member, in order, while the
  membership is stable;
* per member, ``in_flight`` (seq -> attempt) and ``demand`` (credits left).

Queues stay sorted by seq, so a member's next batch is a merge of the heads of
its keyed queue and the group's shared queue. Evicted seqs are skipped lazily.
The state object survives a restart of the channel actor, like the mailbox.
"""

from __future__ import annotations

import logging
import zlib
from collections import deque
from collections.abc import Iterable
from heapq import merge
from typing import Any

from reactor.actors.address import Address
from reactor.actors.base import ActorContext, ReactorActor
from reactor.channels.backend import (
    ChannelConfig,
    ChannelServices,
    ChannelStats,
    GroupSpec,
    GroupStats,
)
from reactor.channels.gate import CapacityGate
from reactor.messages import lifecycle
from reactor.messages.control import Ack, Deliver, Join, Leave, Nack, Publish
from reactor.messages.event import Event
from reactor.messages.topics import TopicPattern

__all__ = ["MemoryBackend", "MemoryChannel"]

logger = logging.getLogger("reactor")


class _Entry:
    __slots__ = ("event", "inflight", "remaining")

    def __init__(self, event: Event, remaining: int) -> None:
        self.event = event
        self.remaining = remaining  # groups that have not settled it yet
        self.inflight = 0  # groups that hold it in a member right now


class _Member:
    __slots__ = ("address", "demand", "epoch", "in_flight", "keyed", "name")

    def __init__(self, name: str, address: Address, demand: int) -> None:
        self.name = name
        self.address = address
        self.demand = demand
        self.epoch = 1
        self.keyed: deque[int] = deque()
        self.in_flight: dict[int, int] = {}


class _Group:
    __slots__ = (
        "acked",
        "attempts",
        "dead_lettered",
        "delivered",
        "max_deliveries",
        "members",
        "nacked",
        "name",
        "order",
        "orphans",
        "patterns",
        "redelivered",
        "shared",
    )

    def __init__(self, spec: GroupSpec) -> None:
        self.name = spec.name
        self.patterns = tuple(TopicPattern.compile(p) for p in spec.patterns)
        self.max_deliveries = spec.max_deliveries
        self.members: dict[str, _Member] = {}
        self.order: list[_Member] = []  # members sorted by name: the partition ring
        self.shared: deque[int] = deque()
        self.orphans: deque[int] = deque()  # keyed seqs waiting for a first member
        self.attempts: dict[int, int] = {}  # seq -> deliveries so far, for requeued seqs
        self.delivered = 0
        self.acked = 0
        self.nacked = 0
        self.redelivered = 0
        self.dead_lettered = 0

    def matches(self, topic: str) -> bool:
        return any(pattern.matches(topic) for pattern in self.patterns)

    def backlog(self) -> int:
        members = list(self.order)
        return len(self.shared) + len(self.orphans) + sum(len(m.keyed) for m in members)

    def in_flight(self) -> int:
        return sum(len(m.in_flight) for m in list(self.order))


def _partition(key: str, ring: list[_Member]) -> _Member:
    return ring[zlib.crc32(key.encode()) % len(ring)]


def _insert_sorted(queue: deque[int], seq: int) -> None:
    if not queue or seq < queue[0]:
        queue.appendleft(seq)
        return
    for index, value in enumerate(queue):
        if seq < value:
            queue.insert(index, seq)
            return
    queue.append(seq)


class _MemoryLog:
    """The channel's state; survives restarts of the channel actor."""

    def __init__(self, config: ChannelConfig) -> None:
        self.entries: dict[int, _Entry] = {}
        self.next_seq = 1
        self.groups: dict[str, _Group] = {spec.name: _Group(spec) for spec in config.groups}
        self.routes: dict[str, tuple[_Group, ...]] = {}
        self.published = 0
        self.delivered = 0
        self.acked = 0
        self.dropped = 0
        self.dead_lettered = 0
        self.unrouted = 0


class MemoryChannel:
    """Handle of one in-memory channel: its gate, address, actor and statistics."""

    def __init__(self, config: ChannelConfig, services: ChannelServices) -> None:
        self.name = config.name
        self.config = config
        self.services = services
        self.gate = CapacityGate(config.name, config.capacity, config.overflow, services.on_idle)
        self.address = Address(f"channel:{config.name}")
        self.log = _MemoryLog(config)

    def start_actor(self, context: ActorContext) -> ReactorActor:
        return _MemoryChannelActor.spawn(context, self)

    def send(self, events: tuple[Event, ...]) -> None:
        self.address.tell(Publish(events))

    def stats(self) -> ChannelStats:
        log = self.log
        groups = tuple(
            GroupStats(
                name=g.name,
                patterns=tuple(p.pattern for p in g.patterns),
                members=len(g.order),
                backlog=g.backlog(),
                in_flight=g.in_flight(),
                delivered=g.delivered,
                acked=g.acked,
                nacked=g.nacked,
                redelivered=g.redelivered,
                dead_lettered=g.dead_lettered,
            )
            for g in list(log.groups.values())
        )
        return ChannelStats(
            name=self.name,
            backend="memory",
            capacity=self.gate.capacity,
            overflow=self.gate.overflow,
            unsettled=self.gate.used,
            peak_unsettled=self.gate.peak,
            published=log.published,
            delivered=log.delivered,
            acked=log.acked,
            dropped=log.dropped + self.gate.dropped,
            dead_lettered=log.dead_lettered,
            unrouted=log.unrouted,
            backlog=sum(g.backlog for g in groups),
            in_flight=sum(g.in_flight for g in groups),
            groups=groups,
        )

    def close(self) -> None:
        """Nothing to release: the log is garbage once the handle is."""


class _MemoryChannelActor(ReactorActor):
    def __init__(self, context: ActorContext, channel: MemoryChannel) -> None:
        super().__init__(context)
        self.channel = channel
        self.log = channel.log
        self.gate = channel.gate
        self.max_batch = channel.config.max_batch

    def on_receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is Publish:
            self._publish(message.events)
        elif kind is Ack:
            self._ack(message)
        elif kind is Nack:
            self._nack(message)
        elif kind is Join:
            return self._join(message)
        elif kind is Leave:
            self._leave(message)
        else:
            return super().on_receive(message)
        return None

    # -- publish -------------------------------------------------------------------

    def _routes(self, topic: str) -> tuple[_Group, ...]:
        groups = self.log.routes.get(topic)
        if groups is None:
            groups = tuple(g for g in self.log.groups.values() if g.matches(topic))
            self.log.routes[topic] = groups
        return groups

    def _publish(self, events: Iterable[Event]) -> None:
        log = self.log
        entries = log.entries
        routes = log.routes
        touched: set[_Group] = set()
        unrouted = 0
        for event in events:
            log.published += 1
            groups = routes.get(event.topic)
            if groups is None:
                groups = self._routes(event.topic)
            if not groups:
                unrouted += 1
                continue
            seq = log.next_seq
            log.next_seq = seq + 1
            entries[seq] = _Entry(event, len(groups))
            key = event.key
            for group in groups:
                if key is None:
                    group.shared.append(seq)
                elif group.order:
                    _partition(key, group.order).keyed.append(seq)
                else:
                    group.orphans.append(seq)
                touched.add(group)
        if unrouted:
            # Nobody subscribes to these topics: they are settled on arrival, as on a broker.
            log.unrouted += unrouted
            self.gate.release(unrouted)
        if self.gate.overflow == "drop_oldest" and self.gate.over_capacity:
            # Only drop_oldest evicts; other policies go over capacity only by overdraft.
            self._evict_oldest()
        for group in touched:
            self._dispatch(group)

    def _evict_oldest(self) -> None:
        excess = self.gate.over_capacity
        victims = []
        for seq, entry in self.log.entries.items():
            if entry.inflight == 0:
                victims.append(seq)
                if len(victims) >= excess:
                    break
        for seq in victims:
            entry = self.log.entries.pop(seq)
            for group in self.log.groups.values():
                group.attempts.pop(seq, None)
            self.log.dropped += 1
            self.channel.services.publish_system(
                lifecycle.dropped(entry.event, channel=self.channel.name, policy="drop_oldest")
            )
        self.gate.release(len(victims))

    # -- delivery ------------------------------------------------------------------

    def _dispatch(self, group: _Group) -> None:
        for member in group.order:
            if member.demand > 0 and (member.keyed or group.shared):
                self._fill(group, member)

    def _fill(self, group: _Group, member: _Member) -> None:
        limit = min(member.demand, self.max_batch)
        entries = self.log.entries
        attempts = group.attempts
        keyed = member.keyed
        shared = group.shared
        in_flight = member.in_flight
        seqs: list[int] = []
        events: list[Event] = []
        tries: list[int] = []
        while len(seqs) < limit:
            if keyed and (not shared or keyed[0] < shared[0]):
                seq = keyed.popleft()
            elif shared:
                seq = shared.popleft()
            else:
                break
            entry = entries.get(seq)
            if entry is None:
                continue  # evicted while queued
            attempt = attempts.pop(seq, 0) + 1 if attempts else 1
            in_flight[seq] = attempt
            entry.inflight += 1
            seqs.append(seq)
            events.append(entry.event)
            tries.append(attempt)
        if seqs:
            count = len(seqs)
            member.demand -= count
            group.delivered += count
            self.log.delivered += count
            member.address.tell(
                Deliver(
                    self.channel.name,
                    group.name,
                    member.epoch,
                    tuple(seqs),
                    tuple(events),
                    tuple(tries),
                )
            )

    # -- settlement ----------------------------------------------------------------

    def _member(
        self, group_name: str, member_name: str, epoch: int
    ) -> tuple[_Group, _Member] | None:
        group = self.log.groups.get(group_name)
        if group is None:
            return None
        member = group.members.get(member_name)
        if member is None or member.epoch != epoch:
            return None  # a fenced-off incarnation: its word no longer counts
        return group, member

    def _ack(self, ack: Ack) -> None:
        found = self._member(ack.group, ack.member, ack.epoch)
        if found is None:
            return
        group, member = found
        entries = self.log.entries
        in_flight = member.in_flight
        settled = 0
        freed = 0
        for seq in ack.seqs:
            if in_flight.pop(seq, None) is None:
                continue
            settled += 1
            entry = entries.get(seq)
            if entry is None:
                continue
            entry.inflight -= 1
            entry.remaining -= 1
            if entry.remaining == 0:
                del entries[seq]
                freed += 1
        member.demand += settled
        group.acked += settled
        self.log.acked += settled
        if freed:
            self.gate.release(freed)
        self._dispatch(group)

    def _nack(self, nack: Nack) -> None:
        found = self._member(nack.group, nack.member, nack.epoch)
        if found is None:
            return
        group, member = found
        attempt = member.in_flight.pop(nack.seq, None)
        if attempt is None:
            return
        member.demand += 1
        group.nacked += 1
        entry = self.log.entries.get(nack.seq)
        if entry is None:
            self._dispatch(group)
            return
        entry.inflight -= 1
        if attempt >= group.max_deliveries:
            group.dead_lettered += 1
            self.log.dead_lettered += 1
            # The dead letter is published before the original is settled: if anything
            # goes wrong in between, a duplicate is possible but a loss is not.
            self.channel.services.publish_system(
                lifecycle.dead_letter(
                    entry.event,
                    nack.error,
                    attempts=attempt,
                    consumer=nack.consumer,
                    group=group.name,
                    channel=self.channel.name,
                )
            )
            entry.remaining -= 1
            if entry.remaining == 0:
                del self.log.entries[nack.seq]
                self.gate.release(1)
        else:
            group.attempts[nack.seq] = attempt
            group.redelivered += 1
            self._requeue(group, member, [nack.seq])
        self._dispatch(group)

    def _requeue(self, group: _Group, member: _Member | None, seqs: Iterable[int]) -> None:
        """Put seqs back at the front of the queues they came from, in order."""
        entries = self.log.entries
        for seq in seqs:
            entry = entries.get(seq)
            if entry is None:
                continue
            key = entry.event.key
            if key is None:
                _insert_sorted(group.shared, seq)
            elif group.order:
                _insert_sorted(_partition(key, group.order).keyed, seq)
            else:
                _insert_sorted(group.orphans, seq)

    def _release_in_flight(self, group: _Group, member: _Member) -> None:
        """Hand back everything a member holds, unhandled: its attempts are not spent."""
        held = sorted(member.in_flight.items())
        member.in_flight.clear()
        entries = self.log.entries
        for seq, attempt in held:
            entry = entries.get(seq)
            if entry is None:
                continue
            entry.inflight -= 1
            if attempt > 1:
                group.attempts[seq] = attempt - 1
        self._requeue(group, member, (seq for seq, _ in held))

    # -- membership ----------------------------------------------------------------

    def _join(self, join: Join) -> int:
        group = self.log.groups.get(join.group)
        if group is None:
            raise LookupError(
                f"channel {self.channel.name!r} has no group {join.group!r}; declare the "
                "consumer in the topology so the channel knows its subscription"
            )
        member = group.members.get(join.member)
        if member is not None:
            # A new incarnation of the same member: take back what the old one held,
            # and bump the epoch so the old one's late acks are ignored.
            self._release_in_flight(group, member)
            member.epoch += 1
            member.address = join.address
            member.demand = join.demand
        else:
            member = _Member(join.member, join.address, join.demand)
            group.members[join.member] = member
            self._repartition(group)
        self._dispatch(group)
        return member.epoch

    def _leave(self, leave: Leave) -> None:
        group = self.log.groups.get(leave.group)
        member = group.members.get(leave.member) if group is not None else None
        if group is None or member is None:
            return
        if leave.epoch and leave.epoch != member.epoch:
            return  # epoch 0: the supervisor removing the member, whatever its incarnation
        self._release_in_flight(group, member)
        del group.members[member.name]
        self._repartition(group)
        self._dispatch(group)

    def _repartition(self, group: _Group) -> None:
        """Spread keyed seqs over the current members (membership changed)."""
        old_queues = [m.keyed for m in group.order]
        group.order = sorted(group.members.values(), key=lambda m: m.name)
        pending = list(merge(group.orphans, *old_queues))
        for member in group.order:
            member.keyed = deque()
        group.orphans = deque()
        entries = self.log.entries
        for seq in pending:
            entry = entries.get(seq)
            if entry is None:
                continue
            key = entry.event.key
            if key is None:
                _insert_sorted(group.shared, seq)
            elif group.order:
                _partition(key, group.order).keyed.append(seq)
            else:
                group.orphans.append(seq)


class MemoryBackend:
    """Opens ``memory`` channels."""

    scheme = "memory"

    def open(self, config: ChannelConfig, services: ChannelServices) -> MemoryChannel:
        return MemoryChannel(config, services)
