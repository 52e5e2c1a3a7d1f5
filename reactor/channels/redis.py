"""The ``redis`` backend: a channel on a Redis stream, shared by many processes.

``redis://host:port/db`` (``rediss://`` for TLS; password in the URL; reactor's
own options in the query string, see :mod:`reactor.channels.redis_options`).
Needs redis-py (``pip install reactor-actors[redis]``) and Redis >= 6.2
(Debian's 7.0 is what CI runs: no XNACK, no deduplicating XADD).

Layout in Redis
---------------
* the channel is one stream, ``{prefix}:{channel}``; each entry has a field
  ``event`` holding the event as a CloudEvents 1.0 structured-mode JSON object
  (``redis-cli XRANGE`` shows it as is; an entry added by another tool in the
  same form is consumed like any other). Nothing is ever pickled. reactor also
  writes ``reactor.topic`` and ``reactor.key`` (when the event has a key) beside
  it, so that a worker can route and place an entry without decoding it;
* every group of the topology is a Redis consumer group on that stream, created
  (``XGROUP CREATE ... MKSTREAM``) when the channel is opened, starting where
  its consumer's ``start=`` says: ``earliest`` (the default: what the stream
  retains), ``latest`` (new events only) or a ``datetime``; the URL option
  ``start=$`` or ``start=0`` overrides it for every group;
* ``{prefix}:{channel}:attempts:{group}`` is a hash of entry id -> failed
  attempts, written on a ``Nack`` so that another worker, or this one after a
  restart, knows how many attempts an entry has spent.

Processes and members
---------------------
Each process (a *worker*) is one Redis consumer per group, named by the
``worker`` option (default ``{hostname}-{pid}``, or ``$REACTOR_WORKER``). Its
channel actor bridges Redis to the local members through the usual
Join/Deliver/Ack/Nack protocol, with the memory backend's local semantics: a
shared queue for unkeyed events, a keyed queue per member (crc32 of the key over
the members sorted by name), demand and epochs. A worker consumer rather than a
consumer per member keeps member restarts and pool resizes local: the entries a
member held go back to the local queues, as in memory.

Reading never blocks the actor: one thread per group that has local members
(``reactor:redis:{channel}:{group}``) runs ``XREADGROUP ... BLOCK`` for at most
``block_ms``, and only for as many entries as the actor has granted it (the
local members' free demand minus what is queued locally), then tells the actor.
An entry with ``reactor.topic`` goes to its member still encoded, and the
consumer decodes it in its own thread just before the handler (the event is
made and dropped by one thread). The reader decodes the others (written by
other clients). Either way, an entry that is not a CloudEvent is dead-lettered
with its raw bytes and the decode error, at once, and acked: it never stops the
group. Entries whose topic no pattern of the group matches are acked at once.

On its first read a worker re-reads its own pending entries (``XREADGROUP`` from
id ``0``): a worker restarted under the same ``worker`` name picks up what it
held. Every ``lease/2`` seconds the reader claims entries idle longer than
``lease`` from dead workers (``XAUTOCLAIM``); the actor keeps its own entries
fresh (``XCLAIM ... JUSTID`` every ``lease/3``) so a slow handler is not robbed.

Attempts and dead letters
-------------------------
The attempt of an entry re-read or claimed is ``max(failed attempts in the hash
+ 1, Redis delivery count)``: a worker that died holding an entry spent an
attempt. A ``Nack`` at ``max_deliveries`` publishes the ``$deadletter`` event
(``services.publish_system``) *before* the ``XACK``: a duplicate beats a loss.
An entry fetched with more attempts than ``max_deliveries`` (workers kept dying
on it) is dead-lettered without being handled again.

Capacity
--------
*Unsettled* means: in the stream and not yet acked by every group, across all
processes: ``max`` over the topology's groups of ``lag + pending`` from
``XINFO GROUPS``. A monitor thread (``reactor:redis:{channel}:monitor``) reads it
every few milliseconds while anything is unsettled, and at once after this
process acks, and sets the local gate to it plus the events this process has
taken credits for but not yet written. So ``capacity`` bounds the stream's
backlog for every publisher in every process (approximately across processes:
two publishers may both pass the gate between two readings), the overflow
policies apply as on the other backends, and ``wait_idle`` in any process waits
for the whole group backlog. ``drop_oldest`` deletes (``XDEL``, atomically in a
Lua script) the oldest entries that no group has been delivered yet, and
reports them. A declared group with no running member anywhere holds the
backlog up, as on the other backends.

Per-key ordering
----------------
Inside one worker, keyed events of a group are handled in order by one member
while membership is stable (as in memory). Across workers sharing a group,
Redis gives each read to whichever worker asks, so two workers may hold entries
of one key at the same time: **per-key order is not kept across processes**.
Run keyed groups in one worker, or make their handlers order-insensitive.

Connection loss
---------------
Reads, acks and the monitor retry with exponential backoff (50 ms to 2 s) and
keep what they could not write (acks are retried, never dropped). The first
failure publishes ``$system.channel.disconnected`` and :meth:`RedisChannel.problems`
names the outage; recovery publishes ``$system.channel.reconnected``. While the
channel is down its gate counts as full: ``block`` (and ``drop_oldest``)
publishers wait up to their timeout, ``reject`` raises ``ChannelFull``,
``drop_newest`` drops and reports. A publish already writing retries for
``publish_timeout`` seconds; an ``XADD`` whose reply was lost may be written
twice (at-least-once; consumers see the same event id).

Retention
---------
``maxlen=N`` / ``maxage=SECONDS`` trim on every ``XADD`` (``MAXLEN`` / ``MINID``).
Trimming does not care about pending entries; when a worker finds that entries
of a pending list were trimmed (re-read or claim), it acks them, counts them in
``trimmed`` and publishes ``$system.channel.trimmed`` with their ids. Entries
that no group has read yet are trimmed too, and Redis keeps no trace of them:
set ``maxlen`` well above the backlog your consumers may build up.

Thread-safety: :meth:`RedisChannel.send` and :meth:`RedisChannel.stats` may be
called from any thread; the group state belongs to the channel actor's thread.
"""

