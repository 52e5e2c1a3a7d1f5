"""A cheap upper bound on the encoded size of an event: :func:`size_bound`.

A channel refuses events bigger, encoded, than its ``max_event_size``. A durable
channel encodes every event anyway and measures its bytes. The memory channel
encodes nothing, so it asks :func:`size_bound` first, and encodes (to measure
exactly) only an event whose bound passes the limit: with the default limit of
1 MiB, one whose data is some 64 KiB or more.

The bound holds for both shipped codecs, :class:`~reactor.JsonCodec` and
:class:`~reactor.CloudEventsCodec`: ``len(codec.encode(event)) <= size_bound(event)``
for every event either can encode. Why it holds, per part:

* the envelope (its keys, the time, ``null`` s, the CloudEvents attributes) is
  under ``_ENVELOPE`` bytes;
* a string of ``n`` characters is at most ``6 * n + 2`` bytes of JSON: a control
  character is escaped as ``\\u00XX`` (6 bytes), every other character is at most
  4 bytes of UTF-8 (neither codec escapes non-ASCII);
* a header is at most ``7`` bytes a character: CloudEvents packs some headers as
  a JSON object inside a JSON string, escaping the escapes;
* flat data (a mapping of scalars, tuples and sets of them: the usual payload) is
  measured by :func:`~reactor.messages.freeze.marshal_size`, one C call. Every
  value costs JSON at most ``_FLAT_FACTOR`` times its marshal bytes: a string
  ``6n + 2`` against ``n + 5``; a ``nan`` or a complex number, the worst (written
  as tagged objects of up to ~100 bytes) against at least 5 marshal bytes;
* anything else is walked, each value bounded by its type (and an event inside
  the data by its own bound). A value of any other type (an Enum member, a frozen
  attrs instance: what :func:`~reactor.freeze` keeps but neither codec writes)
  makes the event unencodable, so any bound holds for it; it counts as a tag.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Final
from uuid import UUID

from reactor.messages.event import NO_HEADERS, Event
from reactor.messages.freeze import FrozenDict, marshal_size

__all__ = ["size_bound"]

_ENVELOPE: Final = 512
_FLAT_FACTOR: Final = 16
# A tagged object's keys and punctuation ({"__reactor__":"map","items":[...]}).
_TAG: Final = 64
# Values of these types are at most this many bytes of JSON, tag included.
_SMALL: Final[dict[type, int]] = {
    bool: 5,
    type(None): 4,
    float: 48,
    complex: 128,
    datetime: 96,
    date: 64,
    time: 80,
    timedelta: 128,
    UUID: 80,
}


def size_bound(event: Event) -> int:
    """An upper bound on the bytes of ``event`` in either shipped codec.

    Cheap for the usual event: a few ``len`` calls and one C call over flat data
    (it runs on every publish into a memory channel).

    Returns:
        A number of bytes no smaller than ``len(codec.encode(event))`` for either
        codec that can encode the event.

    Thread-safety: safe (reads the immutable event only).
    """
    key, correlation_id, causation_id = event.key, event.correlation_id, event.causation_id
    size = _ENVELOPE + 6 * (
        len(event.id)
        + len(event.topic)
        + len(event.source)
        + (0 if key is None else len(key))
        + (0 if correlation_id is None else len(correlation_id))
        + (0 if causation_id is None else len(causation_id))
    )
    headers = event.headers
    if headers is not NO_HEADERS:
        size += sum(7 * (len(name) + len(value)) + 16 for name, value in headers.items())
    data = event.data
    if data.__class__ is FrozenDict:
        measured = marshal_size(data)
        if measured is not None:
            return size + _FLAT_FACTOR * measured + _TAG
    return size + _bound(data)


def _bound(value: Any) -> int:  # noqa: PLR0911 - one return per kind of value
    """An upper bound on the JSON bytes of one frozen value (tagged or not)."""
    t = value.__class__
    if t is str:
        return 6 * len(value) + 2
    small = _SMALL.get(t)
    if small is not None:
        return small
    if t is int:
        # Decimal digits <= bits * log10(2) + 1, and a sign.
        return int(value.bit_length()) * 31 // 100 + 3
    if t is FrozenDict or t is tuple or t is frozenset:
        items = value.items() if t is FrozenDict else ((item, None) for item in value)
        # Each item: its key (if any) and value, and at most 6 bytes of punctuation
        # ("k":v, or [k,v], in a tagged map).
        return _TAG + sum(_bound(k) + _bound(v) + 6 for k, v in items)
    if t is bytes:
        return _TAG + 2 * len(value)  # base64: 4 characters per 3 bytes
    if t is Decimal:
        return _TAG + len(str(value))
    if t is Event:
        return _TAG + size_bound(value)
    if isinstance(value, tuple):  # a namedtuple keeps its type when frozen
        return _TAG + sum(_bound(item) + 6 for item in value)
    return _TAG  # no codec writes it (see above): measuring could only fail
