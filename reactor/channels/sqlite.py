"""The ``sqlite`` backend: a durable, append-only log per channel in one SQLite file.

URL: ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``, with
options in the query string::

    sqlite:///data/orders.db?synchronous=full&max_events=1000000&max_age=86400

=================  ==========================================================
option             meaning
=================  ==========================================================
``synchronous``    ``normal`` (default) or ``full``. The log runs in WAL mode;
                   with ``normal`` a commit survives a crash of the *process*
                   (even ``SIGKILL``) but the last commits may be lost if the
                   *machine* loses power; ``full`` fsyncs every commit and
                   survives power loss too, at a cost in append throughput.
``max_events``     retention: keep at most this many events in the log (the
                   oldest go first; checked as the log grows, with 10% slack).
``max_age``        retention: delete events appended more than this many
                   seconds ago (checked every ``max_age / 4`` s, at most 60 s).
=================  ==========================================================

Several channels may share one file: every table has a ``channel`` column.

**What is stored.** Each event gets the next offset (``seq``, from 1, never
reused) and is written (JSON, :class:`~reactor.messages.codecs.JsonCodec`,
never pickle) with its topic and append time *in the publisher's thread*,
before ``publish()`` returns: one transaction per batch. Each group stores a
committed offset, the watermark below which every event it routes has been
settled (acked, dead-lettered, dropped or expired). Above the watermark, each
delivery's attempt count and each ack are stored too, so after a restart a
group resumes at its watermark, skips what it already acked, and gets back
what was delivered but not acked *with its attempt count*: a delivery that
never came back counts as a spent attempt, so an event that kills the process
every time is dead-lettered after ``max_deliveries`` restarts instead of
killing it forever. Dead letters are also kept in the ``reactor_deadletters``
table, since the ``$system`` channel they are published on is in memory.

**Where a new group starts** (``start=`` of ``consumer()`` / ``pool()``):
``"earliest"`` (the default: a group never seen before gets every event
still in the log, so nothing stored is lost to it), ``"latest"`` (only
events published from now on), an offset (``int``: the first offset to
deliver), or a ``datetime`` (the first event appended at or after it; naive
means UTC). A group the log already knows resumes where it left off, whatever
``start`` says; :meth:`SqliteChannel.replay` (``System.replay``) rewinds it.

**Capacity.** A publisher takes one credit per event; on this backend the
channel keeps one credit per *(event, group that routes it)* until that group
settles it, taking the extra credits without waiting. So ``capacity`` bounds
the deliveries owed, and memory stays bounded however many groups there are.
At open, the events the declared groups still owe from earlier runs are
counted too (``wait_idle`` waits for them), and memory holds only a window of
them, paged from the file as demand arrives.

**Decoding.** An event read back from the file that one group routes is
delivered still encoded (a :class:`~reactor.messages.control.Encoded`: the
stored bytes and the key, kept in its own column so per-key order needs no
decoding). Its consumer decodes it in its own thread just before the handler
runs, so the event is made and dropped by one thread, and the window holds
bytes rather than objects. An event several groups route is decoded once by
the channel and shared. Bytes that are no event (a damaged row) are
dead-lettered at once, with the bytes and their offset (``$deadletter`` data:
``event`` None, ``raw``, ``offset``), once per group that routes them.

**Retention** never deletes an event a group has not settled silently: it is
reported as a ``$system.retention.forced`` event (data: channel, group, count,
first and last offset) and counted in :attr:`GroupStats.expired` /
:attr:`ChannelStats.expired`; the group moves past the deleted events.

**One writer.** A process that opens a log holds ``<file>.lock`` with
``flock`` until it closes it; another process gets :class:`LogLockedError`.
A file that is not a reactor log gets :class:`LogFormatError`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from itertools import repeat
from typing import Any
from urllib.parse import parse_qs

import attrs

from reactor.actors.address import Address
from reactor.actors.base import ActorContext, ReactorActor
from reactor.channels import groups as membership
from reactor.channels.backend import ChannelConfig, ChannelServices, ChannelStats, GroupSpec
from reactor.channels.dedup import DedupWindow
from reactor.channels.gate import CapacityGate
from reactor.channels.groups import Counters, Group, Member, channel_stats, find_member
from reactor.channels.registry import register_backend
from reactor.channels.sqlite_store import (
    LogFormatError,
    LogLockedError,
    LogStore,
    Synchronous,
    open_store,
    release_store,
)
from reactor.errors import DecodeError, SystemStoppedError, TopologyError
from reactor.messages import lifecycle
from reactor.messages.codecs import JsonCodec
from reactor.messages.control import (
    Ack,
    Deliver,
    Encoded,
    ErrorInfo,
    Join,
    Leave,
    Nack,
    decoded,
)
from reactor.messages.event import Event

__all__ = [
    "RETENTION_FORCED",
    "DurableDedupWindow",
    "LogFormatError",
    "LogLockedError",
    "SqliteBackend",
    "SqliteChannel",
    "SqliteOptions",
    "StartPosition",
    "parse_url",
]

logger = logging.getLogger("reactor")

RETENTION_FORCED = lifecycle.RETENTION_FORCED

StartPosition = str | int | datetime

# Rows read from the file per page, and the most events one group keeps in memory
# ahead of its watermark (at least this, or the channel's capacity if larger).
_PAGE = 512
_MIN_WINDOW = 1024
# Acks are written lazily (when the mailbox is empty, before any delivery, or past this).
_ACK_FLUSH = 4096
_ASK_TIMEOUT_S = 30.0

_codec = JsonCodec()


# -- options -----------------------------------------------------------------------


@attrs.frozen(slots=True)
class SqliteOptions:
    """What a ``sqlite:`` URL says: the file and its options."""

    path: str
    synchronous: Synchronous = "normal"
    max_events: int | None = None
    max_age: float | None = None


def parse_url(url: str, channel: str = "?") -> SqliteOptions:
    """Parse ``sqlite:///path.db?option=value``.

    Raises:
        TopologyError: malformed URL or an unknown or bad option; names the channel.
    """
    what = f"channel {channel!r}"
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise TopologyError(
            f"{what}: sqlite backend URL {url!r} must look like sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db"
        )
    path, _, query = url[len(prefix) :].partition("?")
    if not path or path.endswith("/"):
        raise TopologyError(f"{what}: sqlite backend URL {url!r} names no file")
    options: dict[str, Any] = {}
    for name, values in parse_qs(query, keep_blank_values=True, strict_parsing=False).items():
        value = values[-1]
        if name == "synchronous":
            if value.lower() not in ("normal", "full"):
                raise TopologyError(
                    f"{what}: synchronous must be 'normal' or 'full', got {value!r}"
                )
            options[name] = value.lower()
        elif name == "max_events":
            if not value.isdigit() or int(value) < 1:
                raise TopologyError(f"{what}: max_events must be a positive integer, got {value!r}")
            options[name] = int(value)
        elif name == "max_age":
            try:
                age = float(value)
            except ValueError:
                age = -1.0
            if not age > 0:
                raise TopologyError(
                    f"{what}: max_age must be a positive number of seconds, got {value!r}"
                )
            options[name] = age
        else:
            raise TopologyError(
                f"{what}: unknown sqlite option {name!r} in {url!r}; known: max_age, max_events, synchronous"
            )
    return SqliteOptions(path, **options)


# -- internal messages -------------------------------------------------------------


@attrs.frozen(slots=True)
class _Appended:
    """Events stored at offsets ``first ..``; sent by ``send`` in offset order."""

    first: int
    events: tuple[Event, ...]


@attrs.frozen(slots=True)
class _Replay:
    group: str
    start: Any


@attrs.frozen(slots=True)
class _Retain:
    """Enforce retention now (timer or test); the reply is how many events were deleted."""

    now: float | None = None
    timer: bool = False


# -- state -------------------------------------------------------------------------


class _Group(Group[Event | Encoded]):
    """One declared group: its position in the log and the window it holds in memory.

    ``events`` holds the routed seqs in (committed, cursor] not settled yet
    (queued or in flight), with their events.
    """

    __slots__ = (
        "acked_unflushed",
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
        # ever delivered, and after a restart every unsettled offset up to it counts one
        # spent attempt. Redeliveries (attempt > 1) get a row each in reactor_pending.
        self.delivered_hwm = delivered
        self.flushed_hwm = delivered
        self.recovered_hwm = delivered
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


class _State(Counters):
    """Everything the channel actor owns; survives restarts of the actor."""

    def __init__(self, groups: dict[str, _Group], head: int, low: int) -> None:
        super().__init__()
        self.groups = groups
        self.head = head  # last offset the actor has heard of
        self.low = low  # first offset still in the file (head + 1 when empty)
        self.deliveries: list[tuple[int, str, int, int]] = []
        self.deadletters: list[tuple[Any, ...]] = []
        self.dirty: set[_Group] = set()
        self.outbox: list[tuple[Address, Deliver]] = []
        self.release = 0


# -- the handle --------------------------------------------------------------------


class SqliteChannel:
    """Handle of one channel whose log lives in a SQLite file.

    Thread-safety: :meth:`send`, :meth:`stats`, :meth:`replay` and
    :meth:`dedup_window` may be called from any thread.
    """

    def __init__(
        self,
        config: ChannelConfig,
        services: ChannelServices,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = config.name
        self.config = config
        self.services = services
        self.options = parse_url(config.backend, config.name)
        self.wall_clock = wall_clock
        self.gate = CapacityGate(config.name, config.capacity, config.overflow, services.on_idle)
        self.address = Address(f"channel:{config.name}")
        self.window = max(_MIN_WINDOW, config.capacity)
        self._routes: dict[str, tuple[_Group, ...]] = {}
        self._closed = False
        self.store: LogStore = open_store(self.options.path, self.options.synchronous, config.name)
        try:
            self.channel_id, self._head = self.store.channel_id(config.name)
            self.reader = self.store.reader()
            self._last_appended = self._read_last_appended()
            self.state = self._recover()
        except BaseException:
            release_store(self.store, config.name)
            raise

    # -- opening ---------------------------------------------------------------------

    def _read_last_appended(self) -> float:
        row = self.reader.execute(
            "SELECT appended FROM reactor_log WHERE channel = ? ORDER BY seq DESC LIMIT 1",
            (self.channel_id,),
        ).fetchone()
        return float(row[0]) if row else 0.0

    def _recover(self) -> _State:
        cid = self.channel_id
        head = self._head
        row = self.reader.execute(
            "SELECT min(seq) FROM reactor_log WHERE channel = ?", (cid,)
        ).fetchone()
        low = int(row[0]) if row[0] is not None else head + 1
        known = {
            name: (committed, delivered)
            for name, committed, delivered in self.reader.execute(
                "SELECT grp, committed, delivered FROM reactor_groups WHERE channel = ?", (cid,)
            )
        }
        groups: dict[str, _Group] = {}
        new_rows = []
        for spec in self.config.groups:
            if spec.name in known:
                committed, delivered = (int(v) for v in known[spec.name])
            else:
                committed = self._position(spec.start, low, head, f"group {spec.name!r}")
                delivered = committed
                new_rows.append((cid, spec.name, committed))
            groups[spec.name] = _Group(spec, self.name, committed, delivered)
        if new_rows:
            with self.store.transaction() as db:
                db.executemany(
                    "INSERT INTO reactor_groups(channel, grp, committed) VALUES (?, ?, ?)", new_rows
                )
        owed = 0
        for group in groups.values():
            for seq, attempts, topic in self.reader.execute(
                "SELECT p.seq, p.attempts, l.topic FROM reactor_pending p JOIN reactor_log l "
                "ON l.channel = p.channel AND l.seq = p.seq "
                "WHERE p.channel = ? AND p.grp = ? AND p.seq > ?",
                (cid, group.name, group.committed),
            ):
                # Rows at or below the watermark are deleted with it, so these are all there are.
                group.pending_max = max(group.pending_max, seq)
                if not group.matches(topic):
                    continue
                if attempts < 0:
                    group.preacked.add(seq)
                else:
                    group.attempts[seq] = attempts
            group.owed = self._count_routed(group, group.committed, head) - len(group.preacked)
            owed += group.owed
        if owed:
            # What earlier runs left unsettled: wait_idle waits for it, publishers make room for it.
            self.gate.acquire(owed, None, overdraft=True)
        return _State(groups, head, low)

    def _position(self, start: Any, low: int, head: int, what: str) -> int:
        """The committed offset for a group starting at ``start``: one before its first event."""
        if start == "earliest":
            return low - 1
        if start == "latest":
            return head
        if isinstance(start, int) and not isinstance(start, bool) and start >= 0:
            return min(max(start - 1, low - 1), head)
        if isinstance(start, datetime):
            when = start if start.tzinfo is not None else start.replace(tzinfo=UTC)
            return self._first_at_or_after(when.timestamp(), low, head) - 1
        raise ValueError(
            f"channel {self.name!r}, {what}: start must be 'earliest', 'latest', an offset >= 0 "
            f"or a datetime, got {start!r}"
        )

    def _first_at_or_after(self, timestamp: float, low: int, head: int) -> int:
        # Append times never decrease with the offset (send() makes sure), and offsets in
        # [low, head] are contiguous, so a binary search over point reads finds the first.
        lo, hi = low, head + 1
        while lo < hi:
            mid = (lo + hi) // 2
            row = self.reader.execute(
                "SELECT appended FROM reactor_log WHERE channel = ? AND seq = ?",
                (self.channel_id, mid),
            ).fetchone()
            if row is None or row[0] >= timestamp:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def _count_routed(self, group: _Group, after: int, upto: int) -> int:
        if upto <= after:
            return 0
        total = 0
        for topic, count in self.reader.execute(
            "SELECT topic, count(*) FROM reactor_log WHERE channel = ? AND seq > ? AND seq <= ? GROUP BY topic",
            (self.channel_id, after, upto),
        ):
            if group.matches(topic):
                total += count
        return total

    def routes(self, topic: str) -> tuple[_Group, ...]:
        groups = self._routes.get(topic)
        if groups is None:
            groups = tuple(g for g in self.state.groups.values() if g.matches(topic))
            self._routes[topic] = groups
        return groups

    # -- the Channel protocol --------------------------------------------------------

    def start_actor(self, context: ActorContext) -> ReactorActor:
        return _SqliteChannelActor.spawn(context, self)

    def send(self, events: tuple[Event, ...]) -> None:
        """Append ``events`` to the log (one transaction) and hand them to the actor.

        Runs in the publisher's thread and returns once the events are committed.

        Raises:
            SystemStoppedError: the channel was closed.
            TypeError: an event's data has no JSON form (nothing was stored).
        """
        bodies = [_codec.encode(event) for event in events]  # outside the lock: the costly part
        extra = 0
        unrouted = 0
        for event in events:
            fanout = len(self.routes(event.topic))
            if fanout == 0:
                unrouted += 1
            else:
                extra += fanout - 1
        if extra:
            # One credit per (event, group): never wait here, the publisher already did.
            self.gate.acquire(extra, None, overdraft=True)
        try:
            with self.store.lock:
                if self._closed:
                    raise SystemStoppedError(
                        f"channel {self.name!r} is closed; it accepts no more events"
                    )
                now = self.wall_clock()
                now = max(now, self._last_appended)  # keep append times monotonic in the offset
                self._last_appended = now
                first = self._head + 1
                cid = self.channel_id
                rows = [
                    (cid, first + i, now, event.topic, event.key, body)
                    for i, (event, body) in enumerate(zip(events, bodies, strict=True))
                ]
                db = self.store.writer
                db.execute("BEGIN IMMEDIATE")
                try:
                    db.executemany(
                        "INSERT INTO reactor_log(channel, seq, appended, topic, key, body) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        rows,
                    )
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                self._head = first + len(events) - 1
                # Counted here, not in the actor: unrouted events settle before it hears of them.
                state = self.state
                state.published += len(events)
                state.unrouted += unrouted
                # Under the lock, so the actor hears of appends in offset order.
                self.address.tell(_Appended(first, events))
        except BaseException:
            if extra:
                self.gate.release(extra)
            raise
        if unrouted:
            self.gate.release(unrouted)  # nobody routes them: settled on arrival, kept in the log

    def stats(self) -> ChannelStats:
        groups = tuple(
            g.stats(backlog=max(0, g.owed - g.in_flight()), expired=g.expired)
            for g in list(self.state.groups.values())
        )
        return channel_stats(self.name, "sqlite", self.gate, self.state, groups)

    def close(self) -> None:
        """Write what is still buffered, close the connections, release the file lock."""
        with self.store.lock:
            if self._closed:
                return
            self._closed = True
        try:
            _flush(self, self.state)
        except Exception:
            logger.exception("channel %r: could not write its last offsets on close", self.name)
        finally:
            self.reader.close()
            release_store(self.store, self.name)

    # -- beyond the protocol -----------------------------------------------------------

    def replay(self, group: str, from_: StartPosition = "earliest") -> int:
        """Rewind ``group`` so that it gets every event from ``from_`` on again.

        Args:
            group: a group declared on this channel.
            from_: ``"earliest"``, ``"latest"``, an offset, or a ``datetime``.

        Returns:
            The first offset the group will be given (``head + 1`` if none).

        Raises:
            LookupError: no such group. ValueError: bad ``from_``.
        """
        return int(self.address.ask(_Replay(group, from_), timeout=_ASK_TIMEOUT_S))

    def enforce_retention(self, now: float | None = None) -> int:
        """Apply ``max_events`` / ``max_age`` now (as of wall time ``now``); returns events deleted."""
        return int(self.address.ask(_Retain(now), timeout=_ASK_TIMEOUT_S))

    def dedup_window(self, group: str, size: int) -> DurableDedupWindow:
        """The handled-id window of ``group``, kept in this log's file.

        Raises:
            ValueError: ``size`` < 1.
        """
        return DurableDedupWindow(self.store, self.channel_id, group, size)

    @property
    def head(self) -> int:
        """The last offset appended to this channel's log."""
        return self._head