from __future__ import annotations

import datetime
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import attrs

from reactor.actors.address import Address
from reactor.actors.base import THREAD_PREFIX, ActorContext, ReactorActor
from reactor.channels import groups as membership
from reactor.channels.backend import (
    Channel,
    ChannelConfig,
    ChannelServices,
    ChannelStats,
    GroupSpec,
)
from reactor.channels.dedup import DedupWindow
from reactor.channels.gate import CapacityGate, Overflow
from reactor.channels.groups import Counters, Group, Member, channel_stats
from reactor.channels.redis_options import RedisOptions, parse_url
from reactor.clock import Timer
from reactor.errors import BackpressureTimeout, ChannelFull, DecodeError, ReactorError
from reactor.messages import lifecycle
from reactor.messages.codecs import CloudEventsCodec
from reactor.messages.control import Ack, Encoded, ErrorInfo, Join, Leave, Nack, Tick
from reactor.messages.event import Event

try:
    import redis as redis_py
    from redis import exceptions as redis_errors
except ModuleNotFoundError:  # pragma: no cover - exercised by monkeypatching in tests
    redis_py = None  # type: ignore[assignment]
    redis_errors = None  # type: ignore[assignment]

__all__ = [
    "CHANNEL_DISCONNECTED",
    "CHANNEL_RECONNECTED",
    "CHANNEL_TRIMMED",
    "FIELD",
    "RedisBackend",
    "RedisChannel",
    "RedisDedupWindow",
    "RedisUnavailable",
    "entry_seq",
    "seq_entry_id",
]

logger = logging.getLogger("reactor")

FIELD = b"event"
# Written beside the event by reactor, so that a worker can route and place an entry
# without decoding it (its consumer decodes it). Entries without them are decoded
# by the reader.
TOPIC_FIELD = b"reactor.topic"
KEY_FIELD = b"reactor.key"
CHANNEL_DISCONNECTED = "$system.channel.disconnected"
CHANNEL_RECONNECTED = "$system.channel.reconnected"
CHANNEL_TRIMMED = "$system.channel.trimmed"

_SEQ_BITS = 40
_SEQ_MASK = (1 << _SEQ_BITS) - 1
_BACKOFF_MIN_S = 0.05
_BACKOFF_MAX_S = 2.0
_POLL_BUSY_S = 0.01
_POLL_IDLE_S = 0.1
_ACK_FLUSH = 1024

# Deletes up to ARGV[1] of the oldest entries that no group (ARGV[2..]) has been
# delivered yet, atomically, so a reader cannot take one while it is deleted.
_EVICT_SCRIPT = """
local function newer(a, b)
  local am, as = string.match(a, '(%d+)-(%d+)')
  local bm, bs = string.match(b, '(%d+)-(%d+)')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am > bm or (am == bm and as > bs)
end
local top = '0-0'
local info = redis.call('XINFO', 'GROUPS', KEYS[1])
for _, group in ipairs(info) do
  local name, last
  for i = 1, #group, 2 do
    if group[i] == 'name' then name = group[i + 1] end
    if group[i] == 'last-delivered-id' then last = group[i + 1] end
  end
  for j = 2, #ARGV do
    if ARGV[j] == name and newer(last, top) then top = last end
  end
end
local victims = redis.call('XRANGE', KEYS[1], '(' .. top, '+', 'COUNT', tonumber(ARGV[1]))
for _, entry in ipairs(victims) do redis.call('XDEL', KEYS[1], entry[1]) end
return victims
"""


class RedisUnavailable(ReactorError, RuntimeError):
    """The redis backend is used but redis-py is not installed."""


def entry_seq(entry_id: bytes | str) -> int:
    """The local sequence number of a stream entry id; orders like the ids do."""
    # int() reads ASCII digits from bytes as well as from str: no decoding needed.
    millis, _, counter = (
        entry_id.partition(b"-") if isinstance(entry_id, bytes) else entry_id.partition("-")
    )
    return (int(millis) << _SEQ_BITS) | int(counter or 0)


def seq_entry_id(seq: int) -> str:
    """The stream entry id of a local sequence number."""
    return f"{seq >> _SEQ_BITS}-{seq & _SEQ_MASK}"


def _is_connection_error(exc: BaseException) -> bool:
    return redis_errors is not None and isinstance(
        exc, redis_errors.ConnectionError | redis_errors.TimeoutError
    )


# -- the gate ------------------------------------------------------------------------


