"""The redis backend's side of the group-channel actor: streams, pending entries, claims.

Each process (a *worker*) is one Redis consumer per group. Its channel actor
bridges Redis to the local members through the protocol of
:mod:`reactor.channels.actor`: the reader threads fetch no more than the local
members' free demand (:meth:`RedisLog.dispatched` grants it), what they fetch is
queued like any arrival (:meth:`RedisLog.fetched`), and what the group settles
is ``XACK``\\ ed in batches (:meth:`RedisLog.flush`). A nack that leaves attempts
is written to the attempts hash, so that another worker, or this one after a
restart, goes on counting; the actor keeps its own entries fresh (``XCLAIM``
every ``lease/3``) so that no one claims them from a slow handler.

Thread-safety: the state belongs to the channel actor's thread, except the
counters the publishers bump (under :attr:`RedisLog.lock`) and what ``stats()`` reads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from reactor.actors.address import Address
from reactor.channels.actor import Doomed, Due, GroupChannelActor, GroupLog, abandoned
from reactor.channels.backend import GroupSpec
from reactor.channels.dedup import DedupWindow
from reactor.channels.groups import Counters, Group
from reactor.channels.redis.client import seq_entry_id
from reactor.channels.redis.link import RedisLink
from reactor.channels.redis.monitor import Monitor
from reactor.channels.redis.reader import Fetched, Reader
from reactor.clock import Timer
from reactor.messages import lifecycle
from reactor.messages.codecs import CloudEventsCodec
from reactor.messages.control import Encoded, ErrorInfo, Tick, decoded, unreadable
from reactor.messages.event import Event

__all__ = ["RedisLog"]

logger = logging.getLogger("reactor")

_ACK_FLUSH = 1024
# The most due events one release moves into the stream (one script); more are moved
# by the next release, at once.
_RELEASE_BATCH = 1000


class _Group(Group[Event | Encoded]):
    """A group as this worker sees it; ``events`` is everything it holds: queued or in flight."""

    __slots__ = ("filtered", "outstanding", "reader", "remembered", "trimmed")

    def __init__(self, spec: GroupSpec, channel: str) -> None:
        super().__init__(spec, channel, {})
        self.remembered: set[int] = set()  # seqs with a row in the attempts hash
        self.outstanding = 0  # granted to the reader, not yet arrived
        self.reader: Reader | None = None
        self.filtered = 0
        self.trimmed = 0


class RedisLog(GroupLog):
    """The channel actor's view of a stream; survives restarts of the actor.

    ``counters.expired`` counts the pending entries retention trimmed before they were acked.
    """

    def __init__(self, link: RedisLink, monitor: Monitor, address: Address) -> None:
        config = link.config
        self.channel = config.name
        self.link = link
        self.client = link.client
        self.monitor = monitor
        self.address = address
        self.codec = CloudEventsCodec()
        self.publish_system = link.publish_system
        self.counters = Counters()
        self.lock = threading.Lock()  # counters written by publishers' threads
        self.groups: dict[str, _Group] = {
            spec.name: _Group(spec, config.name) for spec in config.groups
        }
        self.acks: dict[str, list[int]] = {}  # group -> seqs to XACK
        self.forget: dict[str, list[int]] = {}  # group -> seqs to HDEL from attempts
        self.letters: list[dict[bytes, bytes]] = []  # dead letters to store, before their XACK
        try:
            # Letters in the stream (this process's count, approximate across workers).
            self.stored_letters = self.client.count_letters()
        except Exception as exc:
            link.guard(exc)
            self.stored_letters = 0
        # Delayed events in the stream's scheduled area, across every process, as of
        # this process's last look (its last schedule or release).
        self.scheduled = 0
        self.timer: Timer | None = None
        self.touch_every = max(0.05, link.options.lease_s / 3)
        self.retry = 0
        self.dedup: dict[str, DedupWindow] = {}  # filled by RedisChannel.dedup_window

    actor: GroupChannelActor  # the incarnation running now, set by bind()

    # -- the actor's lifecycle ---------------------------------------------------------

    def bind(self, actor: GroupChannelActor) -> dict[type, Callable[[Any], Any]]:
        self.actor = actor
        return {Fetched: self.fetched, Tick: self.tick}

    def started(self) -> None:
        self._schedule(self.touch_every)
        for group in self.groups.values():
            self.dispatched(group)

    def stopped(self) -> None:
        self.flush()

    def end_of_message(self) -> None:
        if self.letters and not self.retry:
            self.flush()  # a letter is stored at once: listing it must not wait for more acks
        elif self.acks and (
            self.address.depth() == 0 or sum(len(s) for s in self.acks.values()) >= _ACK_FLUSH
        ):
            self.flush()

    def _schedule(self, delay: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        address = self.address
        self.timer = self.link.clock.call_later(delay, lambda: address.tell(Tick("redis")))

    def close(self) -> list[threading.Thread]:
        """Stop the timer and the readers; returns the reader threads to join."""
        if self.timer is not None:
            self.timer.cancel()
        readers: list[threading.Thread] = []
        for group in self.groups.values():
            if group.reader is not None:
                group.reader.stop()
                readers.append(group.reader)
        return readers

    # -- fetched entries ---------------------------------------------------------------

    def fetched(self, fetched: Fetched) -> None:
        group = self.groups.get(fetched.group)
        if group is None:
            return
        group.outstanding = max(0, group.outstanding - len(fetched.items))
        if fetched.trimmed:
            self._trimmed(group, fetched.trimmed)
        held = group.events
        matches = group.matches
        dead_letter = self.actor.dead_letter
        for item in fetched.items:
            seq = item.seq
            if seq in held:
                continue  # already ours (claimed back from ourselves)
            event = item.event
            if event is None:
                where = f"stream {self.client.stream} entry {seq_entry_id(seq)}"
                error = ErrorInfo("DecodeError", f"{where}: {item.error}", "")
                raw = unreadable(item.raw or b"", f"{where}: {item.error}")
                dead_letter(group, Doomed(seq, raw, error, item.attempt, ""))
                continue
            if not matches(item.topic) or (item.only is not None and item.only != group.name):
                # (A redriven entry is for the group that gave up on it only.)
                group.filtered += 1
                self.settle(group, (seq,))
                continue
            if item.attempt > group.max_deliveries:
                spent = item.attempt - 1
                dead_letter(group, Doomed(seq, event, abandoned(group.name, spent), spent, ""))
                continue
            held[seq] = event
            if item.attempt > 1:
                group.attempts[seq] = item.attempt - 1
                group.remembered.add(seq)  # its row in the attempts hash goes when it settles
            if item.again:
                group.redelivered += 1
            group.requeue(seq, event.key)  # claimed entries may be older than queued ones
        self.actor.dispatch(group)

    def _trimmed(self, group: _Group, seqs: tuple[int, ...]) -> None:
        # An entry this worker still holds was not lost: it is handled from memory.
        seqs = tuple(seq for seq in seqs if seq not in group.events)
        if not seqs:
            return
        self.counters.expired += len(seqs)
        group.trimmed += len(seqs)
        self.settle(group, seqs)
        ids = [seq_entry_id(seq) for seq in seqs]
        logger.warning(
            "channel %r group %r: retention removed %d pending entries before they were acked",
            self.channel,
            group.name,
            len(ids),
        )
        self.publish_system(
            lifecycle.retention_forced(
                self.channel, group.name, len(ids), ids=ids[:100], url=self.link.options.display
            )
        )

    # -- the actor's hooks -------------------------------------------------------------

    def where(self, seq: int) -> dict[str, Any]:
        return {"entry_id": seq_entry_id(seq)}

    def keep_dead_letter(self, group: Group[Any], letter: Doomed) -> None:
        """Stored in the channel's letters stream with the next flush, before the XACK."""
        item = letter.item
        body = item.body if isinstance(item, Encoded) else self.codec.encode(item)
        self.letters.append(
            {
                b"group": group.name.encode(),
                b"entry_id": seq_entry_id(letter.seq).encode(),
                b"attempts": str(letter.attempts).encode(),
                b"error_type": letter.error.type.encode(errors="replace"),
                b"message": letter.error.message.encode(errors="replace"),
                b"traceback": letter.error.traceback.encode(errors="replace"),
                b"consumer": letter.consumer.encode(errors="replace"),
                b"time": repr(self.link.clock.wall()).encode(),
                b"raw": b"1" if decoded(item) is None else b"0",
                b"event": body,
            }
        )

    def settle(self, group: Group[Any], seqs: Sequence[int]) -> None:
        """``group`` is done with ``seqs``: they are XACKed with the next flush."""
        assert isinstance(group, _Group)
        forget = group.events.pop
        for seq in seqs:
            forget(seq, None)
        if group.attempts:
            for seq in seqs:
                group.forget(seq)
        self.acks.setdefault(group.name, []).extend(seqs)
        remembered = group.remembered
        if remembered and not remembered.isdisjoint(seqs):
            rows = [seq for seq in seqs if seq in remembered]
            remembered.difference_update(rows)
            self.forget.setdefault(group.name, []).extend(rows)

    def retrying(self, group: Group[Any], seq: int, attempt: int) -> None:
        """Another worker (or this one, restarted) must not start this entry's count again."""
        assert isinstance(group, _Group)
        group.remembered.add(seq)
        try:
            self.client.remember_attempt(group.name, seq, attempt)
        except Exception as exc:
            self.link.guard(exc)  # the count is kept locally; only a crash loses it

    def dispatched(self, group: Group[Any]) -> None:
        """Let the reader fetch what the local members can take beyond what is queued."""
        assert isinstance(group, _Group)
        if not group.order:
            return
        free = sum(m.demand for m in group.order) - group.queued() - group.outstanding
        if free <= 0 or self.link.stopping.is_set():
            return
        reader = group.reader
        if reader is None:
            reader = group.reader = Reader(self.link, group.name, self.address, self.codec)
            reader.start()
        group.outstanding += free
        reader.grant(free)

    # -- scheduled events ----------------------------------------------------------------

    def scheduled_now(self, left: int) -> None:
        """Redis says ``left`` delayed events wait in the scheduled area (any thread)."""
        self.scheduled = left

    def release_due(self, now: float) -> float | None:
        """Move what is due into the stream (whichever process does it first does it all).

        Also called on every tick: the events other processes scheduled and did not
        release (they stopped) are released here within ``lease_s / 3`` of their time.
        """
        try:
            moved, after, left = self.client.release_due(now, _RELEASE_BATCH)
        except Exception as exc:
            self.link.guard(exc)
            return now + self.touch_every  # Redis is away: look again later
        self.scheduled = left
        if moved:
            with self.lock:
                self.counters.published += moved
            try:
                # The gate counts them from the stream: at once, before any is delivered
                # (this thread hands out the deliveries), so wait_idle waits for them.
                self.monitor.sync()
            except Exception as exc:
                self.link.guard(exc)
                self.monitor.wake()
        return now if moved == _RELEASE_BATCH else after

    # -- writing -------------------------------------------------------------------------

    def flush(self) -> bool:
        """Store dead letters, XACK (and forget attempts of) everything settled; keep it on failure."""
        if not self.acks and not self.forget and not self.letters:
            return True
        try:
            self.client.settle(self.acks, self.forget, self.letters)
        except Exception as exc:
            self.link.guard(exc)
            self.retry += 1
            self._schedule(self.link.backoff(self.retry))
            return False
        self.acks = {}
        self.forget = {}
        if self.letters:
            with self.lock:
                self.stored_letters += len(self.letters)
            self.letters = []
        if self.retry:
            self.retry = 0
            self._schedule(self.touch_every)
        self.monitor.wake()
        return True

    def tick(self, _: Tick) -> None:
        if not self.flush():
            return
        again = self.release_due(self.link.clock.wall())
        if again is not None:
            self.actor.due(Due(again))
        try:
            self.client.touch({g.name: g.events for g in self.groups.values() if g.events})
        except Exception as exc:
            self.link.guard(exc)
        self._schedule(self.touch_every)
