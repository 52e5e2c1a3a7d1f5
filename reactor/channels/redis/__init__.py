"""The ``redis`` backend: a channel on a Redis stream, shared by many processes.

``redis://host:port/db`` (``rediss://`` for TLS; password in the URL; reactor's
own options in the query string, see :mod:`reactor.channels.redis.options`).
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
* ``{prefix}:{channel}:attempts:{group}`` is a hash of entry id -> attempts
  spent (failed, or charged to a worker that died holding it), written on a
  ``Nack`` and when an entry is taken over, so that another worker, or this
  one after a restart, knows how many attempts an entry has spent.
* ``{prefix}:{channel}:deadletters`` is a stream of the channel's dead letters
  (fields ``group``, ``entry_id``, ``attempts``, ``error_type``, ``message``,
  ``traceback``, ``consumer``, ``time``, ``raw`` and the ``event`` bytes as they
  were), written before the dead-lettered entry is acked. A letter's id is its
  entry id there. A redrive adds the event to the channel's stream again with a
  ``reactor.group`` field naming the group that gave up on it, and deletes the
  letter (one ``MULTI``): every other group acks that entry unread, as an entry of
  a topic it does not route. ``stored_dead_letters`` in the stats is this process's
  count (read with ``XLEN`` at open), approximate when several workers write.

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
other clients). Either way, an entry that is not a CloudEvent, or whose
``reactor.topic`` / ``reactor.key`` is not UTF-8, is dead-lettered with its raw
bytes (the ``event`` field) and what is wrong, at once, and acked: it never
stops the group, and the entries read with it are delivered. Entries whose topic no pattern of the group matches are acked at once.

On its first read a worker re-reads its own pending entries (``XREADGROUP`` from
id ``0``): a worker restarted under the same ``worker`` name picks up what it
held. Every ``lease/2`` seconds the reader claims entries idle longer than
``lease`` from dead workers (``XAUTOCLAIM``); the actor keeps its own entries
fresh (``XCLAIM ... JUSTID`` every ``lease/3``) so a slow handler is not robbed.

Attempts and dead letters
-------------------------
The attempt of an entry re-read or claimed is the attempts the hash says it
spent, plus one. A worker that died held a prefetch window of entries, and
Redis cannot say which one was in a handler (its delivery count goes up for
every entry a dead worker held), so, as on sqlite, a lost delivery is charged
to **one** entry: the first (lowest id) of each pass that takes entries over,
that is, the first page a worker restarted under its name re-reads, and the
first entry of each ``XAUTOCLAIM`` pass over the group's pending entries (the
charge is written to the hash before the entry is handed on). The rest come
back uncharged. The bound: a pass charges one attempt however many dead
workers it takes entries from. Members handle entries in id order, so an entry
that kills its worker every time becomes the first of a pass and is charged
each time; one whose id the group's dedup window holds (``idempotent=True``)
is settled, never dead-lettered. A ``Nack`` at ``max_deliveries`` publishes
the ``$deadletter`` event (``services.publish_system``) *before* the ``XACK``:
a duplicate beats a loss. An entry fetched with more attempts than
``max_deliveries`` (workers kept dying on it) is dead-lettered without being
handled again, with error type ``DeliveryAbandoned`` (as on sqlite).

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
``trimmed`` and publishes ``$system.retention.forced`` with their ids. Entries
that no group has read yet are trimmed too, and Redis keeps no trace of them:
set ``maxlen`` well above the backlog your consumers may build up.

Thread-safety: :meth:`RedisChannel.send` and :meth:`RedisChannel.stats` may be
called from any thread; the group state belongs to the channel actor's thread.

Modules
-------
:mod:`~reactor.channels.redis.options` (the URL), :mod:`~reactor.channels.redis.client`
(every call to Redis), :mod:`~reactor.channels.redis.link` (groups, outages,
backoff), :mod:`~reactor.channels.redis.monitor` (the gate's count),
:mod:`~reactor.channels.redis.reader` (reader threads), :mod:`~reactor.channels.redis.log`
(the channel actor's side), :mod:`~reactor.channels.redis.channel` (the handle
and the backend) and :mod:`~reactor.channels.redis.dedup`.
"""

from __future__ import annotations

from reactor.channels.redis.channel import RedisBackend, RedisChannel
from reactor.channels.redis.client import FIELD, entry_seq, seq_entry_id
from reactor.channels.redis.dedup import RedisDedupWindow
from reactor.channels.redis.options import RedisOptions, parse_url
from reactor.errors import RedisUnavailable

__all__ = [
    "BACKEND",
    "FIELD",
    "TLS_BACKEND",
    "RedisBackend",
    "RedisChannel",
    "RedisDedupWindow",
    "RedisOptions",
    "RedisUnavailable",
    "entry_seq",
    "parse_url",
    "seq_entry_id",
]

BACKEND = RedisBackend("redis")
TLS_BACKEND = RedisBackend("rediss")
