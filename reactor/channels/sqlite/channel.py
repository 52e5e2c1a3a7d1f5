"""The handle of a ``sqlite`` channel and the backend that opens it."""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from datetime import datetime

import attrs

from reactor.channels.actor import Due, GroupChannel
from reactor.channels.backend import (
    ChannelConfig,
    ChannelMetrics,
    ChannelServices,
    Checkpoint,
    DeadLetter,
)
from reactor.channels.deadletters import check_letter_group, choose_letters
from reactor.channels.groups import channel_stats
from reactor.channels.sqlite.dedup import DurableDedupWindow
from reactor.channels.sqlite.file import open_store, release_store
from reactor.channels.sqlite.log import Appended, Replay, Retain, SqliteLog, codec
from reactor.channels.sqlite.options import parse_url
from reactor.channels.sqlite.sagas import SqliteSagaStore
from reactor.channels.sqlite.store import ChannelStore, DeadLetterRow
from reactor.errors import DecodeError, SystemStoppedError
from reactor.messages.event import Event

__all__ = ["SqliteBackend", "SqliteChannel", "StartPosition"]

logger = logging.getLogger("reactor")

StartPosition = str | int | datetime

_ASK_TIMEOUT_S = 30.0
# The most due events one release moves into the log (one transaction); more are
# moved by the next release, at once.
_RELEASE_BATCH = 1000


