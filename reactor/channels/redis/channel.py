"""The handle of a ``redis`` channel and the backend that opens it."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Collection

import attrs

from reactor.channels.actor import Due, GroupChannel
from reactor.channels.backend import (
    Channel,
    ChannelConfig,
    ChannelMetrics,
    ChannelServices,
    Checkpoint,
    DeadLetter,
)
from reactor.channels.deadletters import check_letter_group, choose_letters
from reactor.channels.groups import channel_stats
from reactor.channels.redis.client import (
    FIELD,
    GROUP_FIELD,
    entry,
    entry_seq,
    is_connection_error,
    require_redis_py,
)
from reactor.channels.redis.dedup import RedisDedupWindow
from reactor.channels.redis.inbox import Inbox
from reactor.channels.redis.link import RedisLink
from reactor.channels.redis.log import RedisLog
from reactor.channels.redis.monitor import Monitor, Writes
from reactor.channels.redis.options import RedisOptions, parse_url
from reactor.channels.redis.sagas import RedisSagaStore
from reactor.channels.sizes import EventSizes
from reactor.errors import BackpressureTimeout, DecodeError
from reactor.messages import lifecycle
from reactor.messages.codecs import CloudEventsCodec
from reactor.messages.event import Event

__all__ = ["RedisBackend", "RedisChannel"]

logger = logging.getLogger("reactor")


class RedisChannel(GroupChannel[RedisLog]):
    """Handle of one channel on a Redis stream.

    Thread-safety: ``send``, ``stats`` and ``problems`` may be called from any thread.
    """

    def __init__(
        self, config: ChannelConfig, services: ChannelServices, options: RedisOptions
    ) -> None:
        super().__init__(config, services)
        parts = self.parts
        self.options = options
        self.codec = CloudEventsCodec()
        self.sizes = EventSizes(config.name, config.max_event_size, self.codec)
        self.link = RedisLink(parts, options)
        self.client = self.link.client
        self.writes = Writes()
        self.lags: dict[str, int] = {}
        self.monitor = Monitor(self.link, self.writes, self.lags)
        self.log = RedisLog(self.link, self.monitor, self.address)
        self.inbox: Inbox | None = None  # opened by this process's first request
        self._inbox_lock = threading.Lock()
        try:
            self.link.ensure_groups()
        except Exception as exc:
            self.link.guard(exc)
        self.monitor.start()

    # -- Channel protocol ------------------------------------------------------------

    def send(self, events: tuple[Event, ...]) -> None:
        """XADD ``events`` in one pipeline; returns once Redis has them.

        Raises:
            TypeError: an event's data is not plain JSON (CloudEvents needs it).
            EventTooLargeError: an event is bigger, encoded, than ``max_event_size``
                (nothing was written).
            BackpressureTimeout: Redis stayed unreachable for ``publish_timeout``.
        """
        gate = self.gate
        writes = self.writes
        writes.begin()
        try:
            encode = self.codec.encode
            bodies = [encode(event) for event in events]
            self.sizes.check_encoded(events, bodies)  # before anything is written
            entries = [entry(body, e.topic, e.key) for e, body in zip(events, bodies, strict=True)]
            groups = list(self.log.groups.values())
            unrouted = sum(1 for event in events if not any(g.matches(event.topic) for g in groups))
            self._write(entries)
            with self.log.lock:
                self.log.counters.published += len(events)
                self.log.counters.unrouted += unrouted
        finally:
            writes.end(len(events))
        if unrouted:
            gate.release(unrouted)  # nobody here reads them: settled on arrival
        if gate.overflow == "drop_oldest" and gate.over_capacity:
            # Read the backlog afresh first: the monitor's count may hold these
            # events twice for a moment, and evicting on it would drop too many.
            try:
                self.monitor.sync()
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
            if gate.over_capacity:
                self._evict_oldest(gate.over_capacity)
        self.monitor.wake()

    def schedule(self, events: tuple[Event, ...], due: float, timeout: float | None) -> int:
        """Store ``events`` in the stream's scheduled area (a sorted set), due at ``due``.

        Returns once Redis has them; the area has no bound of its own. Whichever
        process on the stream looks first once they are due moves them into the
        stream (see ``RedisClient.release_due``).

        Raises:
            TypeError: an event's data is not plain JSON (CloudEvents needs it).
            EventTooLargeError: an event is bigger, encoded, than ``max_event_size``
                (nothing was written).
            BackpressureTimeout: Redis stayed unreachable for ``publish_timeout``.
        """
        encode = self.codec.encode
        entries = [(encode(event), event.topic, event.key) for event in events]
        self.sizes.check_encoded(events, [body for body, _, _ in entries])  # before any is written
        self._retrying(lambda: self.log.scheduled_now(self.client.schedule(due, entries)))
        self.address.tell(Due(due))
        return len(entries)

    def _write(self, entries: list[dict[bytes, bytes]]) -> None:
        client = self.client
        clock = self.link.clock
        self._retrying(lambda: client.add(entries, client.trim(clock.wall())))

    def _retrying(self, write: Callable[[], object]) -> None:
        """Run ``write`` (to Redis), retrying through an outage for ``publish_timeout``.

        Raises:
            BackpressureTimeout: Redis stayed unreachable that long.
        """
        options = self.options
        link = self.link
        clock = link.clock
        deadline = clock.monotonic() + options.publish_timeout_s
        attempt = 0
        while True:
            try:
                link.ensure_groups()
                write()
                if attempt:
                    link.found()
                return
            except Exception as exc:
                link.guard(exc)
                attempt += 1
                pause = link.backoff(attempt)
                if clock.monotonic() + pause > deadline or link.stopping.is_set():
                    raise BackpressureTimeout(
                        f"channel {self.name!r} could not write to Redis at {options.display} for "
                        f"{options.publish_timeout_s}s ({type(exc).__name__}: {exc}); the events "
                        "were not published"
                    ) from exc
                link.stopping.wait(pause)

    def _evict_oldest(self, excess: int) -> None:
        try:
            victims = self.client.evict(excess, [spec.name for spec in self.config.groups])
        except Exception as exc:
            self.link.guard(exc)
            return
        for _entry_id, fields in victims:
            event = self._decode_quietly(fields)
            if event is not None:
                self.link.publish_system(
                    lifecycle.dropped(event, channel=self.name, policy="drop_oldest")
                )
        with self.log.lock:
            self.log.counters.dropped += len(victims)
        self.gate.release(len(victims))

    def _decode_quietly(self, fields: dict[bytes, bytes]) -> Event | None:
        try:
            return self.codec.decode(fields[FIELD])
        except (KeyError, DecodeError):
            return None

    def stats(self) -> ChannelMetrics:
        lags = self.lags
        groups = tuple(
            g.stats(backlog=lags.get(g.name, 0) + g.queued(), expired=g.trimmed)
            for g in list(self.log.groups.values())
        )
        stats = channel_stats(self.name, "redis", self.gate, self.log.counters, groups)
        return attrs.evolve(
            stats,
            stored_dead_letters=max(0, self.log.stored_letters),
            scheduled=self.log.scheduled,
        )

    def problems(self) -> tuple[str, ...]:
        """What is wrong with the channel right now, for health reports."""
        return self.link.problems()

    def dedup_window(self, group: str, size: int) -> RedisDedupWindow:
        """The dedup window of ``group``, shared through Redis with every worker."""
        window = RedisDedupWindow(self.link, group, size)
        self.log.dedup[group] = window  # never dead-letter what it holds
        return window

    # -- projections (the KeepsCheckpoints and ReadsLog capabilities) ----------------------

    def load_checkpoint(self, name: str) -> Checkpoint | None:
        """Projection ``name``'s checkpoint: the hash ``{prefix}:{channel}:projection:{name}``."""
        fields = self.client.checkpoint(name)
        if not fields:
            return None
        above = json.loads(fields[b"above"])
        return Checkpoint(
            int(fields[b"position"]), fields[b"state"].decode(), tuple(int(p) for p in above)
        )

    def save_checkpoint(self, name: str, checkpoint: Checkpoint) -> bool:
        """Write ``checkpoint`` (position, positions above and state) in one MULTI/EXEC.

        Returns False (and logs why) when Redis cannot be reached: the projection
        keeps its state and writes it at its next checkpoint.
        """
        fields: dict[str, str | int] = {
            "position": checkpoint.position,
            "above": json.dumps(list(checkpoint.above)),
            "state": checkpoint.state,
        }
        try:
            self.client.save_checkpoint(name, fields)
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            logger.warning("channel %r: projection %r not checkpointed: %s", self.name, name, exc)
            return False
        return True

    def read_log(self, group: str, after: int, limit: int) -> list[tuple[int, Event | None]]:
        """Up to ``limit`` entries of the stream after ``after``, decoded, in stream order.

        An entry a redrive added for another group only comes back as None, as
        does an entry that holds no event.
        """
        read: list[tuple[int, Event | None]] = []
        for entry_id, fields in self.client.entries_after(after, limit):
            owner = fields.get(GROUP_FIELD)
            mine = owner is None or owner.decode(errors="replace") == group
            read.append((entry_seq(entry_id), self._decode_quietly(fields) if mine else None))
        return read

    def log_head(self) -> int:
        """The local sequence number of the newest entry of the stream."""
        return self.client.last_seq()

    def settled(self, group: str) -> int:
        """The entry (as a sequence number) at or below which ``group`` acked everything."""
        return self.client.settled(group)

    # -- sagas (the KeepsSagas capability): {prefix}:{channel}:saga:{saga} ----------------

    def saga_store(self, saga: str) -> RedisSagaStore:
        """The instances of ``saga`` (whose channel this is), kept in Redis beside the stream."""
        return RedisSagaStore(self.client, self.name, saga)

    # -- replies (the CarriesReplies capability): {prefix}:inbox:{inbox} --------------------

    def send_reply(self, inbox: str, reply: Event) -> None:
        """XADD ``reply`` to the requester's inbox, in whatever process it runs.

        Raises:
            EventTooLargeError: the reply is bigger, encoded, than ``max_event_size``.
        """
        body = self.codec.encode(reply)
        self.sizes.check_encoded((reply,), (body,))
        self.client.send_reply(inbox, entry(body, reply.topic, reply.key))

    def open_inbox(self, inbox: str, deliver: Callable[[Event], object]) -> None:
        """Start reading this process's inbox (once), handing each reply to ``deliver``."""
        with self._inbox_lock:
            if self.inbox is None:
                self.inbox = Inbox(self.name, self.client, inbox, deliver)
                self.inbox.start()

    # -- dead letters (the DeadLetters capability): the stream {prefix}:{channel}:deadletters --

    def dead_letters(self, group: str | None = None, limit: int | None = None) -> list[DeadLetter]:
        """The letters in Redis (of every worker), oldest first; their id is the letter's entry id.

        Raises:
            UnknownGroupError: ``group`` is not declared on this channel.
        """
        check_letter_group(self.config, group)
        letters = [self._letter(i, f) for i, f in self.client.dead_letters()]
        chosen = [v for v in letters if group is None or v.group == group]
        return chosen if limit is None else chosen[:limit]

    def redrive(self, ids: Collection[str] | None = None, group: str | None = None) -> int:
        """Add the chosen letters' events to the stream again, each for its own group only.

        The new entry carries ``reactor.group``: every other group acks it unread.
        Adding them and deleting the letters is one MULTI; any worker of the group
        takes them, with their attempts starting over.

        Raises:
            UnknownGroupError: ``group`` is not declared on this channel.
            UnknownDeadLetterError: an id names no letter; nothing was redriven.
        """
        chosen = self._chosen(ids, group)
        entries = []
        for letter in chosen:
            event = letter.event
            if event is None:
                continue  # bytes that are no event cannot be delivered: purge them
            fields = entry(self.codec.encode(event), event.topic, event.key)
            fields[GROUP_FIELD] = letter.group.encode()
            entries.append((letter.id, fields))
        if not entries:
            return 0
        count = len(entries)
        # Counted like a publish: credits first (without waiting), so that the gate is
        # not idle between the write and the monitor's next reading of the backlog.
        self.gate.hold(count)
        self.writes.begin()
        try:
            self.link.ensure_groups()
            self.client.redrive(entries)
        except BaseException:
            self.gate.release(count)
            raise
        finally:
            self.writes.end(count)
        with self.log.lock:
            self.log.stored_letters -= len(entries)
        self.monitor.wake()
        return len(entries)

    def purge(self, ids: Collection[str] | None = None, group: str | None = None) -> int:
        """Delete the chosen letters from Redis.

        Raises:
            UnknownGroupError: ``group`` is not declared on this channel.
            UnknownDeadLetterError: an id names no letter; nothing was purged.
        """
        chosen = self._chosen(ids, group)
        self.client.delete_letters([letter.id for letter in chosen])
        with self.log.lock:
            self.log.stored_letters -= len(chosen)
        return len(chosen)

    def _chosen(self, ids: Collection[str] | None, group: str | None) -> list[DeadLetter]:
        return choose_letters(self.config, ids, group, self.dead_letters, lambda v: v.id)

    def _letter(self, letter_id: bytes, fields: dict[bytes, bytes]) -> DeadLetter:
        def text(name: bytes) -> str:
            return fields.get(name, b"").decode(errors="replace")

        body = fields.get(FIELD, b"")
        event = None if fields.get(b"raw") == b"1" else self._decode_quietly(fields)
        try:
            attempts = int(text(b"attempts") or 0)
            wall = float(text(b"time") or 0)
        except ValueError:  # written by something else: show what can be shown
            attempts, wall = 0, 0.0
        return DeadLetter(
            id=letter_id.decode() if isinstance(letter_id, bytes) else str(letter_id),
            channel=self.name,
            group=text(b"group"),
            consumer=text(b"consumer"),
            event=event,
            raw=body if event is None else None,
            where={"entry_id": text(b"entry_id")},
            error_type=text(b"error_type"),
            message=text(b"message"),
            traceback=text(b"traceback"),
            attempts=attempts,
            time=DeadLetter.stamp(wall),
        )

    @property
    def trimmed(self) -> int:
        """Pending entries found deleted by retention (``maxlen``/``maxage``)."""
        return self.log.counters.expired

    def close(self) -> None:
        """Stop the monitor and readers and close the connections."""
        self.link.stopping.set()
        self.monitor.wake()
        with self._inbox_lock:
            if self.inbox is not None:
                self.inbox.stop()
        threads: list[threading.Thread] = [self.monitor, *self.log.close()]
        wait = self.options.block_ms / 1000 + 3.0
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(wait)
        self.client.close()


class RedisBackend:
    """Opens ``redis://`` (or ``rediss://``) channels."""

    def __init__(self, scheme: str) -> None:
        self.scheme = scheme

    def open(self, config: ChannelConfig, services: ChannelServices) -> Channel:
        """Open the channel: parse its URL, create its stream and groups.

        Raises:
            RedisUnavailable: redis-py is not installed.
            TopologyError: a bad option in the URL.
        """
        options = parse_url(config.backend, config.name)
        require_redis_py(config.name, options.display)
        return RedisChannel(config, services, options)