class _RedisGate(CapacityGate):
    """A capacity gate whose count of unsettled events is read back from Redis.

    Thread-safety: every method may be called from any thread.
    """

    def __init__(
        self,
        channel: str,
        capacity: int,
        overflow: Overflow,
        on_idle: Callable[[], None] | None,
        where: str,
    ) -> None:
        super().__init__(channel, capacity, overflow, on_idle)
        self.acquired_total = 0  # credits ever taken
        self.resolved_total = 0  # credits whose events were written, or failed to be
        self.writing = 0  # writes under way
        self.write_starts = 0  # writes ever started
        self.down: str | None = None  # why Redis is unreachable, while it is
        self.where = where

    def _take(self, count: int) -> int:
        self.acquired_total += count
        return super()._take(count)

    def resolve(self, count: int) -> None:
        """The publisher's write of ``count`` events is over (written, or failed)."""
        with self._cond:
            self.resolved_total += count
            self.writing -= 1

    def acquire(self, count: int, timeout: float | None, *, overdraft: bool = False) -> int:
        if self.down is not None and not overdraft:
            started = time.monotonic()
            if self.overflow == "reject":
                raise ChannelFull(self._outage_text("its overflow policy is 'reject'; retry later"))
            if self.overflow == "drop_newest":
                return 0
            with self._cond:
                self._waiting += 1
                try:
                    if not self._cond.wait_for(lambda: self.down is None, timeout):
                        raise BackpressureTimeout(
                            self._outage_text(f"for {timeout}s; the events were not published")
                        )
                finally:
                    self._waiting -= 1
            if timeout is not None:
                timeout = max(0.0, timeout - (time.monotonic() - started))
        return super().acquire(count, timeout, overdraft=overdraft)

    def _outage_text(self, tail: str) -> str:
        return f"channel {self.channel!r} cannot reach Redis at {self.where} ({self.down}) {tail}"

    def set_down(self, reason: str | None) -> None:
        with self._cond:
            self.down = reason
            self._cond.notify_all()

    def begin_write(self) -> None:
        """A publisher starts writing events it holds credits for."""
        with self._cond:
            self.writing += 1
            self.write_starts += 1

    def snapshot(self) -> tuple[int, int, int]:
        """What :meth:`sync` needs to know about writes, taken before Redis is asked."""
        with self._cond:
            return self.resolved_total, self.write_starts, self.writing

    def sync(self, backlog: int, before: tuple[int, int, int]) -> None:
        """Set the count to ``backlog`` read from Redis plus the credits not yet written.

        ``before`` is :meth:`snapshot` from before Redis was asked. If a write was
        under way meanwhile, its events may be in ``backlog`` and in the credits at
        once: such a reading may lower the count but not raise it, so a double count
        never makes a ``drop_newest`` or ``reject`` publisher refuse events it has
        room for, and a lowered count is still never below the truth.
        """
        resolved, starts, writing = before
        with self._cond:
            old = self.used
            new = backlog + max(0, self.acquired_total - resolved)
            if (
                writing
                or self.writing
                or self.write_starts != starts
                or self.resolved_total != resolved
            ):
                new = min(new, old)
            self.used = new
            if new < old and self._waiting:
                self._cond.notify_all()
            idle = new == 0 and old != 0
        if idle and self._on_idle is not None:
            self._on_idle()


# -- local state, owned by the channel actor's thread ----------------------------------


class _Item(NamedTuple):
    """One entry a reader took from Redis for a group (a named tuple: one per entry).

    ``event`` is None when the entry is no event (``raw`` and ``error`` say why).
    """

    seq: int
    event: Event | Encoded | None
    topic: str
    attempt: int
    raw: bytes | None = None
    error: str | None = None


@attrs.frozen(slots=True)
class _Fetched:
    group: str
    items: tuple[_Item, ...]
    trimmed: tuple[int, ...] = ()


class _Group(Group[Event | Encoded]):
    """A group as this worker sees it; ``events`` is everything it holds: queued or in flight."""

    __slots__ = (
        "filtered",
        "lag",
        "outstanding",
        "reader",
        "remembered",
        "spec",
        "trimmed",
    )

    def __init__(self, spec: GroupSpec, channel: str) -> None:
        super().__init__(spec, channel, {})
        self.spec = spec
        self.remembered: set[int] = set()  # seqs with a row in the attempts hash
        self.outstanding = 0  # granted to the reader, not yet arrived
        self.reader: _Reader | None = None
        self.lag = 0  # undelivered in Redis, as last read by the monitor
        self.filtered = 0
        self.trimmed = 0


class _State(Counters):
    """Survives restarts of the channel actor, like the mailbox.

    ``expired`` counts the pending entries retention trimmed before they were acked.
    """

    def __init__(self, config: ChannelConfig) -> None:
        super().__init__()
        self.groups = {spec.name: _Group(spec, config.name) for spec in config.groups}
        self.acks: dict[str, list[int]] = {}  # group -> seqs to XACK
        self.forget: dict[str, list[int]] = {}  # group -> seqs to HDEL from attempts
        self.timer: Timer | None = None
        self.lock = threading.Lock()  # counters written by publishers' threads


# -- the handle ----------------------------------------------------------------------


