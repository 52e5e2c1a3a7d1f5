"""Codecs: turn an :class:`~reactor.Event` into bytes for a broker or a file, and back.

Two codecs ship, both JSON, neither ever pickles:

:class:`JsonCodec` (``"json"``) is reactor's own format, used by the durable
backends. It round-trips every field exactly: ``decode(encode(e)) == e``.
Besides JSON's own types, ``data`` may hold values that JSON lacks; they are
written as tagged objects ``{"__reactor__": TAG, ...}``:

============================  ========  ======================================
value                         tag       representation
============================  ========  ======================================
``bytes``                     bytes     ``"b64"``: base64 text
``Decimal``                   decimal   ``"value"``: ``str(d)``
``datetime``                  datetime  ``"value"``: ISO 8601 (naive stays naive)
``date``, ``time``            date,     ``"value"``: ISO 8601
                              time
``timedelta``                 timedelta ``"days"``, ``"seconds"``, ``"microseconds"``
``UUID``                      uuid      ``"value"``: canonical text
``complex``                   complex   ``"real"``, ``"imag"``
non-finite ``float``          float     ``"value"``: ``"nan"``, ``"inf"`` or ``"-inf"``
``frozenset``                 set       ``"items"``: list of members
a mapping with a non-``str``  map       ``"items"``: list of ``[key, value]`` pairs
key or a ``"__reactor__"`` key
an :class:`Event`             event     ``"value"``: the event's own encoding
============================  ========  ======================================

An event's schema version (:attr:`~reactor.Event.version`) is its
``reactor-schema-version`` header, so this codec keeps it with the headers.

Enum members and other attrs/dataclass instances are refused at encode time
with a ``TypeError`` naming their path (``data['order'][0]``), because
rebuilding an arbitrary class from bytes is exactly what pickle does wrong.

:class:`CloudEventsCodec` (``"cloudevents"``) writes CloudEvents 1.0 in
structured mode (``application/cloudevents+json``), for other tools:

==================  ===========================================================
event field         CloudEvents attribute
==================  ===========================================================
``id``              ``id``
``source``          ``source``
``topic``           ``type``
``time``            ``time`` (RFC 3339, UTC, microseconds, ``Z``)
``data``            ``data`` with ``datacontenttype: application/json``; when
                    ``data`` is ``bytes``: ``data_base64`` with
                    ``application/octet-stream``; absent when ``data`` is None
``key``             ``partitionkey`` extension (omitted when None)
``correlation_id``  ``correlationid`` extension (omitted when None)
``causation_id``    ``causationid`` extension (omitted when None)
``version``         ``schemaversion`` extension, an Integer (omitted for version
                    1; it is the ``reactor-schema-version`` header)
``headers``         one extension attribute per header whose name is a valid
                    extension name (``[a-z0-9]{1,20}``) and is not taken; the
                    others go, as a JSON object in a string, into the
                    ``reactorheaders`` extension
==================  ===========================================================

``data`` must be plain JSON here (mappings with ``str`` keys, sequences,
``str``, ``int``, finite ``float``, ``bool``, None), or top-level ``bytes``.

Decoding accepts CloudEvents from other tools: ``time`` with ``Z`` or any
offset (stored in UTC), and without ``time`` (the decode time is used, since
an :class:`~reactor.Event` always has one). Unknown extension attributes, and
``subject`` and ``dataschema``, become headers (integer and boolean values as
their CloudEvents string form). ``datacontenttype`` is not kept: JSON data
(no content type, ``application/json`` or ``+json``) is decoded as JSON, other
data is kept as it arrived (a string, or ``bytes`` from ``data_base64``).

Every decoding failure raises :class:`~reactor.errors.DecodeError` naming what
was wrong (and, for CloudEvents, which attribute); no other exception escapes
``decode``.

Both codecs write their JSON with ``orjson`` when it is installed (it comes with
the ``redis`` extra) and with the standard library otherwise; ``json="stdlib"``
or ``json="orjson"`` picks one. The bytes mean the same either way: what one
writes, the other reads to an equal event, and both accept and refuse the same
input (see :mod:`reactor.messages.jsontext`).

The work is split by concept: :mod:`~reactor.messages.jsontext` (JSON values to
bytes and back), :mod:`~reactor.messages.jsonvalues` (Python values to JSON
values: tags, times, reactor's envelope) and :mod:`~reactor.messages.cloudevents`
(the CloudEvents attributes). This module holds the codecs themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar, Protocol, runtime_checkable

import attrs

from reactor.errors import DecodeError
from reactor.messages.cloudevents import cloudevent_text, event_from_cloudevent
from reactor.messages.event import Event
from reactor.messages.jsontext import json_text, load_object
from reactor.messages.jsonvalues import (
    Unencodable,
    event_from_json,
    event_text,
    unencodable_error,
)

__all__ = ["CloudEventsCodec", "Codec", "JsonCodec"]


@runtime_checkable
class Codec(Protocol):
    """Turns events into bytes and back. Implementations must never pickle.

    Thread-safety: implementations must be safe to share between threads.
    """

    @property
    def name(self) -> str:
        """Short name used in configuration, e.g. ``"json"``."""
        ...

    @property
    def content_type(self) -> str:
        """MIME type of the encoded bytes."""
        ...

    def encode(self, event: Event) -> bytes:
        """Return the bytes for ``event``.

        Raises:
            TypeError: ``event.data`` holds a value this codec cannot represent.
        """
        ...

    def decode(self, data: bytes) -> Event:
        """Return the event encoded in ``data``.

        Raises:
            DecodeError: ``data`` is not a valid encoding of an event.
        """
        ...


@attrs.frozen(slots=True)
class _JsonFormat:
    """What both codecs share: a JSON object per event, written and read by ``json``.

    A subclass says how an event maps to the object (``_to_object``,
    ``_from_object``), its ``name``, ``content_type`` and how ``decode`` names
    its input in errors (``_what``).

    Args:
        json: ``"auto"`` (orjson if installed, else the stdlib), ``"orjson"``
            or ``"stdlib"``; the bytes mean the same with each.

    Raises:
        UsageError: ``json`` is not one of those, or orjson is asked for but not installed.

    Thread-safety: stateless; share freely.
    """

    name: ClassVar[str]
    content_type: ClassVar[str]
    _what: ClassVar[str]
    # Event to JSON text (given the library's dumps) and JSON object to event;
    # plain functions rather than methods, one call less per event on the hot path.
    _mapping: ClassVar[
        tuple[Callable[[Event, Callable[[Any], str]], str], Callable[[dict[str, Any]], Event]]
    ]

    json: str = "auto"
    _to_text: Callable[[Event, Callable[[Any], str]], str] = attrs.field(
        init=False, repr=False, eq=False
    )
    _from_object: Callable[[dict[str, Any]], Event] = attrs.field(init=False, repr=False, eq=False)
    _dumps: Callable[[Any], str] = attrs.field(init=False, repr=False, eq=False)
    _loads: Callable[[bytes], Any] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        text = json_text(self.json)  # raises UsageError
        to_text, from_object = self._mapping
        for name, value in (
            ("_to_text", to_text),
            ("_from_object", from_object),
            ("_dumps", text.dumps),
            ("_loads", text.loads),
        ):
            object.__setattr__(self, name, value)

    def encode(self, event: Event) -> bytes:
        """Return ``event`` as UTF-8 JSON in this codec's format.

        Args:
            event: the event to encode.

        Returns:
            The encoded bytes.

        Raises:
            TypeError: ``event.data`` holds a value this format cannot write;
                the message names its path (``data['items'][1]``).
        """
        try:
            text = self._to_text(event, self._dumps)
        except Unencodable as exc:
            raise unencodable_error(exc, type(self).__name__) from None
        return text.encode("utf-8")

    def decode(self, data: bytes) -> Event:
        """Return the event in ``data``.

        Args:
            data: UTF-8 JSON bytes of one event in this codec's format.

        Returns:
            The event; for bytes from :meth:`encode`, equal to the one encoded.

        Raises:
            DecodeError: ``data`` is not such an encoding; the message says why.
        """
        what = self._what
        obj = load_object(data, what, self._loads)
        # "decode raises only DecodeError" holds even for a hostile payload
        # that trips something we did not think of.
        try:
            return self._from_object(obj)
        except DecodeError:
            raise
        except Exception as exc:
            raise DecodeError(f"{what} could not be decoded: {type(exc).__name__}: {exc}") from exc


@attrs.frozen(slots=True)
class JsonCodec(_JsonFormat):
    """reactor's own JSON encoding: exact round trip of every event field.

    See the module docstring for the tags used for non-JSON values in ``data``.
    """

    name: ClassVar[str] = "json"
    content_type: ClassVar[str] = "application/json"
    _what: ClassVar[str] = "JSON event"
    _mapping = (event_text, partial(event_from_json, what="JSON event"))


@attrs.frozen(slots=True)
class CloudEventsCodec(_JsonFormat):
    """CloudEvents 1.0, JSON structured mode (``application/cloudevents+json``).

    See the module docstring for how event fields map to attributes. Decoding
    accepts CloudEvents from other tools too.
    """

    name: ClassVar[str] = "cloudevents"
    content_type: ClassVar[str] = "application/cloudevents+json"
    _what: ClassVar[str] = "CloudEvent"
    _mapping = (cloudevent_text, event_from_cloudevent)
