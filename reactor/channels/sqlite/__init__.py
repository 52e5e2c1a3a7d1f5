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
settled (acked, dead-lettered, dropped or expired). Above the watermark the
highest offset ever delivered, each ack, and the attempts each event has spent
(failed, or charged to a crash) are stored too, so after a restart a group
resumes at its watermark, skips what it already acked, and gets back what was
delivered but not acked *with the attempts it spent*.

**What a crash costs.** The log knows what it delivered, not what was in a
handler when the process died: a member holds a prefetch window of events and
handles them one at a time, in offset order, acking them in runs of at most 32
or 10 ms. So after a crash (or a stop that abandoned events in flight) each
group charges **one** attempt, to the lowest offset it had delivered and not
settled: the event most likely in a handler, since everything before it was
handled. The rest of what was delivered comes back uncharged. The bound: a
crash costs each group one attempt, even when several members were each in a
handler (the others are not charged), and it may land on an event whose ack
the crash lost rather than on the one in a handler. Two rules keep that from
dead-lettering healthy events: a consumer acks a redelivered event at once, so
the next crash does not charge it again, and an event whose id the group's
durable dedup window holds (``idempotent=True``) is settled, never
dead-lettered. An event that kills the process every time is still
dead-lettered (``DeliveryAbandoned``) after ``max_deliveries`` restarts instead
of killing it forever: once what precedes it is handled, it is the lowest
unsettled event at every crash. Dead letters are also kept in the
``reactor_deadletters`` table (error, attempts, consumer, time; the id of one is
``group:offset``), since the ``$system`` channel they are published on is in
memory; files of format 2 are upgraded in place (their letters get no consumer
and time 0).

**Redriving a dead letter** (``System.redrive``) appends its event again at a new
offset and, in the same transaction, records it as acked for every *other* group
the file knows and deletes the letter: only the group that gave up on it gets it
again, with its attempts starting over, now or after a restart. A redrive needs
the channel open (a started system, or ``reactor dead-letters``, which opens the
channels without consumers); the group handles it when its consumers run.

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
``event`` None, ``raw``, ``offset``), once per group that routes them. So
is a row whose ``topic`` or ``key`` column is not UTF-8 text (written by
another tool): no group can route it, so every group dead-letters it, and the
rows around it are delivered.

**Retention** never deletes an event a group has not settled silently: it is
reported as a ``$system.retention.forced`` event (data: channel, group, count,
first and last offset) and counted in :attr:`GroupMetrics.expired` /
:attr:`ChannelMetrics.expired`; the group moves past the deleted events.

**One writer.** A process that opens a log holds ``<file>.lock`` with
``flock`` until it closes it; another process gets :class:`LogLockedError`.
A file that is not a reactor log gets :class:`LogFormatError`.

**Modules.** :mod:`~reactor.channels.sqlite.options` (the URL),
:mod:`~reactor.channels.sqlite.file` (lock, schema, format),
:mod:`~reactor.channels.sqlite.store` (every SQL statement on a channel's rows),
:mod:`~reactor.channels.sqlite.log` (the channel actor's side: paging,
watermarks, retention, replay), :mod:`~reactor.channels.sqlite.channel` (the
handle and the backend) and :mod:`~reactor.channels.sqlite.dedup`.
"""

from __future__ import annotations

from reactor.channels.sqlite.channel import SqliteBackend, SqliteChannel, StartPosition
from reactor.channels.sqlite.dedup import DurableDedupWindow
from reactor.channels.sqlite.options import SqliteOptions, parse_url
from reactor.errors import LogFormatError, LogLockedError

__all__ = [
    "BACKEND",
    "DurableDedupWindow",
    "LogFormatError",
    "LogLockedError",
    "SqliteBackend",
    "SqliteChannel",
    "SqliteOptions",
    "StartPosition",
    "parse_url",
]

BACKEND = SqliteBackend()