class RedisChannel:
    """Handle of one channel on a Redis stream.

    Thread-safety: ``send``, ``stats`` and ``problems`` may be called from any thread.
    """

    def __init__(
        self, config: ChannelConfig, services: ChannelServices, options: RedisOptions
    ) -> None:
        if redis_py is None:
            raise RedisUnavailable(
                f"channel {config.name!r} uses {options.display}, but the redis package is not "
                "installed; run: pip install reactor-actors[redis]"
            )
        self.name = config.name
        self.config = config
        self.services = services
        self.options = options
        self.stream = f"{options.prefix}:{config.name}"
        self.redis_gate = _RedisGate(
            config.name, config.capacity, config.overflow, services.on_idle, options.display
        )
        self.gate: CapacityGate = self.redis_gate
        self.address = Address(f"channel:{config.name}")
        self.codec = CloudEventsCodec()
        self.state = _State(config)
        self.client: Any = redis_py.Redis.from_url(
            options.client_url,
            socket_connect_timeout=2.0,
            socket_timeout=max(5.0, options.block_ms / 1000 + 5.0),
        )
        self._evict = self.client.register_script(_EVICT_SCRIPT)
        self._groups_ready = False
        self._groups_lock = threading.Lock()
        self._stopping = threading.Event()
        self._refresh = threading.Event()
        self._outage_since: float | None = None
        self._outage_lock = threading.Lock()
        self._pending_read_done: set[str] = set()
        self._group_names = frozenset(spec.name for spec in config.groups)
        try:
            self.ensure_groups()
        except Exception as exc:
            if not _is_connection_error(exc):
                raise
            self.report_outage(exc)
        self._monitor = threading.Thread(
            target=self._monitor_loop, name=f"{THREAD_PREFIX}redis:{self.name}:monitor", daemon=True
        )
        self._monitor.start()

    # -- Redis keys and groups -------------------------------------------------------

    def attempts_key(self, group: str) -> str:
        return f"{self.stream}:attempts:{group}"

    def consumer(self) -> str:
        return self.options.worker

    def start_id(self, spec: GroupSpec) -> str:
        """Where a new consumer group begins: the URL's ``start``, else the consumer's."""
        if self.options.start is not None:
            return self.options.start
        start = spec.start
        if start == "earliest":
            return "0"
        if start == "latest":
            return "$"
        if isinstance(start, datetime.datetime):
            return f"{int(start.timestamp() * 1000)}-0"
        raise ValueError(
            f"channel {self.config.name!r}: group {spec.name!r} has start={start!r}; a redis "
            "channel starts a group at 'earliest', 'latest' or a datetime (stream ids are not offsets)"
        )

    def ensure_groups(self, *, force: bool = False) -> None:
        """Create the stream and every group of the topology that does not exist yet."""
        with self._groups_lock:
            if self._groups_ready and not force:
                return
            for spec in self.config.groups:
                try:
                    self.client.xgroup_create(
                        self.stream, spec.name, id=self.start_id(spec), mkstream=True
                    )
                except redis_errors.ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
            self._groups_ready = True

    # -- outage bookkeeping -----------------------------------------------------------

    def report_outage(self, exc: BaseException) -> None:
        """Note that Redis is unreachable; the first call of an outage reports it."""
        with self._outage_lock:
            first = self._outage_since is None
            if first:
                self._outage_since = time.monotonic()
        reason = f"{type(exc).__name__}: {exc}"
        self.redis_gate.set_down(reason)
        if first:
            logger.warning(
                "channel %r lost Redis at %s: %s", self.name, self.options.display, reason
            )
            self._system(CHANNEL_DISCONNECTED, error=reason)

    def report_recovered(self) -> None:
        with self._outage_lock:
            since = self._outage_since
            self._outage_since = None
        if since is None:
            return
        self.redis_gate.set_down(None)
        downtime = time.monotonic() - since
        logger.warning("channel %r reconnected to Redis after %.1fs", self.name, downtime)
        self._system(CHANNEL_RECONNECTED, downtime_s=round(downtime, 3))

    def _system(self, topic: str, **data: Any) -> None:
        self.services.publish_system(
            Event.create(
                topic,
                {"channel": self.name, "url": self.options.display, **data},
                key=self.name,
                source=f"reactor/channel/{self.name}",
            )
        )

    def problems(self) -> tuple[str, ...]:
        """What is wrong with the channel right now, for health reports."""
        down = self.redis_gate.down
        if down is None:
            return ()
        return (f"channel {self.name!r} cannot reach Redis at {self.options.display}: {down}",)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry ``attempt`` (from 1): exponential, jittered."""
        base = min(_BACKOFF_MAX_S, _BACKOFF_MIN_S * float(1 << min(attempt - 1, 10)))
        return base * (0.5 + random.random() / 2)

    # -- Channel protocol ------------------------------------------------------------

    def start_actor(self, context: ActorContext) -> ReactorActor:
        return _RedisChannelActor.spawn(context, self)

    def send(self, events: tuple[Event, ...]) -> None:
        """XADD ``events`` in one pipeline; returns once Redis has them.

        Raises:
            TypeError: an event's data is not plain JSON (CloudEvents needs it).
            BackpressureTimeout: Redis stayed unreachable for ``publish_timeout``.
        """
        gate = self.redis_gate
        gate.begin_write()
        try:
            encode = self.codec.encode
            entries = [_entry(encode(event), event) for event in events]
            groups = list(self.state.groups.values())
            unrouted = sum(1 for event in events if not any(g.matches(event.topic) for g in groups))
            self._write(entries)
            with self.state.lock:
                self.state.published += len(events)
                self.state.unrouted += unrouted
        finally:
            gate.resolve(len(events))
        if unrouted:
            gate.release(unrouted)  # nobody here reads them: settled on arrival
        if gate.overflow == "drop_oldest" and gate.over_capacity:
            # Read the backlog afresh first: the monitor's count may hold these
            # events twice for a moment, and evicting on it would drop too many.
            try:
                before = gate.snapshot()
                gate.sync(self._read_backlog(self._group_names), before)
            except Exception as exc:
                if not _is_connection_error(exc):
                    raise
            if gate.over_capacity:
                self._evict_oldest(gate.over_capacity)
        self._refresh.set()

    def _write(self, entries: list[dict[bytes, bytes]]) -> None:
        options = self.options
        trim: dict[str, Any] = {}
        if options.maxlen is not None:
            trim = {"maxlen": options.maxlen, "approximate": options.approximate}
        deadline = time.monotonic() + options.publish_timeout_s
        attempt = 0
        while True:
            try:
                if not self._groups_ready:
                    self.ensure_groups()
                if options.maxage_s is not None:
                    minid = f"{int((time.time() - options.maxage_s) * 1000)}-0"
                    trim = {"minid": minid, "approximate": options.approximate}
                pipe = self.client.pipeline(transaction=False)
                stream = self.stream
                for entry in entries:
                    pipe.xadd(stream, entry, **trim)
                pipe.execute()
                if attempt:
                    self.report_recovered()
                return
            except Exception as exc:
                if not _is_connection_error(exc):
                    raise
                self.report_outage(exc)
                attempt += 1
                pause = self.backoff(attempt)
                if time.monotonic() + pause > deadline or self._stopping.is_set():
                    raise BackpressureTimeout(
                        f"channel {self.name!r} could not write to Redis at {options.display} for "
                        f"{options.publish_timeout_s}s ({type(exc).__name__}: {exc}); the events "
                        "were not published"
                    ) from exc
                self._stopping.wait(pause)

    def _evict_oldest(self, excess: int) -> None:
        names = [spec.name for spec in self.config.groups]
        try:
            victims = self._evict(keys=[self.stream], args=[excess, *names])
        except Exception as exc:
            if not _is_connection_error(exc):
                raise
            self.report_outage(exc)
            return
        for _entry_id, fields in victims:
            event = self._decode_quietly(_fields(fields))
            if event is not None:
                self.services.publish_system(
                    lifecycle.dropped(event, channel=self.name, policy="drop_oldest")
                )
        with self.state.lock:
            self.state.dropped += len(victims)
        self.gate.release(len(victims))

    def _decode_quietly(self, fields: dict[bytes, bytes]) -> Event | None:
        try:
            return self.codec.decode(fields[FIELD])
        except (KeyError, DecodeError):
            return None

    def stats(self) -> ChannelStats:
        groups = tuple(
            g.stats(backlog=g.lag + g.queued(), expired=g.trimmed)
            for g in list(self.state.groups.values())
        )
        return channel_stats(self.name, "redis", self.gate, self.state, groups)

    def dedup_window(self, group: str, size: int) -> RedisDedupWindow:
        """The dedup window of ``group``, shared through Redis with every worker."""
        return RedisDedupWindow(self, group, size)

    @property
    def trimmed(self) -> int:
        """Pending entries found deleted by retention (``maxlen``/``maxage``)."""
        return self.state.expired

    def close(self) -> None:
        """Stop the monitor and readers and close the connections."""
        self._stopping.set()
        self._refresh.set()
        timer = self.state.timer
        if timer is not None:
            timer.cancel()
        threads: list[threading.Thread] = [self._monitor]
        for group in self.state.groups.values():
            reader = group.reader
            if reader is not None:
                reader.stop()
                threads.append(reader)
        wait = self.options.block_ms / 1000 + 3.0
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(wait)
        self.client.close()

    # -- readers ---------------------------------------------------------------------

    def grant(self, group: _Group, count: int) -> None:
        """Let ``group``'s reader fetch ``count`` more entries (actor thread)."""
        if count <= 0 or self._stopping.is_set():
            return
        reader = group.reader
        if reader is None:
            reader = group.reader = _Reader(self, group.name, group.max_deliveries)
            reader.start()
        group.outstanding += count
        reader.grant(count)

    def read_pending_first(self, group: str) -> bool:
        return group not in self._pending_read_done

    def pending_read_done(self, group: str) -> None:
        self._pending_read_done.add(group)

    # -- monitor ---------------------------------------------------------------------

    def _monitor_loop(self) -> None:
        attempt = 0
        names = self._group_names
        while not self._stopping.is_set():
            try:
                before = self.redis_gate.snapshot()
                backlog = self._read_backlog(names)
            except Exception as exc:
                if not _is_connection_error(exc):
                    if redis_errors is not None and isinstance(exc, redis_errors.ResponseError):
                        # The stream or a group vanished (Redis restarted without data).
                        self._try(lambda: self.ensure_groups(force=True))
                    else:
                        logger.exception("channel %r: monitor failed", self.name)
                else:
                    self.report_outage(exc)
                attempt += 1
                self._stopping.wait(self.backoff(attempt))
                continue
            attempt = 0
            self.report_recovered()
            self.redis_gate.sync(backlog, before)
            pause = _POLL_BUSY_S if self.gate.used else _POLL_IDLE_S
            self._refresh.wait(pause)
            self._refresh.clear()

    def _try(self, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception as exc:
            logger.debug("channel %r: %s", self.name, exc)

    def _read_backlog(self, names: frozenset[str]) -> int:
        if not names:
            return 0
        pipe = self.client.pipeline(transaction=False)
        pipe.xinfo_stream(self.stream)
        pipe.xinfo_groups(self.stream)
        replies: Any = pipe.execute()
        stream, infos = replies
        top = entry_seq(stream["last-generated-id"])
        deleted = entry_seq(stream.get("max-deleted-entry-id") or b"0-0")
        seen = 0
        backlog = 0
        for info in infos:
            name = info["name"].decode()
            if name not in names:
                continue
            seen += 1
            last = entry_seq(info["last-delivered-id"])
            lag = info.get("lag")
            if last >= top:
                lag = 0
            elif lag is None or deleted > last:
                # Redis's lag counts entries deleted after the group's position (XDEL,
                # trimming); count what really follows the last delivery instead.
                cap = self.gate.capacity + 1
                after = f"({seq_entry_id(last)}"
                lag = len(self.client.xrange(self.stream, after, "+", count=cap))
            group = self.state.groups.get(name)
            if group is not None:
                group.lag = int(lag)
            backlog = max(backlog, int(lag) + int(info["pending"]))
        if seen < len(names):
            self.ensure_groups(force=True)
        return backlog


def _entry(payload: bytes, event: Event) -> dict[bytes, bytes]:
    """The fields of the stream entry for ``event``."""
    entry = {FIELD: payload, TOPIC_FIELD: event.topic.encode()}
    if event.key is not None:
        entry[KEY_FIELD] = event.key.encode()
    return entry


def _fields(raw: Any) -> dict[bytes, bytes]:
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, list):  # Lua replies come as flat lists
        return {raw[i]: raw[i + 1] for i in range(0, len(raw) - 1, 2)}
    return {}


