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

from collections.abc import Callable, Sequence
from typing import Any

from reactor.actors.base import ActorContext, ReactorActor
from reactor.channels.actor import GroupChannelActor, GroupLog
from reactor.channels.backend import ChannelConfig, ChannelMetrics, ChannelParts, ChannelServices
from reactor.channels.groups import Counters, Group, channel_stats
from reactor.channels.routes import RouteCache
from reactor.messages import lifecycle
from reactor.messages.control import Publish
from reactor.messages.event import Event

__all__ = ["BACKEND", "MemoryBackend", "MemoryChannel"]


class _MemoryLog(GroupLog):
    """The channel's table of events; survives restarts of the channel actor.

    Thread-safety: owned by the channel actor's thread; ``stats()`` reads the
    groups and counters from any thread.
    """

    def __init__(self, parts: ChannelParts) -> None:
        config = parts.config
        self.channel = config.name
        self.gate = parts.gate
        self.publish_system = parts.services.publish_system
        self.counters = Counters()
        self.events: dict[int, Event] = {}
        self.remaining: dict[int, int] = {}  # seq -> groups that have not settled it yet
        self.next_seq = 1
        self.groups: dict[str, Group[Event]] = {
            spec.name: Group(spec, config.name, self.events) for spec in config.groups
        }
        self.routes = RouteCache(self.groups)

    actor: GroupChannelActor  # the incarnation running now, set by bind()

    def bind(self, actor: GroupChannelActor) -> dict[type, Callable[[Any], Any]]:
        self.actor = actor
        return {Publish: self.publish}

    # -- publish -------------------------------------------------------------------

    def publish(self, message: Publish) -> None:
        counters = self.counters
        table = self.events
        remaining = self.remaining
        routes = self.routes
        touched: set[Group[Event]] = set()
        unrouted = 0
        for event in message.events:
            counters.published += 1
            groups = routes[event.topic]
            if not groups:
                unrouted += 1
                continue
            seq = self.next_seq
            self.next_seq = seq + 1
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
            counters.unrouted += unrouted
            self.gate.release(unrouted)
        if self.gate.overflow == "drop_oldest" and self.gate.over_capacity:
            # Only drop_oldest evicts; other policies go over capacity only by overdraft.
            self._evict_oldest()
        dispatch = self.actor.dispatch
        for group in touched:
            dispatch(group)

    def _evict_oldest(self) -> None:
        """Drop the oldest events no member holds, down to capacity."""
        excess = self.gate.over_capacity
        busy = {seq for group in self.groups.values() for m in group.order for seq in m.in_flight}
        victims = []
        for seq in self.events:
            if seq not in busy:
                victims.append(seq)
                if len(victims) >= excess:
                    break
        for seq in victims:
            event = self.events.pop(seq)
            del self.remaining[seq]
            for group in self.groups.values():
                group.forget(seq)
            self.counters.dropped += 1
            self.publish_system(
                lifecycle.dropped(event, channel=self.channel, policy="drop_oldest")
            )
        self.gate.release(len(victims))

    # -- settlement ----------------------------------------------------------------

    def settle(self, group: Group[Any], seqs: Sequence[int]) -> None:
        """One group is done with ``seqs``; free those no group still needs."""
        table = self.events
        remaining = self.remaining
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


class MemoryChannel:
    """Handle of one in-memory channel: its gate, address, actor and statistics."""

    def __init__(self, config: ChannelConfig, services: ChannelServices) -> None:
        parts = ChannelParts.open(config, services)
        self.name = config.name
        self.config = config
        self.gate = parts.gate
        self.address = parts.address
        self.log = _MemoryLog(parts)

    def start_actor(self, context: ActorContext) -> ReactorActor:
        return GroupChannelActor.spawn(context, self.log, self.config.max_batch)

    def send(self, events: tuple[Event, ...]) -> None:
        self.address.tell(Publish(events))

    def stats(self) -> ChannelMetrics:
        groups = tuple(g.stats(backlog=g.queued()) for g in list(self.log.groups.values()))
        return channel_stats(self.name, "memory", self.gate, self.log.counters, groups)

    def close(self) -> None:
        """Nothing to release: the log is garbage once the handle is."""


class MemoryBackend:
    """Opens ``memory`` channels."""

    scheme = "memory"

    def open(self, config: ChannelConfig, services: ChannelServices) -> MemoryChannel:
        return MemoryChannel(config, services)


BACKEND = MemoryBackend()
