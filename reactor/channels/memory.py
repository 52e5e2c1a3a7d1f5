"""The ``memory`` backend: a channel whose log lives in the channel actor's process.

The events not yet settled by every group live in ``events`` (seq -> event, in
publish order), shared by the groups, with ``remaining`` (seq -> groups that have
not settled it yet, kept only for a seq routed to several groups). Queues,
members, demand and attempts are the common group machinery of
:mod:`reactor.channels.groups`; what is the memory backend's own is this table
and the ``drop_oldest`` eviction from it (evicted seqs are skipped lazily where
they are queued). The state object survives a restart of the
channel actor, like the mailbox.

**Delayed events** wait in the channel's :class:`~reactor.channels.scheduled.ScheduledArea`
(in the process, bounded by the channel's capacity; see that module) and are
taken in like a publish when they fall due.

**Dead letters** are kept in the process, per channel: the latest
:data:`MAX_DEAD_LETTERS` (10,000); past that the oldest is evicted and counted
(:attr:`ChannelMetrics.evicted_dead_letters`, and a warning on the ``reactor``
logger the first time). They die with the process: a channel whose dead letters
must outlive it is a durable one (``sqlite``, ``redis``). A redrive goes through
the channel actor (:class:`Redrive`): each event is queued again as a new seq for
the group that gave up on it, and only that group, with its attempts starting over.
"""

from __future__ import annotations

import collections
import itertools
import logging
import operator
import threading
from collections.abc import Callable, Collection, Sequence
from typing import Any, Final

import attrs

from reactor.channels.actor import Doomed, Due, GroupChannel, GroupChannelActor, GroupLog
from reactor.channels.backend import (
    ChannelConfig,
    ChannelMetrics,
    ChannelParts,
    ChannelServices,
    DeadLetter,
)
from reactor.channels.deadletters import check_letter_group, missing_letters
from reactor.channels.groups import Counters, Group, channel_stats
from reactor.channels.routes import RouteCache
from reactor.channels.sagas import MemorySagaStore
from reactor.channels.scheduled import ScheduledArea
from reactor.clock import Clock
from reactor.messages import lifecycle
from reactor.messages.control import Encoded, ErrorInfo, Publish, decoded
from reactor.messages.event import Event

__all__ = ["BACKEND", "MAX_DEAD_LETTERS", "MemoryBackend", "MemoryChannel", "Redrive"]

logger = logging.getLogger("reactor")

MAX_DEAD_LETTERS = 10_000
"""The most dead letters a memory channel keeps; past it the oldest is evicted and counted."""

_ASK_TIMEOUT_S = 30.0


@attrs.frozen(slots=True)
class Redrive:
    """Queue the letters ``ids`` (None: all, or all of ``group``) again; the reply is how many."""

    ids: frozenset[str] | None
    group: str | None