class _Reader(threading.Thread):
    """Blocking reads for one group, never more than the actor granted."""

    def __init__(self, channel: RedisChannel, group: str, max_deliveries: int) -> None:
        super().__init__(name=f"{THREAD_PREFIX}redis:{channel.name}:{group}", daemon=True)
        self.channel = channel
        self.group = group
        self.max_deliveries = max_deliveries
        self.budget = 0
        self.cond = threading.Condition()
        self.stopped = False
        self.claim_cursor = "0-0"
        self.pending_cursor = "0"
        self.next_claim = 0.0

    def grant(self, count: int) -> None:
        with self.cond:
            self.budget += count
            self.cond.notify()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify()

    def run(self) -> None:
        channel = self.channel
        attempt = 0
        while True:
            with self.cond:
                self.cond.wait_for(lambda: self.stopped or self.budget > 0)
                if self.stopped:
                    return
                want = min(self.budget, channel.config.max_batch)
            try:
                fetched = self._fetch(want)
            except Exception as exc:
                if (
                    redis_errors is not None
                    and isinstance(exc, redis_errors.ResponseError)
                    and "NOGROUP" in str(exc)
                ):
                    channel._try(lambda: channel.ensure_groups(force=True))
                elif _is_connection_error(exc):
                    channel.report_outage(exc)
                else:
                    logger.exception("channel %r group %r: read failed", channel.name, self.group)
                attempt += 1
                with self.cond:
                    self.cond.wait_for(lambda: self.stopped, channel.backoff(attempt))
                continue
            if attempt:
                attempt = 0
                channel.report_recovered()
            if fetched is not None and (fetched.items or fetched.trimmed):
                with self.cond:
                    self.budget -= len(fetched.items)
                channel.address.tell(fetched)

    def _fetch(self, want: int) -> _Fetched | None:
        channel = self.channel
        client = channel.client
        stream = channel.stream
        consumer = channel.consumer()
        if channel.read_pending_first(self.group):
            # A worker restarted under the same name first takes back what it held.
            pending: Any = client.xreadgroup(
                self.group, consumer, {stream: self.pending_cursor}, count=want
            )
            entries = pending[0][1] if pending else []
            if not entries:
                channel.pending_read_done(self.group)
                return None
            self.pending_cursor = entries[-1][0].decode()
            live = [(i, f) for i, f in entries if f]
            trimmed = tuple(entry_seq(i) for i, f in entries if not f)
            return self._build(live, trimmed, fresh=False)
        now = channel.services.clock.monotonic()
        if now >= self.next_claim:
            self.next_claim = now + channel.options.lease_s / 2
            lease_ms = int(channel.options.lease_s * 1000)
            reply: Any = client.xautoclaim(
                stream, self.group, consumer, lease_ms, self.claim_cursor, count=want
            )
            self.claim_cursor = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
            claimed = reply[1]
            deleted = reply[2] if len(reply) > 2 else []
            if claimed or deleted:
                return self._build(claimed, tuple(entry_seq(i) for i in deleted), fresh=False)
        fresh: Any = client.xreadgroup(
            self.group, consumer, {stream: ">"}, count=want, block=channel.options.block_ms
        )
        if not fresh:
            return None
        return self._build(fresh[0][1], (), fresh=True)

    def _build(self, entries: list[Any], trimmed: tuple[int, ...], *, fresh: bool) -> _Fetched:
        channel = self.channel
        previous: dict[int, int] = {}
        if entries and not fresh:
            previous = self._attempts([i for i, _ in entries])
        codec = channel.codec
        new = tuple.__new__
        items = []
        for entry_id, fields in entries:
            seq = entry_seq(entry_id)
            raw = fields.get(FIELD) if isinstance(fields, dict) else None
            attempt = previous.get(seq, 1)
            if raw is None:
                names = (
                    ", ".join(sorted(k.decode(errors="replace") for k in fields))
                    if fields
                    else "none"
                )
                items.append(
                    _Item(
                        seq,
                        None,
                        "",
                        attempt,
                        repr(fields).encode(),
                        f"entry has no 'event' field (fields: {names})",
                    )
                )
                continue
            topic = fields.get(TOPIC_FIELD)
            if topic is not None:  # written by reactor: its consumer decodes it
                key = fields.get(KEY_FIELD)
                # tuple.__new__: the named tuples' own constructors are Python functions.
                stored = new(Encoded, (None if key is None else key.decode(), raw, codec))
                items.append(new(_Item, (seq, stored, topic.decode(), attempt, None, None)))
                continue
            try:
                event = codec.decode(raw)
            except DecodeError as exc:
                items.append(_Item(seq, None, "", attempt, raw, str(exc)))
            else:
                items.append(_Item(seq, event, event.topic, attempt))
        return _Fetched(self.group, tuple(items), trimmed)

    def _attempts(self, ids: list[bytes]) -> dict[int, int]:
        channel = self.channel
        pipe = channel.client.pipeline(transaction=False)
        pipe.hmget(channel.attempts_key(self.group), ids)
        pipe.xpending_range(
            channel.stream, self.group, ids[0], ids[-1], len(ids) * 2, channel.consumer()
        )
        replies: Any = pipe.execute()
        failed, pending = replies
        counts = {entry_seq(p["message_id"]): int(p["times_delivered"]) for p in pending}
        result = {}
        for entry_id, spent in zip(ids, failed, strict=True):
            seq = entry_seq(entry_id)
            result[seq] = max(int(spent or 0) + 1, counts.get(seq, 1))
        return result


