"""The :class:`Event` value and its ids (:func:`new_event_id`, UUIDv7)."""

from __future__ import annotations

import enum
import os
import random
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from time import time_ns as _time_ns
from typing import Any, Final, Literal, cast

import attrs

from reactor.messages.freeze import _SCALARS, FrozenDict, freeze, freeze_flat
from reactor.messages.topics import _valid_topics as _known_topics
from reactor.messages.topics import validate_topic

__all__ = [
    "FAILURE_CHANNEL",
    "FAILURE_TOPIC",
    "NO_HEADERS",
    "REPLY_TO",
    "SCHEMA_VERSION",
    "Event",
    "new_event_id",
]

# The header of a request that says where its reply goes (set by System.request).
REPLY_TO = "reactor-reply-to"
# The headers of a command whose sender waits for an answer on a channel (a saga's):
# if the command is dead-lettered, the consumer that gave up on it answers there with
# an event of topic FAILURE_TOPIC, so the sender learns of it without a timeout.
FAILURE_TOPIC = "reactor-failure-topic"
FAILURE_CHANNEL = "reactor-failure-channel"
# The header holding the version of an event's data schema (Event.version). Absent
# means version 1, so version 1 is never written: an event made before versions
# existed, and one made at version 1, are the same event.
SCHEMA_VERSION = "reactor-schema-version"

_UTC: Final = UTC
_now: Final = datetime.now

# --- ids -------------------------------------------------------------------------

# UUIDv7 (RFC 9562 section 5.7) with a 12-bit counter in rand_a (section 6.2,
# method 1), so ids made in one process sort in creation order even within one
# millisecond. The state is shared by all threads, hence the lock.
_id_lock = threading.Lock()
_acquire = _id_lock.acquire
_release = _id_lock.release
_last_ms = 0
_counter = 0
# The first 14 characters ("tttttttt-tttt-") only change once per millisecond.
_prefix = ""
_COUNTER_MAX: Final = 0xFFF
# The next 5 ("7ccc-": version 7 and the counter), one string per counter value.
_VERSIONED: Final = tuple(f"{0x7000 | counter:04x}-" for counter in range(_COUNTER_MAX + 1))
# Our own generator, not the module-level one: a user calling random.seed()
# must not make two processes produce the same ids.
_rng = random.Random(os.urandom(32))
# The last 17 characters ("vrrr-rrrrrrrrrrrr": the variant and 62 random bits) are
# made in bulk, _TAILS_PER_REFILL at a time, by C loops over one block of random
# bytes: formatting them one id at a time was most of an id's cost.
_TAILS_PER_REFILL: Final = 1024
# The variant (0b10) takes the top two bits of the first digit: its low two stay random.
_VARIANT_DIGIT: Final = bytes.maketrans(b"0123456789abcdef", b"89ab89ab89ab89ab")
_tails: list[str] = []


def _more_tails() -> list[str]:
    """``_TAILS_PER_REFILL`` new id tails, each the variant digit, 3 digits, ``-``, 12 digits."""
    count = _TAILS_PER_REFILL
    digits = _rng.randbytes(8 * count).hex().encode()  # 16 random hex digits per tail
    # Lay them out as "vrrr-rrrrrrrrrrrr " (18 bytes per tail) with strided copies.
    out = bytearray(b" " * (18 * count))
    out[0::18] = digits[0::16].translate(_VARIANT_DIGIT)
    for column in range(1, 4):
        out[column::18] = digits[column::16]
    out[4::18] = b"-" * count
    for column in range(4, 16):
        out[column + 1 :: 18] = digits[column::16]
    return out.decode("ascii").split()


def _reseed_after_fork() -> None:
    global _last_ms, _counter, _prefix, _tails  # noqa: PLW0603 - process-wide id state, reset in the child
    _rng.seed(os.urandom(32))
    _last_ms = 0
    _counter = 0
    _prefix = ""
    _tails = []  # the parent's random bits must not be the child's


os.register_at_fork(after_in_child=_reseed_after_fork)