class _LetterBox:
    """The latest dead letters of one channel, oldest first, at most ``bound``.

    Thread-safety: every method takes the lock (the actor adds and redrives, any
    thread lists and purges).
    """

    def __init__(self, channel: str, clock: Clock, bound: int | None = None) -> None:
        self.channel = channel
        self.clock = clock
        self.bound = MAX_DEAD_LETTERS if bound is None else bound
        self.lock = threading.Lock()
        self.letters: collections.OrderedDict[str, DeadLetter] = collections.OrderedDict()
        self.next_id = 1
        self.evicted = 0

    def keep(
        self, group: str, item: Event | Encoded, error: ErrorInfo, attempts: int, consumer: str
    ) -> None:
        event = decoded(item)
        raw = item.body if event is None and isinstance(item, Encoded) else None
        with self.lock:
            letter_id = str(self.next_id)
            self.next_id += 1
            self.letters[letter_id] = DeadLetter(
                id=letter_id,
                channel=self.channel,
                group=group,
                consumer=consumer,
                event=event,
                raw=raw,
                where={},
                error_type=error.type,
                message=error.message,
                traceback=error.traceback,
                attempts=attempts,
                time=DeadLetter.stamp(self.clock.wall()),
            )
            if len(self.letters) <= self.bound:
                return
            self.letters.popitem(last=False)
            self.evicted += 1
            first = self.evicted == 1
        if first:
            logger.warning(
                "channel %r keeps its latest %d dead letters in memory; the oldest are "
                "evicted from now on (counted); use a durable channel to keep them all",
                self.channel,
                self.bound,
                extra={"reactor_channel": self.channel},
            )

    def __len__(self) -> int:
        return len(self.letters)

    def chosen(self, group: str | None, limit: int | None) -> list[DeadLetter]:
        with self.lock:
            letters = [v for v in self.letters.values() if group is None or v.group == group]
        return letters if limit is None else letters[:limit]

    def take(
        self, ids: Collection[str] | None, group: str | None, *, events_only: bool, strict: bool
    ) -> list[DeadLetter]:
        """Remove and return the letters chosen (see :meth:`MemoryChannel.redrive`).

        Raises:
            UnknownDeadLetterError: ``strict`` and an id names no letter; nothing was taken.
        """
        with self.lock:
            if ids is not None and strict:
                missing_letters(self.channel, ids, self.letters)
            chosen = [
                letter
                for letter in self.letters.values()
                if (ids is None or letter.id in ids)
                and (group is None or letter.group == group)
                and (letter.event is not None or not events_only)
            ]
            for letter in chosen:
                del self.letters[letter.id]
        return chosen


_topic_of = operator.attrgetter("topic")
_key_of = operator.attrgetter("key")
_NO_KEY: Final = {None}

# The note that the outbox has events (its own events are empty: take the outbox's).
_TAKE_IN: Final = Publish(())