# -- the actor ---------------------------------------------------------------------


class _SqliteChannelActor(ReactorActor):
    def __init__(self, context: ActorContext, channel: SqliteChannel) -> None:
        super().__init__(context)
        self.channel = channel
        self.state = channel.state
        self.gate = channel.gate
        self.max_batch = channel.config.max_batch
        self.window = channel.window
        self.timer: Any = None

    def on_start(self) -> None:
        self._arm_timer()

    def on_stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        _flush(self.channel, self.state)
        self._send_outbox()

    def on_crash(self, reason: Any) -> None:
        if self.timer is not None:
            self.timer.cancel()

    def _arm_timer(self) -> None:
        age = self.channel.options.max_age
        if age is None:
            return
        address = self.actor_address
        self.timer = self.actor_clock.call_later(
            min(60.0, age / 4), lambda: address.tell(_Retain(timer=True))
        )

    def on_receive(self, message: Any) -> Any:
        kind = type(message)
        reply: Any = None
        if kind is _Appended:
            self._appended(message)
        elif kind is Ack:
            self._ack(message)
        elif kind is Nack:
            self._nack(message)
        elif kind is Join:
            reply = self._join(message)
        elif kind is Leave:
            self._leave(message)
        elif kind is _Replay:
            reply = self._replay(message)
        elif kind is _Retain:
            reply = self._retain(message.now)
            if message.timer:
                self._arm_timer()
        else:
            return super().on_receive(message)
        self._end_of_message()
        return reply

    def _end_of_message(self) -> None:
        state = self.state
        if state.outbox or state.deadletters:
            _flush(self.channel, state)  # attempts must be on disk before the deliveries leave
            self._send_outbox()
        elif state.dirty and (self.actor_address.depth() == 0 or _unflushed(state) > _ACK_FLUSH):
            _flush(self.channel, state)
        if state.release:
            released, state.release = state.release, 0
            self.gate.release(released)

    def _send_outbox(self) -> None:
        outbox, self.state.outbox = self.state.outbox, []
        for address, deliver in outbox:
            address.tell(deliver)

    # -- appends -----------------------------------------------------------------------

    def _appended(self, message: _Appended) -> None:
        state = self.state
        first = message.first
        events = message.events
        last = first + len(events) - 1
        state.head = last
        routes = self.channel.routes
        taken: dict[_Group, bool] = {}
        for offset, event in enumerate(events):
            groups = routes(event.topic)
            if not groups:
                continue
            seq = first + offset
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
        for group in state.groups.values():
            if taken.get(group, group.cursor == first - 1):
                group.cursor = last
        if self.gate.overflow == "drop_oldest" and self.gate.over_capacity:
            self._evict_oldest()
        max_events = self.channel.options.max_events
        if max_events is not None and state.head - state.low + 1 > max_events + max_events // 10:
            self._retain(None)
        for group in taken:
            self._dispatch(group)

    def _take(self, group: _Group, seq: int, event: Event | Encoded) -> None:
        group.outstanding.append(seq)
        group.events[seq] = event
        if seq <= group.recovered_hwm and seq not in group.attempts:
            group.attempts[seq] = 1  # delivered before the restart, never settled
        group.place(seq, event.key)

    def _take_page(
        self, group: _Group, seqs: list[int], items: Sequence[Event | Encoded], keyed: bool
    ) -> None:
        """:meth:`_take` for a page of rising seqs, in bulk when none is keyed or recovered."""
        if keyed or seqs[0] <= group.recovered_hwm:
            for seq, item in zip(seqs, items, strict=True):
                self._take(group, seq, item)
            return
        group.outstanding += seqs
        group.events.update(zip(seqs, items, strict=True))
        group.shared += seqs

    def _page(self, group: _Group) -> None:
        """Read the next events ``group`` routes from the file, up to its window.

        An event only this group routes stays :class:`Encoded`: its consumer decodes
        it. One that several groups route is decoded here once, and the groups
        share the :class:`Event`.
        """
        state = self.state
        routes = self.channel.routes
        while group.cursor < state.head and len(group.outstanding) < self.window:
            rows = self.channel.reader.execute(
                "SELECT seq, topic, key, body FROM reactor_log "
                "WHERE channel = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                (self.channel.channel_id, group.cursor, state.head, _PAGE),
            ).fetchall()
            if not rows:
                group.cursor = state.head  # deleted by retention meanwhile
                break
            rows = rows[: self.window - len(group.outstanding)]
            seqs, topics, keys, bodies = zip(*rows, strict=True)
            fanout: dict[str, int] = {}  # topic -> groups routing it, 0 if not this one
            for topic in set(topics):
                groups = routes(topic)
                fanout[topic] = len(groups) if group in groups else 0
            if set(fanout.values()) == {1} and not group.preacked:
                # The usual page: every event on it is this group's alone. Built in
                # bulk, by C loops (tuple.__new__ makes an Encoded without the named
                # tuple's Python constructor).
                items = list(map(tuple.__new__, repeat(Encoded), zip(keys, bodies, repeat(_codec))))
                group.cursor = seqs[-1]
                self._take_page(group, list(seqs), items, keys.count(None) < len(keys))
            else:
                self._take_rows(group, rows, fanout)
        self._advance(group)

    def _take_rows(
        self, group: _Group, rows: list[tuple[int, str, str | None, bytes]], fanout: dict[str, int]
    ) -> None:
        """:meth:`_page` for a page that is not all this group's alone: row by row."""
        others = [g.events for g in self.state.groups.values() if g is not group]
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
            event = None if shared == 1 else self._shared_event(others, seq, body)
            # (Undecodable bytes stay Encoded too: the consumer dead-letters them.)
            items.append(Encoded(key, body, _codec) if event is None else event)
            seqs.append(seq)
            keyed = keyed or key is not None
        if seqs:
            self._take_page(group, seqs, items, keyed)

    @staticmethod
    def _shared_event(
        others: list[dict[int, Event | Encoded]], seq: int, body: bytes
    ) -> Event | None:
        """The event at ``seq``, from a group that holds it decoded, or decoded now.

        None if the bytes are not an event.
        """
        for held in others:
            event = held.get(seq)
            if isinstance(event, Event):
                return event
        try:
            return _codec.decode(body)
        except DecodeError:
            return None

    # -- delivery ------------------------------------------------------------------------

    def _dispatch(self, group: _Group) -> None:
        for _ in range(1024):  # each round delivers or pages, or we stop; the cap is a safety net
            demand = sum(m.demand for m in group.order)
            if demand <= 0:
                return
            paged = False
            if (
                group.cursor < self.state.head
                and len(group.outstanding) < self.window
                and group.queued() < max(demand, self.max_batch)
            ):
                before = group.cursor
                self._page(group)
                paged = group.cursor != before
            progressed = False
            for member in group.turn():
                if (
                    member.demand > 0
                    and (member.keyed or group.shared)
                    and self._fill(group, member)
                ):
                    progressed = True
            if not (progressed or paged):
                return

    def _fill(self, group: _Group, member: Member) -> bool:
        abandoned: list[tuple[int, int]] = []
        deliver = group.fill(member, self.max_batch, abandoned)
        for seq, spent in abandoned:
            # Delivered that many times in earlier runs and never settled: the process
            # stopped each time (a poison event?). Dead-letter it rather than loop.
            error = ErrorInfo(
                "DeliveryAbandoned",
                f"delivered {spent} times to group {group.name!r} without being acked or "
                "nacked: the process stopped while it was in flight each time",
                "",
            )
            self._dead_letter(group, seq, group.events[seq], error, spent, consumer="")
        if abandoned:
            self._advance(group)
        if deliver is None:
            return bool(abandoned)
        state = self.state
        state.delivered += len(deliver.seqs)
        if max(deliver.attempts) == 1:
            # First deliveries only (the usual case): the batch's seqs rise, so the last is
            # the highest.
            group.delivered_hwm = max(group.delivered_hwm, deliver.seqs[-1])
        else:
            cid = self.channel.channel_id
            for seq, n in zip(deliver.seqs, deliver.attempts, strict=True):
                if n > 1:
                    state.deliveries.append((cid, group.name, seq, n))
                elif seq > group.delivered_hwm:
                    group.delivered_hwm = seq
        state.dirty.add(group)
        state.outbox.append((member.address, deliver))
        return True

    # -- settlement ------------------------------------------------------------------------

    def _settle(self, group: _Group, seqs: list[int]) -> None:
        """``group`` is done with ``seqs``: acked, dead-lettered, dropped or expired."""
        forget = group.events.pop
        for seq in seqs:
            forget(seq, None)
        group.owed -= len(seqs)
        group.acked_unflushed += seqs
        self.state.release += len(seqs)

    def _advance(self, group: _Group) -> None:
        """Move the watermark over the unbroken run of settled events at its front."""
        outstanding = group.outstanding
        unsettled = group.events
        while outstanding and outstanding[0] not in unsettled:
            outstanding.popleft()
        committed = outstanding[0] - 1 if outstanding else group.cursor
        if committed != group.committed:
            group.committed = committed
        if group.committed != group.flushed or group.acked_unflushed:
            self.state.dirty.add(group)

    def _ack(self, ack: Ack) -> None:
        found = find_member(self.state.groups, ack.group, ack.member, ack.epoch)
        if found is None:
            return
        group, member = found
        seqs: Iterable[int] = ack.seqs
        ghosts = group.ghosts.get(member.name)
        if ghosts:
            fresh = []
            for seq in seqs:
                if seq in ghosts:
                    ghosts.discard(seq)  # held from before a replay: only its demand comes back
                    member.demand += 1
                else:
                    fresh.append(seq)
            seqs = fresh
        settled = group.ack(member, seqs)
        self.state.acked += len(settled)
        self._settle(group, settled)
        self._advance(group)
        self._dispatch(group)

    def _nack(self, nack: Nack) -> None:
        found = find_member(self.state.groups, nack.group, nack.member, nack.epoch)
        if found is None:
            return
        group, member = found
        ghosts = group.ghosts.get(member.name)
        if ghosts and nack.seq in ghosts:
            ghosts.discard(nack.seq)
            member.demand += 1
            self._dispatch(group)
            return
        attempt, event = group.nack(member, nack.seq, final=nack.final)
        if not attempt:
            return
        if event is not None and (nack.final or attempt >= group.max_deliveries):
            self._dead_letter(group, nack.seq, event, nack.error, attempt, nack.consumer)
            self._advance(group)
        self._dispatch(group)

    def _dead_letter(  # noqa: PLR0917 - private helper; each argument is a distinct fact of the letter
        self,
        group: _Group,
        seq: int,
        item: Event | Encoded,
        error: ErrorInfo,
        attempts: int,
        consumer: str,
    ) -> None:
        state = self.state
        channel = self.channel
        group.dead_lettered += 1
        state.dead_lettered += 1
        body = item.body if isinstance(item, Encoded) else _codec.encode(item)
        state.deadletters.append(
            (
                channel.channel_id,
                group.name,
                seq,
                attempts,
                error.type,
                error.message,
                error.traceback,
                body,
            )
        )
        letter = lifecycle.dead_letter_of(
            item,
            error,
            where={"offset": seq},
            attempts=attempts,
            consumer=consumer,
            group=group.name,
            channel=channel.name,
        )
        # Published before it is settled: a crash in between can duplicate it, not lose it.
        channel.services.publish_system(letter)
        self._settle(group, [seq])

    def _evict_oldest(self) -> None:
        excess = self.gate.over_capacity
        candidates: list[tuple[int, _Group]] = []
        for group in self.state.groups.values():
            queues = [group.shared, group.orphans, *(m.keyed for m in group.order)]
            candidates += [(seq, group) for queue in queues for seq in queue if seq in group.events]
        candidates.sort(key=lambda item: item[0])
        for seq, group in candidates[:excess]:
            item = group.events.get(seq)
            if item is None:
                continue
            self.state.dropped += 1
            event = decoded(item)
            if event is not None:  # bytes that are no event are dropped all the same
                self.channel.services.publish_system(
                    lifecycle.dropped(event, channel=self.channel.name, policy="drop_oldest")
                )
            group.attempts.pop(seq, None)
            self._settle(group, [seq])  # its queue entry is skipped lazily
        for group in self.state.groups.values():
            self._advance(group)

    # -- membership ------------------------------------------------------------------------

    def _join(self, join: Join) -> int:
        group, member = membership.join(self.state.groups, join, self.channel.name)
        # A new incarnation owes nothing for what the old one held before a replay.
        group.ghosts.pop(member.name, None)
        self._dispatch(group)
        return member.epoch

    def _leave(self, leave: Leave) -> None:
        group = membership.leave(self.state.groups, leave)
        if group is not None:
            group.ghosts.pop(leave.member, None)
            self._dispatch(group)

    # -- replay and retention ----------------------------------------------------------------

    def _replay(self, replay: _Replay) -> int:
        state = self.state
        channel = self.channel
        group = state.groups.get(replay.group)
        if group is None:
            known = ", ".join(sorted(state.groups)) or "none"
            raise LookupError(
                f"channel {channel.name!r} has no group {replay.group!r} (groups: {known})"
            )
        position = channel._position(
            replay.start, state.low, state.head, f"replay of group {group.name!r}"
        )
        owed = channel._count_routed(group, position, state.head)
        if owed:
            self.gate.acquire(owed, None, overdraft=True)  # before the release: never look idle
        # Whatever members hold now is theirs to finish; their acks only give demand back.
        for member in group.order:
            if member.in_flight:
                group.ghosts.setdefault(member.name, set()).update(member.in_flight)
                member.in_flight.clear()
            member.keyed.clear()
        state.release += group.owed
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
        group.pending_max = 0
        with channel.store.transaction() as db:
            db.execute(
                "DELETE FROM reactor_pending WHERE channel = ? AND grp = ?",
                (channel.channel_id, group.name),
            )
            db.execute(
                "UPDATE reactor_groups SET committed = ?, delivered = ? WHERE channel = ? AND grp = ?",
                (position, position, channel.channel_id, group.name),
            )
        group.flushed = position
        self._dispatch(group)
        return position + 1

    def _retain(self, now: float | None) -> int:
        state = self.state
        channel = self.channel
        options = channel.options
        cid = channel.channel_id
        cutoff = state.low  # first offset to keep
        if options.max_events is not None:
            cutoff = max(cutoff, state.head - options.max_events + 1)
        if options.max_age is not None:
            wall = channel.wall_clock() if now is None else now
            cutoff = max(
                cutoff, channel._first_at_or_after(wall - options.max_age, state.low, state.head)
            )
        if cutoff <= state.low:
            return 0
        last = cutoff - 1
        forced: list[tuple[str, int, int]] = []  # group, events it loses, first offset lost
        for group in state.groups.values():
            if group.committed >= last:
                continue
            lost = 0
            for queue in (group.shared, group.orphans, *(m.keyed for m in group.order)):
                doomed = [s for s in queue if s <= last and s in group.events]
                self._settle(group, doomed)
                lost += len(doomed)
            if group.cursor < last:
                unread = channel._count_routed(group, group.cursor, last)
                group.owed -= unread
                state.release += unread
                lost += unread
                group.cursor = last
            group.preacked = {s for s in group.preacked if s > last}
            if lost:
                forced.append((group.name, lost, group.committed + 1))
                group.expired += lost
                state.expired += lost
            self._advance(group)
        # Groups in the file that this topology does not declare lose events too: say so.
        declared = set(state.groups)
        stale = channel.reader.execute(
            "SELECT grp, committed FROM reactor_groups WHERE channel = ? AND committed < ?",
            (cid, last),
        ).fetchall()
        for name, committed in stale:
            if name not in declared:
                lost = last - max(int(committed), state.low - 1)
                if lost > 0:
                    forced.append((name, lost, max(int(committed), state.low - 1) + 1))
                    state.expired += lost
        _flush(channel, state)
        with channel.store.transaction() as db:
            deleted = db.execute(
                "DELETE FROM reactor_log WHERE channel = ? AND seq < ?", (cid, cutoff)
            ).rowcount
            db.execute("DELETE FROM reactor_pending WHERE channel = ? AND seq < ?", (cid, cutoff))
            db.execute(
                "UPDATE reactor_groups SET committed = ? WHERE channel = ? AND committed < ?",
                (last, cid, last),
            )
            db.execute(
                "UPDATE reactor_channels SET head = max(head, ?) WHERE id = ?", (state.head, cid)
            )
        state.low = cutoff
        for name, lost, first in forced:
            logger.warning(
                "channel %r: retention deleted %d event(s) group %r had not acked (offsets %d..%d)",
                channel.name,
                lost,
                name,
                first,
                last,
            )
            channel.services.publish_system(
                Event.create(
                    RETENTION_FORCED,
                    {
                        "channel": channel.name,
                        "group": name,
                        "count": lost,
                        "first": first,
                        "last": last,
                    },
                    key=channel.name,
                    source=f"reactor/channel/{channel.name}",
                )
            )
        return int(deleted)