def new_event_id() -> str:
    """Return a new event id: a UUIDv7 as its canonical 36-character lowercase text.

    The first 48 bits are the Unix time in milliseconds, so ids sort by creation
    time as plain strings; within a process they are strictly increasing, even
    across threads and within one millisecond (a 12-bit counter follows the
    timestamp; if it overflows, or the wall clock steps back, the timestamp is
    advanced past the last one used rather than going backwards). The last 62
    bits are random, which keeps ids from different processes apart.

    Returns:
        A string such as ``"0190f1f4-7c3a-7a01-9c1e-5b2d8e0f4a77"``.

    Thread-safety: safe.
    """
    global _last_ms, _counter, _prefix, _tails  # noqa: PLW0603 - process-wide monotonic state
    now_ms = _time_ns() // 1_000_000
    # acquire/release rather than ``with``: half the cost, and nothing in
    # between can raise (but _more_tails' MemoryError, which leaves the state valid).
    _acquire()
    if now_ms > _last_ms:
        _last_ms = now_ms
        _counter = 0
        _prefix = f"{now_ms >> 16:08x}-{now_ms & 0xFFFF:04x}-"
    elif _counter < _COUNTER_MAX:
        _counter += 1
    else:
        # 4096 ids in one millisecond, or the clock went back: borrow the next
        # millisecond so that order holds.
        _last_ms += 1
        _counter = 0
        _prefix = f"{_last_ms >> 16:08x}-{_last_ms & 0xFFFF:04x}-"
    if not _tails:
        try:
            _tails = _more_tails()
        except BaseException:
            _release()
            raise
    tail = _tails.pop()
    prefix = _prefix
    counter = _counter
    _release()
    return f"{prefix}{_VERSIONED[counter]}{tail}"  # one allocation, where + makes two


# --- field converters --------------------------------------------------------------
# Event's own __init__ runs these, so every Event (from create, derive, a codec
# or attrs.evolve) upholds the same invariants.

_NO_HEADERS: Final[FrozenDict[str, str]] = FrozenDict()
# The headers of every event made without any: one shared empty mapping, so that
# "no headers" is an identity test (reactor.messages.sizes tests it per event).
NO_HEADERS: Final = _NO_HEADERS


def _check_id(value: Any, name: str = "id") -> str:
    if value.__class__ is str and value:
        return value
    if not isinstance(value, str):
        raise TypeError(f"event {name} must be a str, got {type(value).__name__}: {value!r}")
    if not value:
        raise ValueError(f"event {name} must not be empty")
    return str.__str__(value)


def _check_correlation_id(value: Any) -> str | None:
    return None if value is None else _check_id(value, "correlation_id")


def _check_causation_id(value: Any) -> str | None:
    return None if value is None else _check_id(value, "causation_id")


def _check_key(key: Any) -> str | None:
    if key is None or key.__class__ is str:
        return key
    if isinstance(key, str):
        return str.__str__(key)
    # int keys (customer 7) are common enough to accept; bool is an int but a
    # key of "True" is almost surely a bug.
    if isinstance(key, int) and not isinstance(key, bool):
        return str(int(key))
    raise TypeError(f"event key must be a str, an int or None, got {type(key).__name__}: {key!r}")


def _check_source(source: Any) -> str:
    return _check_id(source, "source")


def _check_time(value: Any) -> datetime:
    if value.__class__ is datetime and value.tzinfo is _UTC:
        return value
    if not isinstance(value, datetime):
        raise TypeError(f"event time must be a datetime, got {type(value).__name__}: {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"event time must be timezone-aware, got naive {value!r}; "
            "use datetime.now(timezone.utc)"
        )
    return value.astimezone(_UTC)


def _check_headers(headers: Any) -> FrozenDict[str, str]:
    if headers is None:
        return _NO_HEADERS
    if not isinstance(headers, Mapping):
        raise TypeError(
            f"event headers must be a mapping of str to str, got {type(headers).__name__}"
        )
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(
                f"event headers must map str to str; header {name!r} "
                f"({type(name).__name__}) has a {type(value).__name__} value: {value!r}"
            )
    version = headers.get(SCHEMA_VERSION)
    if version is not None and not (version.isascii() and version.isdigit() and version[0] != "0"):
        raise ValueError(
            f"event header {SCHEMA_VERSION!r} must be a schema version, a whole number >= 1 "
            f"written in decimal, got {version!r}; pass version= to Event.create instead"
        )
    if headers.__class__ is FrozenDict:
        return cast("FrozenDict[str, str]", headers)
    return cast("FrozenDict[str, str]", freeze(headers, "headers"))


def _versioned(headers: Mapping[str, str] | None, version: Any) -> Mapping[str, str] | None:
    """``headers`` with the schema ``version`` set (removed for version 1, the default)."""
    if isinstance(version, bool) or not isinstance(version, int):
        raise TypeError(
            f"event version must be an int >= 1, got {type(version).__name__}: {version!r}"
        )
    if version < 1:
        raise ValueError(f"event version must be an int >= 1, got {version}")
    merged = dict(headers) if headers is not None else {}
    if version == 1:
        merged.pop(SCHEMA_VERSION, None)
    else:
        merged[SCHEMA_VERSION] = str(int(version))
    return merged or None