class _MemoryLog(GroupLog):
    """The channel's table of events; survives restarts of the channel actor.

    Thread-safety: owned by the channel actor's thread; ``stats()`` reads the
    groups and counters from any thread.
    """

    def __init__(self, parts: ChannelParts) -> None:
        config = parts.config
        self.channel = config.name
        self.address = parts.address
        # Events publishers hold credits for, in publish order, not yet taken in by the
        # actor; see send().
        self.outbox: collections.deque[Event] = collections.deque()
        self.told = False  # a Publish is in the mailbox, or being handled
        self.gate = parts.gate
        self.publish_system = parts.services.publish_system
        self.letters = _LetterBox(config.name, parts.services.clock)
        self.scheduled = ScheduledArea(config.name, config.capacity, config.overflow)
        self.counters = Counters()
        self.events: dict[int, Event] = {}
        # seq -> groups that have not settled it yet, for seqs routed to several groups.
        self.remaining: dict[int, int] = {}
        self.next_seq = 1
        self.groups: dict[str, Group[Event]] = {
            spec.name: Group(spec, config.name, self.events) for spec in config.groups
        }
        self.routes = RouteCache(self.groups)

    actor: GroupChannelActor  # the incarnation running now, set by bind()

    def bind(self, actor: GroupChannelActor) -> dict[type, Callable[[Any], Any]]:
        self.actor = actor
        return {Publish: self.publish, Redrive: self.redrive}

    def started(self) -> None:
        # An earlier incarnation may have crashed between taking the note and emptying
        # the outbox: what it left is taken in now.
        self.publish(_TAKE_IN)

    # -- publish -------------------------------------------------------------------

    def send(self, events: tuple[Event, ...]) -> None:
        """Queue events (credits held) for the actor; runs in the publisher's thread.

        One note (a :class:`Publish`) goes to the mailbox only when none is pending:
        while the actor is busy, publishers just append to the outbox, and the actor
        takes in everything there with one message. The note is cleared *before*
        the outbox is emptied (see :meth:`publish`), so an event appended after the
        last look finds the note cleared and sends a new one: nothing is left behind.
        Appends and the flag are single operations under the GIL.
        """
        self.outbox.extend(events)
        if not self.told:
            self.told = True
            self.address.tell(_TAKE_IN)

    def publish(self, message: Publish) -> None:
        self.told = False
        outbox = self.outbox
        take = outbox.popleft
        events = message.events or [take() for _ in range(len(outbox))]
        if events:
            self._take_in(events)

    def _take_in(self, events: Sequence[Event]) -> None:
        """Route ``events`` (credits held) into the table and the groups' queues."""
        counters = self.counters
        counters.published += len(events)
        topics = set(map(_topic_of, events))
        if len(topics) == 1:
            groups = self.routes[next(iter(topics))]
            if not groups:
                self._published((), len(events))
                return
            if len(groups) == 1 and set(map(_key_of, events)) == _NO_KEY:
                # The usual batch: one topic, one group, no keys. Its seqs are a range,
                # queued and stored by C loops, with nothing per event but the event.
                group = groups[0]
                first = self.next_seq
                self.next_seq = first + len(events)
                seqs = range(first, self.next_seq)
                self.events.update(zip(seqs, events, strict=True))
                group.shared.extend(seqs)
                self._published((group,), 0)
                return
        table = self.events
        remaining = self.remaining
        routes = self.routes
        touched: dict[Group[Event], None] = {}
        unrouted = 0
        for event in events:
            groups = routes[event.topic]
            if not groups:
                unrouted += 1
                continue
            seq = self.next_seq
            self.next_seq = seq + 1
            table[seq] = event
            if len(groups) > 1:
                remaining[seq] = len(groups)  # (a seq of one group is settled by it alone)
            key = event.key
            for group in groups:
                if key is None:
                    group.shared.append(seq)
                else:
                    group.place(seq, key)
                touched[group] = None
        self._published(touched, unrouted)

    def _published(self, touched: Collection[Group[Event]], unrouted: int) -> None:
        if unrouted:
            # Nobody subscribes to these topics: they are settled on arrival, as on a broker.
            self.counters.unrouted += unrouted
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
            self.remaining.pop(seq, None)
            for group in self.groups.values():
                group.forget(seq)
            self.counters.dropped += 1
            self.publish_system(
                lifecycle.dropped(event, channel=self.channel, policy="drop_oldest")
            )
        self.gate.release(len(victims))

    # -- scheduled events ----------------------------------------------------------

    def schedule(self, events: tuple[Event, ...], due: float, timeout: float | None) -> int:
        """Keep ``events`` in the scheduled area; runs in the publisher's thread."""
        kept, dropped = self.scheduled.add(events, due, timeout)
        if dropped:
            self.gate.count_dropped(len(dropped))  # (a lock: this is the publisher's thread)
            policy = self.gate.overflow
            for event in dropped:
                self.publish_system(lifecycle.dropped(event, channel=self.channel, policy=policy))
        if kept:
            self.address.tell(Due(due))
        return kept

    def release_due(self, now: float) -> float | None:
        events = self.scheduled.take_due(now)
        if events:
            # Their credits are taken without waiting, like a redrive's: the actor cannot
            # wait for room in its own channel. The area's bound bounds the overdraft.
            self.gate.hold(len(events))
            self._take_in(events)
        return self.scheduled.next_due()

    # -- dead letters --------------------------------------------------------------

    def keep_dead_letter(self, group: Group[Any], letter: Doomed) -> None:
        self.letters.keep(group.name, letter.item, letter.error, letter.attempts, letter.consumer)

    def redrive(self, message: Redrive) -> int:
        """Queue each chosen letter's event again, as a new seq, for its group only."""
        # The ids were checked by the caller: one redriven meanwhile is just not there.
        letters = self.letters.take(message.ids, message.group, events_only=True, strict=False)
        touched: set[Group[Event]] = set()
        queued = 0
        for letter in letters:
            group = self.groups.get(letter.group)
            event = letter.event
            if group is None or event is None:
                continue  # (a letter's group was declared when it dead-lettered: always there)
            queued += 1
            seq = self.next_seq
            self.next_seq = seq + 1
            self.events[seq] = event
            group.place(seq, event.key)
            touched.add(group)
        # The credits of a redrive are taken without waiting, like a log's recovered backlog.
        self.gate.hold(queued)
        for group in touched:
            self.actor.dispatch(group)
        return queued

    # -- settlement ----------------------------------------------------------------

    def settle(self, group: Group[Any], seqs: Sequence[int]) -> None:
        """One group is done with ``seqs``; free those no group still needs."""
        table = self.events
        remaining = self.remaining
        before = len(table)
        if not remaining:
            # No seq waits for several groups: each one is freed by its settlement (a
            # seq settled twice is gone already). One C loop.
            collections.deque(map(table.pop, seqs, itertools.repeat(None)), maxlen=0)
        else:
            for seq in seqs:
                left = remaining.get(seq)
                if left is None:
                    table.pop(seq, None)  # one group's seq, or one settled already
                elif left > 1:
                    remaining[seq] = left - 1
                else:
                    del remaining[seq]
                    del table[seq]
        freed = before - len(table)
        if freed:
            self.gate.release(freed)