def _unflushed(state: _State) -> int:
    return sum(len(g.acked_unflushed) for g in state.dirty)


def _flush(channel: SqliteChannel, state: _State) -> None:
    """Write attempts, acks, watermarks and dead letters in one transaction."""
    if not (state.deliveries or state.dirty or state.deadletters):
        return
    cid = channel.channel_id
    deliveries, state.deliveries = state.deliveries, []
    deadletters, state.deadletters = state.deadletters, []
    dirty, state.dirty = state.dirty, set()
    writes: list[tuple[str, Any, bool]] = []
    pending_max: dict[str, int] = {}  # group -> highest seq given a row in reactor_pending
    if deliveries:
        writes.append(
            (
                "INSERT INTO reactor_pending(channel, grp, seq, attempts) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(channel, grp, seq) DO UPDATE SET attempts = excluded.attempts",
                deliveries,
                True,
            )
        )
        for _, name, seq, _ in deliveries:
            pending_max[name] = max(pending_max.get(name, 0), seq)
    moved: list[_Group] = []
    for group in dirty:
        acked, group.acked_unflushed = group.acked_unflushed, []
        above = [(cid, group.name, seq) for seq in acked if seq > group.committed]
        if above:
            writes.append(
                (
                    "INSERT INTO reactor_pending(channel, grp, seq, attempts) VALUES (?, ?, ?, -1) "
                    "ON CONFLICT(channel, grp, seq) DO UPDATE SET attempts = -1",
                    above,
                    True,
                )
            )
            pending_max[group.name] = max(pending_max.get(group.name, 0), *(s for _, _, s in above))
        highest = max(group.pending_max, pending_max.get(group.name, 0))
        if group.committed != group.flushed and highest > group.flushed:
            writes.append(
                (
                    "DELETE FROM reactor_pending WHERE channel = ? AND grp = ? AND seq <= ?",
                    (cid, group.name, group.committed),
                    False,
                )
            )
        if group.committed != group.flushed or group.delivered_hwm != group.flushed_hwm:
            writes.append(
                (
                    "UPDATE reactor_groups SET committed = ?, delivered = ? "
                    "WHERE channel = ? AND grp = ?",
                    (group.committed, group.delivered_hwm, cid, group.name),
                    False,
                )
            )
            moved.append(group)
    if deadletters:
        writes.append(
            (
                "INSERT OR REPLACE INTO reactor_deadletters(channel, grp, seq, attempts, "
                "error_type, message, traceback, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                deadletters,
                True,
            )
        )
    if not writes:
        return
    channel.store.write(writes)
    for name, seq in pending_max.items():
        group = state.groups[name]
        group.pending_max = max(group.pending_max, seq)
    for group in moved:
        group.flushed = group.committed
        group.flushed_hwm = group.delivered_hwm