# -- durable dedup ---------------------------------------------------------------------


class RedisDedupWindow(DedupWindow):
    """A dedup window shared by every worker of a group, kept in Redis.

    ``idempotent=True`` consumers on a redis channel get one: ``add`` records the
    id (``ZADD`` into ``{prefix}:{channel}:seen:{group}``, scored by a counter,
    trimmed to the last ``size`` ids) before the consumer acks, so a worker that
    claims the entry of a worker killed between the handler's return and its ack
    skips it. ``in`` asks Redis when the id is not in the local window (one round
    trip per new event: the price of idempotence across processes). If Redis is
    unreachable the check answers "not seen" (handle again: at-least-once).

    Thread-safety: members of one group share the window; methods may be called
    from any thread.
    """

    __slots__ = ("_channel", "_key", "_lock", "_n")

    def __init__(self, channel: RedisChannel, group: str, size: int) -> None:
        super().__init__(size)
        self._channel = channel
        self._key = f"{channel.stream}:seen:{group}"
        self._lock = threading.Lock()
        self._n = 0

    def __contains__(self, event_id: object) -> bool:
        if super().__contains__(event_id):
            return True
        try:
            found = self._channel.client.zscore(self._key, str(event_id)) is not None
        except Exception as exc:
            if not _is_connection_error(exc):
                raise
            return False
        if found:
            super().add(str(event_id))
        return found

    def add(self, event_id: str) -> None:
        with self._lock:
            if super().__contains__(event_id):
                return
            super().add(event_id)
            self._n += 1
            n = self._n
        try:
            pipe = self._channel.client.pipeline(transaction=False)
            pipe.zadd(self._key, {event_id: time.time()}, nx=True)
            if n % max(1, self.size // 4) == 0:
                pipe.zremrangebyrank(self._key, 0, -(self.size + 1))
            pipe.execute()
        except Exception as exc:
            if not _is_connection_error(exc):
                raise
            logger.warning(
                "channel %r: could not record handled event %s in Redis (%s); another worker "
                "may handle it again if this one dies before acking it",
                self._channel.name,
                event_id,
                exc,
            )


# -- the actor -------------------------------------------------------------------------


class _RedisChannelActor(ReactorActor):
    def __init__(self, context: ActorContext, channel: RedisChannel) -> None:
        super().__init__(context)
        self.channel = channel
        self.state = channel.state
        self.max_batch = channel.config.max_batch
        self.touch_every = max(0.05, channel.options.lease_s / 3)
        self.retry = 0

    def on_start(self) -> None:
        self._schedule(self.touch_every)
        for group in self.state.groups.values():
            self._top_up(group)

    def on_stop(self) -> None:
        self._flush()

    def _schedule(self, delay: float) -> None:
        old = self.state.timer
        if old is not None:
            old.cancel()
        address = self.actor_address
        self.state.timer = self.actor_clock.call_later(delay, lambda: address.tell(Tick("redis")))

    def on_receive(self, message: Any) -> Any:
        kind = type(message)
        result = None
        if kind is Ack:
            self._ack(message)
        elif kind is _Fetched:
            self._fetched(message)
        elif kind is Nack:
            self._nack(message)
        elif kind is Join:
            result = self._join(message)
        elif kind is Leave:
            self._leave(message)
        elif kind is Tick:
            self._tick()
        else:
            return super().on_receive(message)
        if self.state.acks and (self.actor_address.depth() == 0 or self._ack_count() >= _ACK_FLUSH):
            self._flush()
        return result

    # -- fetched entries -------------------------------------------------------------

    def _fetched(self, fetched: _Fetched) -> None:
        group = self.state.groups.get(fetched.group)
        if group is None:
            return
        group.outstanding = max(0, group.outstanding - len(fetched.items))
        if fetched.trimmed:
            self._trimmed(group, fetched.trimmed)
        held = group.events
        matches = group.matches
        for item in fetched.items:
            seq = item.seq
            if seq in held:
                continue  # already ours (claimed back from ourselves)
            event = item.event
            if event is None:
                self._dead_raw(group, item)
                continue
            if not matches(item.topic):
                group.filtered += 1
                self._settle(group, (seq,))
                continue
            if item.attempt > group.max_deliveries:
                error = ErrorInfo(
                    "WorkerLost",
                    f"the worker handling this event stopped before settling it "
                    f"{item.attempt - 1} time(s)",
                    "",
                )
                self._dead(group, seq, event, error, attempts=item.attempt - 1, consumer="")
                continue
            held[seq] = event
            if item.attempt > 1:
                group.attempts[seq] = item.attempt - 1
                group.redelivered += 1
            group.requeue(seq, event.key)  # claimed entries may be older than queued ones
        self._dispatch(group)
        self._top_up(group)

    def _trimmed(self, group: _Group, seqs: tuple[int, ...]) -> None:
        # An entry this worker still holds was not lost: it is handled from memory.
        seqs = tuple(seq for seq in seqs if seq not in group.events)
        if not seqs:
            return
        self.state.expired += len(seqs)
        group.trimmed += len(seqs)
        self._settle(group, seqs)
        ids = [seq_entry_id(seq) for seq in seqs]
        logger.warning(
            "channel %r group %r: retention removed %d pending entries before they were acked",
            self.channel.name,
            group.name,
            len(ids),
        )
        self.channel._system(CHANNEL_TRIMMED, group=group.name, count=len(ids), ids=ids[:100])

    def _dead_raw(self, group: _Group, item: _Item) -> None:
        group.dead_lettered += 1
        self.state.dead_lettered += 1
        entry_id = seq_entry_id(item.seq)
        error = ErrorInfo(
            "DecodeError", f"stream {self.channel.stream} entry {entry_id}: {item.error}", ""
        )
        self.channel.services.publish_system(
            lifecycle.dead_letter_raw(
                item.raw or b"",
                error,
                where={"entry_id": entry_id},
                attempts=item.attempt,
                consumer="",
                group=group.name,
                channel=self.channel.name,
            )
        )
        self._settle(group, (item.seq,))  # after the dead letter: a duplicate beats a loss

    def _dead(
        self,
        group: _Group,
        seq: int,
        item: Event | Encoded,
        error: ErrorInfo,
        *,
        attempts: int,
        consumer: str,
    ) -> None:
        group.dead_lettered += 1
        self.state.dead_lettered += 1
        self.channel.services.publish_system(
            lifecycle.dead_letter_of(
                item,
                error,
                where={"entry_id": seq_entry_id(seq)},
                attempts=attempts,
                consumer=consumer,
                group=group.name,
                channel=self.channel.name,
            )
        )
        self._settle(group, (seq,))

    def _settle(self, group: _Group, seqs: Sequence[int]) -> None:
        """``group`` is done with ``seqs``: they are XACKed with the next flush."""
        forget = group.events.pop
        for seq in seqs:
            forget(seq, None)
        if group.attempts:
            for seq in seqs:
                group.attempts.pop(seq, None)
        self.state.acks.setdefault(group.name, []).extend(seqs)
        remembered = group.remembered
        if remembered and not remembered.isdisjoint(seqs):
            rows = [seq for seq in seqs if seq in remembered]
            remembered.difference_update(rows)
            self.state.forget.setdefault(group.name, []).extend(rows)

    def _ack_count(self) -> int:
        return sum(len(seqs) for seqs in self.state.acks.values())

    def _flush(self) -> bool:
        """XACK (and forget attempts of) everything settled; keep it on failure."""
        state = self.state
        if not state.acks and not state.forget:
            return True
        channel = self.channel
        acks, forget = state.acks, state.forget
        try:
            pipe = channel.client.pipeline(transaction=False)
            for name, seqs in acks.items():
                pipe.xack(channel.stream, name, *[seq_entry_id(s) for s in seqs])
            for name, seqs in forget.items():
                pipe.hdel(channel.attempts_key(name), *[seq_entry_id(s) for s in seqs])
            pipe.execute()
        except Exception as exc:
            if not _is_connection_error(exc):
                raise
            channel.report_outage(exc)
            self.retry += 1
            self._schedule(channel.backoff(self.retry))
            return False
        state.acks = {}
        state.forget = {}
        if self.retry:
            self.retry = 0
            self._schedule(self.touch_every)
        channel._refresh.set()
        return True

    # -- delivery ------------------------------------------------------------------

    def _top_up(self, group: _Group) -> None:
        if not group.order:
            return
        free = sum(m.demand for m in group.order) - group.queued() - group.outstanding
        if free > 0:
            self.channel.grant(group, free)

    def _dispatch(self, group: _Group) -> None:
        for member in group.turn():
            if member.demand > 0 and (member.keyed or group.shared):
                self._fill(group, member)

    def _fill(self, group: _Group, member: Member) -> None:
        deliver = group.fill(member, self.max_batch)
        if deliver is not None:
            self.state.delivered += len(deliver.seqs)
            member.address.tell(deliver)

    # -- settlement ----------------------------------------------------------------

    def _ack(self, ack: Ack) -> None:
        acked = membership.ack(self.state.groups, ack)
        if acked is None:
            return
        group, settled = acked
        self._settle(group, settled)
        self.state.acked += len(settled)
        self._dispatch(group)
        self._top_up(group)

    def _nack(self, nack: Nack) -> None:
        nacked = membership.nack(self.state.groups, nack)
        if nacked is None:
            return
        group, attempt, event = nacked
        if event is not None:
            if nack.final or attempt >= group.max_deliveries:
                self._dead(
                    group, nack.seq, event, nack.error, attempts=attempt, consumer=nack.consumer
                )
            else:
                self._remember_attempts(group, nack.seq, attempt)
        self._dispatch(group)
        self._top_up(group)

    def _remember_attempts(self, group: _Group, seq: int, attempt: int) -> None:
        # Another worker (or this one, restarted) must not start this entry's count again.
        group.remembered.add(seq)
        try:
            self.channel.client.hset(
                self.channel.attempts_key(group.name), seq_entry_id(seq), attempt
            )
        except Exception as exc:
            if not _is_connection_error(exc):
                raise
            self.channel.report_outage(exc)  # the count is kept locally; only a crash loses it

    # -- membership ----------------------------------------------------------------

    def _join(self, join: Join) -> int:
        group, member = membership.join(self.state.groups, join, self.channel.name)
        self._dispatch(group)
        self._top_up(group)
        return member.epoch

    def _leave(self, leave: Leave) -> None:
        group = membership.leave(self.state.groups, leave)
        if group is not None:
            self._dispatch(group)

    # -- timers --------------------------------------------------------------------

    def _tick(self) -> None:
        if not self._flush():
            return
        self._touch()
        self._schedule(self.touch_every)

    def _touch(self) -> None:
        """Reset the idle time of every entry this worker holds, so no one claims it."""
        channel = self.channel
        try:
            pipe = channel.client.pipeline(transaction=False)
            touched = False
            for group in self.state.groups.values():
                if group.events:
                    ids = [seq_entry_id(seq) for seq in group.events]
                    pipe.xclaim(channel.stream, group.name, channel.consumer(), 0, ids, justid=True)
                    touched = True
            if touched:
                pipe.execute()
        except Exception as exc:
            if not _is_connection_error(exc):
                raise
            channel.report_outage(exc)


class RedisBackend:
    """Opens ``redis://`` (or ``rediss://``) channels."""

    def __init__(self, scheme: str) -> None:
        self.scheme = scheme

    def open(self, config: ChannelConfig, services: ChannelServices) -> Channel:
        """Open the channel: parse its URL, create its stream and groups.

        Raises:
            RedisUnavailable: redis-py is not installed.
            ValueError: a bad option in the URL.
        """
        options = parse_url(config.backend, config.name)
        if redis_py is None:
            raise RedisUnavailable(
                f"channel {config.name!r} uses the redis backend ({options.display}), but the "
                "redis package is not installed; run: pip install reactor-actors[redis]"
            )
        return RedisChannel(config, services, options)


BACKEND = RedisBackend("redis")
TLS_BACKEND = RedisBackend("rediss")