class MemoryChannel(GroupChannel[_MemoryLog]):
    """Handle of one in-memory channel: its gate, address, actor and statistics."""

    def __init__(self, config: ChannelConfig, services: ChannelServices) -> None:
        super().__init__(config, services)
        self.log = _MemoryLog(self.parts)
        self._sagas: dict[str, MemorySagaStore] = {}

    def send(self, events: tuple[Event, ...]) -> None:
        self.sizes.check(events)  # an upper bound first: an event is encoded only if near the limit
        self.log.send(events)

    def schedule(self, events: tuple[Event, ...], due: float, timeout: float | None) -> int:
        self.sizes.check(events)  # now, not when they fall due: the publisher hears of it
        return self.log.schedule(events, due, timeout)

    def saga_store(self, saga: str) -> MemorySagaStore:
        """The instances of ``saga`` (whose channel this is), in this process."""
        return self._sagas.setdefault(saga, MemorySagaStore())

    def stats(self) -> ChannelMetrics:
        groups = tuple(g.stats(backlog=g.queued()) for g in list(self.log.groups.values()))
        stats = channel_stats(self.name, "memory", self.gate, self.log.counters, groups)
        letters = self.log.letters
        return attrs.evolve(
            stats,
            stored_dead_letters=len(letters),
            evicted_dead_letters=letters.evicted,
            scheduled=len(self.log.scheduled),
        )

    # -- dead letters (the DeadLetters capability) --------------------------------------

    def dead_letters(self, group: str | None = None, limit: int | None = None) -> list[DeadLetter]:
        """The latest dead letters (at most :data:`MAX_DEAD_LETTERS`), oldest first."""
        check_letter_group(self.config, group)
        return self.log.letters.chosen(group, limit)

    def redrive(self, ids: Collection[str] | None = None, group: str | None = None) -> int:
        """Queue letters again for the groups that gave up on them, through the channel actor.

        Needs the channel's actor running (a started system).
        """
        check_letter_group(self.config, group)
        chosen = frozenset(ids) if ids is not None else None
        if chosen is not None:
            missing_letters(self.name, chosen, [v.id for v in self.log.letters.chosen(None, None)])
        return int(self.address.ask(Redrive(chosen, group), timeout=_ASK_TIMEOUT_S))

    def purge(self, ids: Collection[str] | None = None, group: str | None = None) -> int:
        check_letter_group(self.config, group)
        return len(self.log.letters.take(ids, group, events_only=False, strict=True))

    def close(self) -> None:
        """Drop the delayed events not yet due, saying how many were lost with them."""
        lost = self.log.scheduled.close()
        if lost:
            logger.warning(
                "channel %r closed with %d delayed event(s) not yet due; a memory channel "
                "keeps them in the process, so they are lost. Use a sqlite or redis channel "
                "to keep them across restarts",
                self.name,
                lost,
                extra={"reactor_channel": self.name},
            )


class MemoryBackend:
    """Opens ``memory`` channels."""

    scheme = "memory"

    def open(self, config: ChannelConfig, services: ChannelServices) -> MemoryChannel:
        return MemoryChannel(config, services)


BACKEND = MemoryBackend()
