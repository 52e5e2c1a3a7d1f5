"""The ``memory`` backend: a channel whose log lives in the channel actor's process.

The events not yet settled by every group live in ``events`` (seq -> event, in
publish order), shared by the groups, with ``remaining`` (seq -> groups that have
not settled it yet). Queues, members, demand and attempts are the common group
machinery of :mod:`reactor.channels.groups`; what is the memory backend's own is
this table and the ``drop_oldest`` eviction from it (evicted seqs are skipped
lazily where they are queued). The state object survives a restart of the
channel actor, like the mailbox.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from reactor.actors.address import Address
from reactor.actors.base import ActorContext, ReactorActor
from reactor.channels import groups as membership
from reactor.channels.backend import ChannelConfig, ChannelServices, ChannelStats
from reactor.channels.gate import CapacityGate
from reactor.channels.groups import Counters, Group, Member, channel_stats
from reactor.messages import lifecycle
from reactor.messages.control import Ack, Join, Leave, Nack, Publish
from reactor.messages.event import Event

__all__ = ["MemoryBackend", "MemoryChannel"]

logger = logging.getLogger("reactor")

_ROUTES_CACHE = 4096


class _MemoryLog(Counters):
    """The channel's state; survives restarts of the channel actor."""

    def __init__(self, config: ChannelConfig) -> None:
        super().__init__()
        self.events: dict[int, Event] = {}
        self.remaining: dict[int, int] = {}  # seq -> groups that have not settled it yet
        self.next_seq = 1
        self.groups: dict[str, Group[Event]] = {
            spec.name: Group(spec, config.name, self.events) for spec in config.groups
        }
        self.routes: dict[str, tuple[Group[Event], ...]] = {}


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
        groups = tuple(g.stats(backlog=g.queued()) for g in list(self.log.groups.values()))
        return channel_stats(self.name, "memory", self.gate, self.log, groups)

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

    def _routes(self, topic: str) -> tuple[Group[Event], ...]:
        routes = self.log.routes
        groups = routes.get(topic)
        if groups is None:
            if len(routes) >= _ROUTES_CACHE:
                routes.clear()  # topics come from code; a flood of distinct ones starts over
            groups = routes[topic] = tuple(g for g in self.log.groups.values() if g.matches(topic))
        return groups

    def _publish(self, events: Iterable[Event]) -> None:
        log = self.log
        table = log.events
        remaining = log.remaining
        routes = log.routes
        touched: set[Group[Event]] = set()
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
            table[seq] = event
            remaining[seq] = len(groups)
            key = event.key
            for group in groups:
                if key is None:
                    group.shared.append(seq)
                else:
                    group.place(seq, key)
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
        """Drop the oldest events no member holds, down to capacity."""
        log = self.log
        excess = self.gate.over_capacity
        busy = {seq for group in log.groups.values() for m in group.order for seq in m.in_flight}
        victims = []
        for seq in log.events:
            if seq not in busy:
                victims.append(seq)
                if len(victims) >= excess:
                    break
        for seq in victims:
            event = log.events.pop(seq)
            del log.remaining[seq]
            for group in log.groups.values():
                group.attempts.pop(seq, None)
            log.dropped += 1
            self.channel.services.publish_system(
                lifecycle.dropped(event, channel=self.channel.name, policy="drop_oldest")
            )
        self.gate.release(len(victims))

    # -- delivery ------------------------------------------------------------------

    def _dispatch(self, group: Group[Event]) -> None:
        for member in group.turn():
            if member.demand > 0 and (member.keyed or group.shared):
                self._fill(group, member)

    def _fill(self, group: Group[Event], member: Member) -> None:
        deliver = group.fill(member, self.max_batch)
        if deliver is not None:
            self.log.delivered += len(deliver.seqs)
            member.address.tell(deliver)

    # -- settlement ----------------------------------------------------------------

    def _settle(self, seqs: Iterable[int]) -> None:
        """One group is done with ``seqs``; free those no group still needs."""
        table = self.log.events
        remaining = self.log.remaining
        freed = 0
        for seq in seqs:
            left = remaining.get(seq)
            if left is None:
                continue
            if left > 1:
                remaining[seq] = left - 1
            else:
                del remaining[seq]
                del table[seq]
                freed += 1
        if freed:
            self.gate.release(freed)

    def _ack(self, ack: Ack) -> None:
        acked = membership.ack(self.log.groups, ack)
        if acked is None:
            return
        group, settled = acked
        self.log.acked += len(settled)
        self._settle(settled)
        self._dispatch(group)

    def _nack(self, nack: Nack) -> None:
        nacked = membership.nack(self.log.groups, nack)
        if nacked is None:
            return
        group, attempt, event = nacked
        if event is not None and (nack.final or attempt >= group.max_deliveries):
            group.dead_lettered += 1
            self.log.dead_lettered += 1
            # The dead letter is published before the original is settled: if anything
            # goes wrong in between, a duplicate is possible but a loss is not.
            self.channel.services.publish_system(
                lifecycle.dead_letter(
                    event,
                    nack.error,
                    attempts=attempt,
                    consumer=nack.consumer,
                    group=group.name,
                    channel=self.channel.name,
                )
            )
            self._settle((nack.seq,))
        self._dispatch(group)

    # -- membership ----------------------------------------------------------------

    def _join(self, join: Join) -> int:
        group, member = membership.join(self.log.groups, join, self.channel.name)
        self._dispatch(group)
        return member.epoch

    def _leave(self, leave: Leave) -> None:
        group = membership.leave(self.log.groups, leave)
        if group is not None:
            self._dispatch(group)


class MemoryBackend:
    """Opens ``memory`` channels."""

    scheme = "memory"

    def open(self, config: ChannelConfig, services: ChannelServices) -> MemoryChannel:
        return MemoryChannel(config, services)