def _freeze_data(data: Any) -> Any:
    return freeze(data, "data")


class _Inherit(enum.Enum):
    INHERIT = "inherit"


_INHERIT: Final = _Inherit.INHERIT


# --- Event -------------------------------------------------------------------------


@attrs.frozen(slots=True, kw_only=True, repr=False)
class Event:
    """An immutable event: something that happened, on a topic, with a payload.

    Make one with :meth:`create` (or :meth:`derive` from another event); the
    constructor takes every field by keyword and applies the same checks, so
    ``attrs.evolve(event, ...)`` yields a valid event too.

    Attributes:
        id: unique id, a UUIDv7 string (sorts by creation time).
        topic: dotted topic, e.g. ``"orders.created"``.
        data: the payload, deep-frozen by :func:`~reactor.freeze`.
        key: partition key: events with the same key keep their order in a group.
        time: when the event was created, timezone-aware, in UTC.
        source: who produced it (a producer or consumer name); ``"reactor"`` by default.
        headers: free-form metadata, ``str`` to ``str``. The header
            ``reactor-schema-version`` holds the schema version (see :attr:`version`).
        correlation_id: id shared by every event of one flow (the first event's id).
        causation_id: id of the event this one was derived from, if any.

    Thread-safety: immutable; share freely between threads and actors.
    """

    id: str = attrs.field(converter=_check_id)
    topic: str = attrs.field(converter=validate_topic)
    data: Any = attrs.field(converter=_freeze_data)
    key: str | None = attrs.field(converter=_check_key)
    time: datetime = attrs.field(converter=_check_time)
    source: str = attrs.field(converter=_check_source)
    headers: FrozenDict[str, str] = attrs.field(converter=_check_headers)
    correlation_id: str | None = attrs.field(converter=_check_correlation_id)
    causation_id: str | None = attrs.field(converter=_check_causation_id)

    @classmethod
    def create(
        cls,
        topic: str,
        data: Any = None,
        *,
        key: str | int | None = None,
        source: str = "reactor",
        headers: Mapping[str, str] | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        id: str | None = None,
        time: datetime | None = None,
        version: int | None = None,
    ) -> Event:
        """Create an event, filling in its id and time.

        Args:
            topic: dotted topic, e.g. ``"orders.created"``.
            data: the payload; a deep immutable copy is stored (see :func:`~reactor.freeze`).
            key: partition key; an ``int`` is converted with ``str()``.
            source: who produced the event.
            headers: metadata, ``str`` to ``str``.
            correlation_id: the flow this event belongs to; defaults to the event's own id.
            causation_id: the id of the event that caused this one.
            id: the event id; a new UUIDv7 by default.
            time: when it happened (timezone-aware); now, in UTC, by default.
            version: the schema version of ``data`` (an int >= 1), kept in the
                ``reactor-schema-version`` header; 1 when not given.

        Returns:
            The new event.

        Raises:
            InvalidTopicError: ``topic`` is malformed.
            ImmutableMessageError: ``data`` holds something that cannot be made
                immutable; the error's ``path`` starts with ``data``.
            TypeError: ``key``, ``headers``, ``id``, ``source``, ``time`` or
                ``version`` has the wrong type.
            ValueError: ``time`` is naive, or ``version`` < 1.
        """
        if version is not None:
            headers = _versioned(headers, version)
        if cls is not Event:
            # Subclasses may add fields or checks: go through their __init__.
            if id is None:
                id = new_event_id()
            return cls(
                id=id,
                topic=topic,
                data=data,
                key=key,
                time=datetime.now(_UTC) if time is None else time,
                source=source,
                headers=headers,
                correlation_id=id if correlation_id is None else correlation_id,
                causation_id=causation_id,
            )
        # Hot path: the same checks as the converters, skipped for the values we
        # generate ourselves, and no keyword-argument __init__ call; the slots are
        # set here (a call with nine arguments costs as much as two fields).
        id = new_event_id() if id is None else _check_id(id)
        if data.__class__ is dict:
            # The usual payload, a flat dict, without freeze's generic walk.
            frozen = freeze_flat(data)
            data = frozen if frozen is not None else freeze(data, "data")
        elif type(data) not in _SCALARS:
            data = freeze(data, "data")
        event: Event = _new_event(Event)
        _set_id(event, id)
        _set_topic(
            event,
            topic if topic.__class__ is str and topic in _known_topics else validate_topic(topic),
        )
        _set_data(event, data)
        _set_key(event, key if key is None or key.__class__ is str else _check_key(key))
        _set_time(event, _now(_UTC) if time is None else _check_time(time))
        _set_source(event, source if source.__class__ is str and source else _check_source(source))
        _set_headers(event, _NO_HEADERS if headers is None else _check_headers(headers))
        _set_correlation_id(
            event, id if correlation_id is None else _check_id(correlation_id, "correlation_id")
        )
        _set_causation_id(
            event, None if causation_id is None else _check_id(causation_id, "causation_id")
        )
        return event

    def reply(
        self,
        data: Any = None,
        *,
        topic: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Event:
        """The reply to this event, for a handler to return when the event is a request.

        A consumer that returns it sends it back to whoever called
        :meth:`reactor.System.request`, not into its output channel. Returned for an
        event that is no request, it is an ordinary follow-up event.

        Args:
            data: the reply's payload.
            topic: the reply's topic; ``"<this topic>.reply"`` unless given.
            headers: the reply's headers (reactor adds where it goes).

        Returns:
            An event derived from this one (same correlation id, causation id = this
            event's id) that carries this request's reply address.
        """
        extra = dict(headers) if headers is not None else {}
        to = self.headers.get(REPLY_TO)
        if to is not None:
            extra[REPLY_TO] = to
        return self.derive(
            topic if topic is not None else f"{self.topic}.reply", data, headers=extra
        )

    def derive(
        self,
        topic: str,
        data: Any = None,
        *,
        key: str | int | Literal[_Inherit.INHERIT] | None = _INHERIT,
        source: str | Literal[_Inherit.INHERIT] = _INHERIT,
        headers: Mapping[str, str] | None = None,
        version: int | None = None,
    ) -> Event:
        """Create an event caused by this one, in the same flow.

        The new event gets a new id and time, this event's ``correlation_id``
        and ``causation_id = self.id``. Headers are not inherited: they usually
        describe one hop.

        Args:
            topic: the new event's topic.
            data: the new event's payload.
            key: partition key; this event's key unless given (``None`` clears it).
            source: producer name; this event's source unless given.
            headers: the new event's headers.
            version: the schema version of the new event's data; 1 when not given
                (a version describes one topic's data, so it is not inherited).

        Returns:
            The new event.

        Raises:
            InvalidTopicError: ``topic`` is malformed.
            ImmutableMessageError: ``data`` cannot be made immutable.
            TypeError: ``key``, ``headers`` or ``version`` has the wrong type.
            ValueError: ``version`` < 1.
        """
        # create's fast path, with this event's flow: what it checks again here
        # (this event's key, source and ids) passes its first test.
        return Event.create(
            topic,
            data,
            key=self.key if key is _INHERIT else key,
            source=self.source if source is _INHERIT else source,
            headers=headers,
            correlation_id=self.correlation_id if self.correlation_id is not None else self.id,
            causation_id=self.id,
            version=version,
        )

    @property
    def version(self) -> int:
        """The schema version of ``data``: the ``reactor-schema-version`` header, 1 when absent.

        A channel's upcasters turn an event of an older version into the current one
        before a consumer sees it (see ``upcasters`` in ``Topology.channel``).
        """
        version = self.headers.get(SCHEMA_VERSION)
        return 1 if version is None else int(version)

    def __repr__(self) -> str:
        # Short on purpose: events end up in logs and dashboards by the thousand.
        data = repr(self.data)
        if len(data) > 60:
            data = data[:57] + "..."
        key = f", key={self.key!r}" if self.key is not None else ""
        return f"Event({self.topic!r}, id={self.id!r}{key}, data={data})"


# Setting the slots through their descriptors skips attrs' frozen __setattr__
# guard (and object.__setattr__'s lookup); only create uses them, on values that
# have been checked already.
_new_event = object.__new__
_set_id = Event.__dict__["id"].__set__
_set_topic = Event.__dict__["topic"].__set__
_set_data = Event.__dict__["data"].__set__
_set_key = Event.__dict__["key"].__set__
_set_time = Event.__dict__["time"].__set__
_set_source = Event.__dict__["source"].__set__
_set_headers = Event.__dict__["headers"].__set__
_set_correlation_id = Event.__dict__["correlation_id"].__set__
_set_causation_id = Event.__dict__["causation_id"].__set__