class SqliteChannel(GroupChannel[SqliteLog]):
    """Handle of one channel whose log lives in a SQLite file.

    Thread-safety: :meth:`send`, :meth:`stats`, :meth:`replay` and
    :meth:`dedup_window` may be called from any thread.
    """

    def __init__(self, config: ChannelConfig, services: ChannelServices) -> None:
        self.options = parse_url(config.backend, config.name)
        super().__init__(config, services)
        parts = self.parts
        self.clock = services.clock
        self._closed = False
        self.file = open_store(self.options.path, self.options.synchronous, config.name)
        try:
            self.store = ChannelStore(self.file, config.name)
            try:
                self._head = self.store.head
                self._last_appended = self.store.last_appended()
                self.log = SqliteLog(parts, self.options, self.store, self._release_due)
            except BaseException:
                self.store.close()
                raise
        except BaseException:
            release_store(self.file, config.name)
            raise

    # -- the Channel protocol --------------------------------------------------------

    def send(self, events: tuple[Event, ...]) -> None:
        """Append ``events`` to the log (one transaction) and hand them to the actor.

        Runs in the publisher's thread and returns once the events are committed.

        Raises:
            SystemStoppedError: the channel was closed.
            TypeError: an event's data has no JSON form (nothing was stored).
            EventTooLargeError: an event is bigger, encoded, than ``max_event_size``
                (nothing was stored).
        """
        bodies = [codec.encode(event) for event in events]  # outside the lock: the costly part
        self.sizes.check_encoded(events, bodies)  # before anything is stored
        routes = self.log.routes
        extra = 0
        unrouted = 0
        for event in events:
            fanout = len(routes[event.topic])
            if fanout == 0:
                unrouted += 1
            else:
                extra += fanout - 1
        if extra:
            # One credit per (event, group): never wait here, the publisher already did.
            self.gate.hold(extra)
        try:
            with self.file.lock:
                if self._closed:
                    raise SystemStoppedError(
                        f"channel {self.name!r} is closed; it accepts no more events"
                    )
                # Append times never decrease with the offset: a search by time relies on it.
                now = max(self.clock.wall(), self._last_appended)
                self._last_appended = now
                first = self._head + 1
                self.store.append(
                    first,
                    now,
                    [(e.topic, e.key, body) for e, body in zip(events, bodies, strict=True)],
                )
                self._head = first + len(events) - 1
                # Counted here, not in the actor: unrouted events settle before it hears of them.
                counters = self.log.counters
                counters.published += len(events)
                counters.unrouted += unrouted
                # Under the lock, so the actor hears of appends in offset order.
                self.address.tell(Appended(first, events))
        except BaseException:
            if extra:
                self.gate.release(extra)
            raise
        if unrouted:
            self.gate.release(unrouted)  # nobody routes them: settled on arrival, kept in the log

    def schedule(self, events: tuple[Event, ...], due: float, timeout: float | None) -> int:
        """Store ``events`` in the file's scheduled area, due at wall time ``due``.

        Runs in the publisher's thread and returns once they are committed. The
        area is on disk, so it has no bound of its own (``timeout`` is unused).

        Raises:
            SystemStoppedError: the channel was closed.
            TypeError: an event's data has no JSON form (nothing was stored).
            EventTooLargeError: an event is bigger, encoded, than ``max_event_size``
                (nothing was stored).
        """
        rows = [(e.topic, e.key, codec.encode(e)) for e in events]
        self.sizes.check_encoded(events, [row[2] for row in rows])  # before anything is stored
        with self.file.lock:
            self._check_open()
            self.store.schedule(due, rows)
            self.log.scheduled += len(rows)
        self.address.tell(Due(due))
        return len(rows)

    def _release_due(self, now: float) -> float | None:
        """Move the events due at wall time ``now`` into the log; the next due time.

        Runs on the channel actor's thread (see ``GroupLog.release_due``), under the
        file's lock like a publish: the moved events take the next offsets, and the
        actor hears of them (:class:`Appended`) in offset order.
        """
        routes = self.log.routes
        with self.file.lock:
            if self._closed:
                return None
            appended = max(self.clock.wall(), self._last_appended)
            first = self._head + 1
            rows, after = self.store.release_due(now, first, appended, _RELEASE_BATCH)
            if not rows:
                return after
            self._last_appended = appended
            self._head = first + len(rows) - 1
            events = tuple(codec.decode(body) for _, _, body in rows)
            fanout = [len(routes[event.topic]) for event in events]
            # One credit per (event, group), never waited for: the actor cannot wait for
            # room in its own channel (the scheduled area was not counted until now).
            self.gate.hold(sum(fanout))
            log = self.log
            log.scheduled -= len(rows)
            log.counters.published += len(rows)
            log.counters.unrouted += fanout.count(0)
            self.address.tell(Appended(first, events))
        return now if len(rows) == _RELEASE_BATCH else after

    def stats(self) -> ChannelMetrics:
        groups = tuple(
            g.stats(backlog=max(0, g.owed - g.in_flight()), expired=g.expired)
            for g in list(self.log.groups.values())
        )
        stats = channel_stats(self.name, "sqlite", self.gate, self.log.counters, groups)
        return attrs.evolve(
            stats, stored_dead_letters=self.log.stored_letters, scheduled=self.log.scheduled
        )

    def close(self) -> None:
        """Write what is still buffered, close the connections, release the file lock."""
        with self.file.lock:
            if self._closed:
                return
            self._closed = True
        try:
            self.log.flush()
        except Exception:
            logger.exception("channel %r: could not write its last offsets on close", self.name)
        finally:
            self.store.close()
            release_store(self.file, self.name)

    # -- beyond the protocol -----------------------------------------------------------

    def replay(self, group: str, from_: StartPosition = "earliest") -> int:
        """Rewind ``group`` so that it gets every event from ``from_`` on again.

        Args:
            group: a group declared on this channel.
            from_: ``"earliest"``, ``"latest"``, an offset, or a ``datetime``.

        Returns:
            The first offset the group will be given (``head + 1`` if none).

        Raises:
            UnknownGroupError: no such group. TopologyError: bad ``from_``.
        """
        return int(self.address.ask(Replay(group, from_), timeout=_ASK_TIMEOUT_S))

    # -- projections (the KeepsCheckpoints and ReadsLog capabilities) ------------------------

    def load_checkpoint(self, name: str) -> Checkpoint | None:
        """Projection ``name``'s checkpoint, from the ``reactor_projections`` table."""
        row = self.store.checkpoint(name)
        if row is None:
            return None
        position, above, state = row
        return Checkpoint(position, state, tuple(int(seq) for seq in json.loads(above)))

    def save_checkpoint(self, name: str, checkpoint: Checkpoint) -> bool:
        """Write ``checkpoint`` (position, positions above and state) in one transaction of the file."""
        if self._closed:
            return False
        above = json.dumps(list(checkpoint.above))
        return self.store.save_checkpoint(name, checkpoint.position, above, checkpoint.state)

    def read_log(self, group: str, after: int, limit: int) -> list[tuple[int, Event | None]]:
        """Up to ``limit`` events of the log above offset ``after``, in offset order.

        Every event is read: an event a redrive appended again for another group
        comes back too (under its first id; a reader that folds skips a second one).
        """
        self._check_open()
        read: list[tuple[int, Event | None]] = []
        for seq, body in self.store.events_after(after, limit):
            try:
                read.append((seq, codec.decode(body)))
            except DecodeError:
                read.append((seq, None))
        return read

    def log_head(self) -> int:
        """The last offset appended to this channel's log."""
        return self._head

    def settled(self, group: str) -> int:
        """The watermark of ``group`` in the file (it may lag behind its acks, never lead)."""
        self._check_open()
        return self.store.committed(group)

    def enforce_retention(self, now: float | None = None) -> int:
        """Apply ``max_events`` / ``max_age`` now (as of wall time ``now``); returns events deleted."""
        return int(self.address.ask(Retain(now), timeout=_ASK_TIMEOUT_S))

    def dedup_window(self, group: str, size: int) -> DurableDedupWindow:
        """The handled-id window of ``group``, kept in this log's file.

        Raises:
            TopologyError: ``size`` < 1.
        """
        window = DurableDedupWindow(self.store, group, size)
        self.log.dedup[group] = window  # never dead-letter what it holds
        return window

    def saga_store(self, saga: str) -> SqliteSagaStore:
        """The instances of ``saga`` (whose channel this is), kept in this log's file."""
        return SqliteSagaStore(self.file, self.store.id, self.name, saga)

    # -- dead letters (the DeadLetters capability): rows of reactor_deadletters ------------

    def dead_letters(self, group: str | None = None, limit: int | None = None) -> list[DeadLetter]:
        """The letters in the file, oldest first; their id is ``group:offset``.

        Raises:
            UnknownGroupError: ``group`` is not declared on this channel.
            SystemStoppedError: the channel was closed.
        """
        check_letter_group(self.config, group)
        self._check_open()
        return [self._letter(row) for row in self.store.dead_letters(group, limit)]

    def redrive(self, ids: Collection[str] | None = None, group: str | None = None) -> int:
        """Append the chosen letters' events again, each for its own group only.

        One transaction appends them at new offsets, marks them acked for every
        other group the file knows (so only the group that gave up on an event is
        given it again, now or after a restart, with its attempts starting over),
        and deletes the letters; then the channel actor is told, as of a publish.

        Raises:
            UnknownGroupError: ``group`` is not declared on this channel.
            UnknownDeadLetterError: an id names no letter; nothing was redriven.
            SystemStoppedError: the channel was closed.
        """
        chosen = self._chosen(ids, group)
        rows: list[tuple[str, str, str | None, bytes, int]] = []
        events: list[Event] = []
        for letter in chosen:
            try:
                event = codec.decode(letter[6])
            except DecodeError:
                continue  # bytes that are no event cannot be delivered: purge them
            rows.append((letter[0], event.topic, event.key, letter[6], letter[1]))
            events.append(event)
        if not rows:
            return 0
        self.gate.hold(len(rows))  # one credit each, for its one group; never waits
        try:
            with self.file.lock:
                self._check_open()
                now = max(self.clock.wall(), self._last_appended)
                self._last_appended = now
                first = self._head + 1
                self.store.redrive(first, now, rows)
                self._head = first + len(rows) - 1
                self.log.stored_letters -= len(rows)
                self.address.tell(Appended(first, tuple(events), tuple(r[0] for r in rows)))
        except BaseException:
            self.gate.release(len(rows))
            raise
        return len(rows)

    def purge(self, ids: Collection[str] | None = None, group: str | None = None) -> int:
        """Delete the chosen letters from the file.

        Raises:
            UnknownGroupError: ``group`` is not declared on this channel.
            UnknownDeadLetterError: an id names no letter; nothing was purged.
            SystemStoppedError: the channel was closed.
        """
        chosen = self._chosen(ids, group)
        if not chosen:
            return 0
        with self.file.lock:
            self._check_open()
            self.store.delete_dead_letters([(row[0], row[1]) for row in chosen])
            self.log.stored_letters -= len(chosen)
        return len(chosen)

    def _chosen(self, ids: Collection[str] | None, group: str | None) -> list[DeadLetterRow]:
        self._check_open()
        return choose_letters(
            self.config, ids, group, lambda g: self.store.dead_letters(g, None), _row_id
        )

    def _letter(self, row: DeadLetterRow) -> DeadLetter:
        group, seq, attempts, error_type, message, traceback, body, consumer, dead_at = row
        try:
            event: Event | None = codec.decode(body)
        except DecodeError:
            event = None
        return DeadLetter(
            id=_letter_id(group, seq),
            channel=self.name,
            group=group,
            consumer=consumer,
            event=event,
            raw=bytes(body) if event is None else None,
            where={"offset": seq},
            error_type=error_type,
            message=message,
            traceback=traceback,
            attempts=attempts,
            time=DeadLetter.stamp(dead_at),
        )

    def _check_open(self) -> None:
        if self._closed:
            raise SystemStoppedError(
                f"channel {self.name!r} is closed (its system stopped); start the system "
                "again to reach its dead letters"
            )

    @property
    def head(self) -> int:
        """The last offset appended to this channel's log."""
        return self._head


def _letter_id(group: str, seq: int) -> str:
    """A letter's id: its group and offset (a group dead-letters an offset at most once)."""
    return f"{group}:{seq}"


def _row_id(row: DeadLetterRow) -> str:
    return _letter_id(row[0], row[1])


class SqliteBackend:
    """Opens ``sqlite:`` channels.

    Append times (for ``start=datetime``, replay by time and ``max_age``) are the
    wall time of the system's clock.
    """

    scheme = "sqlite"

    def open(self, config: ChannelConfig, services: ChannelServices) -> SqliteChannel:
        """Open the channel's log (creating the file if needed).

        Raises:
            TopologyError: bad URL or option.
            LogLockedError: another process writes this log.
            LogFormatError: the file is not a reactor log.
        """
        return SqliteChannel(config, services)