# -- durable dedup -----------------------------------------------------------------


class DurableDedupWindow(DedupWindow):
    """A :class:`~reactor.channels.dedup.DedupWindow` whose ids are also in the log's file.

    ``add`` commits the id before it returns, so an event whose handler returned
    (and which the consumer then acks) is skipped after a restart even if its ack
    never reached the file. The window keeps the last ``size`` ids, in memory and
    on disk; opening it reloads them.

    Thread-safety: members of one group share the window; ``add`` may be called
    from any thread.
    """

    __slots__ = ("_channel", "_group", "_n", "_store")

    def __init__(self, store: LogStore, channel_id: int, group: str, size: int) -> None:
        super().__init__(size)
        self._store = store
        self._channel = channel_id
        self._group = group
        with store.lock:
            rows = store.writer.execute(
                "SELECT n, event_id FROM reactor_dedup WHERE channel = ? AND grp = ? ORDER BY n DESC LIMIT ?",
                (channel_id, group, size),
            ).fetchall()
        self._n = int(rows[0][0]) if rows else 0
        for _, event_id in reversed(rows):
            super().add(event_id)

    def add(self, event_id: str) -> None:
        store = self._store
        with store.lock:
            if event_id in self:
                return
            super().add(event_id)
            self._n += 1
            n = self._n
            db = store.writer
            try:
                db.execute("BEGIN IMMEDIATE")
            except Exception:
                # The channel closed under an abandoned handler: nothing to record any more.
                logger.debug("dedup window of group %r: log closed, id not recorded", self._group)
                return
            try:
                db.execute(
                    "INSERT OR REPLACE INTO reactor_dedup(channel, grp, n, event_id) VALUES (?, ?, ?, ?)",
                    (self._channel, self._group, n, event_id),
                )
                if n % max(1, self.size // 4) == 0:
                    db.execute(
                        "DELETE FROM reactor_dedup WHERE channel = ? AND grp = ? AND n <= ?",
                        (self._channel, self._group, n - self.size),
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise


# -- the backend -------------------------------------------------------------------


class SqliteBackend:
    """Opens ``sqlite:`` channels.

    Attributes:
        wall_clock: the time stamped on appended events (for ``start=datetime``,
            replay by time and ``max_age``); tests may replace it.
    """

    scheme = "sqlite"

    def __init__(self, wall_clock: Callable[[], float] = time.time) -> None:
        self.wall_clock = wall_clock

    def open(self, config: ChannelConfig, services: ChannelServices) -> SqliteChannel:
        """Open the channel's log (creating the file if needed).

        Raises:
            TopologyError: bad URL or option.
            LogLockedError: another process writes this log.
            LogFormatError: the file is not a reactor log.
        """
        return SqliteChannel(config, services, self.wall_clock)


BACKEND = SqliteBackend()
register_backend(BACKEND)
