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

One concept, so one module despite its length: the mapping between an event and
bytes. Both codecs are written over the same value mapping (tags, times, topics,
the decode checks); apart, one would reach into the other's privates.

Every decoding failure raises :class:`~reactor.errors.DecodeError` naming what
was wrong (and, for CloudEvents, which attribute); no other exception escapes
``decode``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Protocol, runtime_checkable
from uuid import UUID

import attrs

from reactor.errors import DecodeError, InvalidTopicError
from reactor.messages.event import Event
from reactor.messages.freeze import FrozenDict, freeze
from reactor.messages.topics import validate_topic

__all__ = ["CloudEventsCodec", "Codec", "JsonCodec"]

_UTC = UTC
_TAG = "__reactor__"
_FORMAT_VERSION = 1
_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


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


# --- encoding data -------------------------------------------------------------------


class _Unencodable(Exception):
    """Internal: a value cannot be encoded; ``segments`` collects its path on the way up."""

    def __init__(self, value: Any, why: str) -> None:
        super().__init__(why)
        self.value = value
        self.why = why
        self.segments: list[str] = []


def _unencodable_error(exc: _Unencodable, codec: str) -> TypeError:
    path = "data" + "".join(reversed(exc.segments))
    t = type(exc.value)
    return TypeError(f"{codec} cannot encode {path}, a {t.__module__}.{t.__qualname__}: {exc.why}")


def _iso(value: datetime | date | time) -> str:
    return value.isoformat()


def _tagged(value: Any, t: type) -> dict[str, Any] | None:  # noqa: PLR0911 - one per tag
    """Return the tagged form of a non-JSON scalar, or None if it has none."""
    if t is bytes:
        return {_TAG: "bytes", "b64": base64.b64encode(value).decode("ascii")}
    if t is Decimal:
        return {_TAG: "decimal", "value": str(value)}
    if t is datetime:
        return {_TAG: "datetime", "value": _iso(value)}
    if t is date:
        return {_TAG: "date", "value": _iso(value)}
    if t is time:
        return {_TAG: "time", "value": _iso(value)}
    if t is timedelta:
        return {
            _TAG: "timedelta",
            "days": value.days,
            "seconds": value.seconds,
            "microseconds": value.microseconds,
        }
    if t is UUID:
        return {_TAG: "uuid", "value": str(value)}
    if t is complex:
        return {_TAG: "complex", "real": _float(value.real), "imag": _float(value.imag)}
    if t is float:
        return {_TAG: "float", "value": repr(value)}
    return None


def _float(value: float) -> Any:
    return value if math.isfinite(value) else {_TAG: "float", "value": repr(value)}


def _to_json(value: Any, tagged: bool) -> Any:  # noqa: PLR0911 - one return per JSON type
    """Convert frozen ``value`` into what ``json`` can write (tagged or plain JSON)."""
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return value
    if t is float and math.isfinite(value):
        return value
    if t is FrozenDict or t is dict or isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if tagged and (type(k) is not str or k == _TAG):
                return _map_to_json(value)
            if type(k) is not str:
                raise _Unencodable(value, f"key {k!r} is not a str (JSON object keys are strings)")
            try:
                out[k] = _to_json(v, tagged)
            except _Unencodable as exc:
                exc.segments.append(f"[{k!r}]")
                raise
        return out
    if t is tuple or t is list or isinstance(value, (tuple, list)):
        return _items_to_json(value, tagged)
    if tagged:
        if t is frozenset or t is set:
            return {_TAG: "set", "items": _items_to_json(value, tagged)}
        if t is Event:
            return {_TAG: "event", "value": _event_to_json(value)}
        tag = _tagged(value, t)
        if tag is not None:
            return tag
        raise _Unencodable(
            value,
            "JsonCodec writes JSON types, bytes, Decimal, datetime, date, time, "
            "timedelta, UUID, complex, frozenset and Event; convert it to one of those",
        )
    raise _Unencodable(
        value,
        "CloudEvents data must be plain JSON (mappings with str keys, lists, "
        "str, int, finite float, bool, None) or top-level bytes; convert it first",
    )


def _items_to_json(value: Any, tagged: bool) -> list[Any]:
    out = []
    for i, v in enumerate(value):
        try:
            out.append(_to_json(v, tagged))
        except _Unencodable as exc:
            exc.segments.append(f"[{i}]")
            raise
    return out


def _map_to_json(value: Mapping[Any, Any]) -> dict[str, Any]:
    items = []
    for k, v in value.items():
        try:
            items.append([_to_json(k, True), _to_json(v, True)])
        except _Unencodable as exc:
            exc.segments.append(f"[{k!r}]")
            raise
    return {_TAG: "map", "items": items}


def _format_time(value: datetime) -> str:
    # Event.time is always UTC; RFC 3339 spells that 'Z'.
    return value.astimezone(_UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _event_to_json(event: Event) -> dict[str, Any]:
    return {
        "v": _FORMAT_VERSION,
        "id": event.id,
        "topic": event.topic,
        "time": _format_time(event.time),
        "source": event.source,
        "key": event.key,
        "correlation_id": event.correlation_id,
        "causation_id": event.causation_id,
        "headers": dict(event.headers),
        "data": _to_json(event.data, True),
    }


# --- decoding helpers ----------------------------------------------------------------


def _load_object(data: Any, what: str) -> dict[str, Any]:
    """Parse ``data`` as a UTF-8 JSON object, or raise DecodeError saying why not."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"{what}: expected bytes, got {type(data).__name__}")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(
            f"{what}: bytes are not UTF-8 ({exc.reason} at byte {exc.start})"
        ) from exc
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DecodeError(
            f"{what}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from exc
    except (ValueError, RecursionError) as exc:  # e.g. an int too long, or nesting too deep
        raise DecodeError(f"{what}: not decodable JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise DecodeError(f"{what}: expected a JSON object, got a JSON {_json_kind(obj)}")
    return obj


def _json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,  # \d would otherwise accept any Unicode digit
)


def _parse_time(value: Any, what: str) -> datetime:
    if not isinstance(value, str) or _RFC3339.fullmatch(value) is None:
        raise DecodeError(
            f"{what} must be an RFC 3339 timestamp such as '2024-05-01T12:00:00Z', got {value!r}"
        )
    text = value.upper()
    if "." in text:
        # Python reads at most microseconds; other tools may send nanoseconds.
        head, _, rest = text.partition(".")
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[: min(digits, 6)].ljust(6, '0')}{rest[digits:]}"
    try:
        return datetime.fromisoformat(text).astimezone(_UTC)
    except ValueError as exc:
        raise DecodeError(f"{what} is not a valid time ({exc}): {value!r}") from exc


def _from_json(value: Any, path: str) -> Any:
    """Undo _to_json's tagging; plain JSON containers are left for freeze()."""
    t = type(value)
    if t is dict:
        if _TAG in value:
            return _untag(value, path)
        return {k: _from_json(v, f"{path}[{k!r}]") for k, v in value.items()}
    if t is list:
        return tuple(_from_json(v, f"{path}[{i}]") for i, v in enumerate(value))
    return value


def _tag_field(obj: Mapping[str, Any], name: str, kind: type, path: str) -> Any:
    value = obj.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DecodeError(
            f"tagged value at {path} ({obj.get(_TAG)!r}) needs {name!r} as a "
            f"{kind.__name__}, got {value!r}"
        )
    return value


def _untag(obj: dict[str, Any], path: str) -> Any:
    tag = obj[_TAG]
    decoder = _UNTAGGERS.get(tag) if isinstance(tag, str) else None
    if decoder is None:
        raise DecodeError(f"unknown tag {tag!r} at {path}; known: {', '.join(sorted(_UNTAGGERS))}")
    try:
        return decoder(obj, path)
    except DecodeError:
        raise
    except (ValueError, TypeError, OverflowError, ArithmeticError, binascii.Error) as exc:
        raise DecodeError(f"bad {tag!r} value at {path}: {exc}") from exc


def _untag_set(obj: dict[str, Any], path: str) -> frozenset[Any]:
    items = _tag_field(obj, "items", list, path)
    return frozenset(freeze(_from_json(v, f"{path}[{i}]")) for i, v in enumerate(items))


def _untag_map(obj: dict[str, Any], path: str) -> FrozenDict[Any, Any]:
    out: dict[Any, Any] = {}
    for i, pair in enumerate(_tag_field(obj, "items", list, path)):
        if not isinstance(pair, list) or len(pair) != 2:
            raise DecodeError(f"'map' item {i} at {path} must be a [key, value] pair")
        key = freeze(_from_json(pair[0], f"{path}[{i}][0]"))
        out[key] = _from_json(pair[1], f"{path}[{key!r}]")
    return FrozenDict(out)


def _untag_float(obj: dict[str, Any], path: str) -> float:
    text = _tag_field(obj, "value", str, path)
    if text not in ("nan", "inf", "-inf"):
        raise DecodeError(f"'float' value at {path} must be 'nan', 'inf' or '-inf', got {text!r}")
    return float(text)


def _number(value: Any) -> float:
    if isinstance(value, dict):
        return _untag_float(value, "")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)


def _untag_decimal(obj: dict[str, Any], path: str) -> Decimal:
    try:
        return Decimal(_tag_field(obj, "value", str, path))
    except InvalidOperation as exc:
        raise DecodeError(f"'decimal' value at {path} is not a decimal") from exc


_UNTAGGERS: dict[str, Callable[[dict[str, Any], str], Any]] = {
    "bytes": lambda o, p: base64.b64decode(_tag_field(o, "b64", str, p), validate=True),
    "decimal": _untag_decimal,
    "datetime": lambda o, p: datetime.fromisoformat(_tag_field(o, "value", str, p)),
    "date": lambda o, p: date.fromisoformat(_tag_field(o, "value", str, p)),
    "time": lambda o, p: time.fromisoformat(_tag_field(o, "value", str, p)),
    "timedelta": lambda o, p: timedelta(
        days=_tag_field(o, "days", int, p),
        seconds=_tag_field(o, "seconds", int, p),
        microseconds=_tag_field(o, "microseconds", int, p),
    ),
    "uuid": lambda o, p: UUID(_tag_field(o, "value", str, p)),
    "complex": lambda o, p: complex(_number(o.get("real")), _number(o.get("imag"))),
    "float": _untag_float,
    "set": _untag_set,
    "map": _untag_map,
    "event": lambda o, p: _event_from_json(_tag_field(o, "value", dict, p), f"{p} event"),
}


def _field(obj: Mapping[str, Any], name: str, what: str, *, optional: bool = False) -> Any:
    if name not in obj:
        if optional:
            return None
        raise DecodeError(f"{what} is missing {name!r}")
    value = obj[name]
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise DecodeError(f"{what}: {name!r} must be a string, got {_json_kind(value)} {value!r}")
    return value


def _event_from_json(obj: dict[str, Any], what: str) -> Event:
    if obj.get("v") != _FORMAT_VERSION:
        raise DecodeError(
            f"{what}: format version 'v' is {obj.get('v')!r}; this reactor reads version "
            f"{_FORMAT_VERSION} (was it written by CloudEventsCodec or a newer reactor?)"
        )
    if "data" not in obj:
        raise DecodeError(f"{what} is missing 'data'")
    headers = obj.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise DecodeError(f"{what}: 'headers' must be an object of strings, got {headers!r}")
    return _build(
        what,
        id=_field(obj, "id", what),
        topic=_topic(_field(obj, "topic", what), what),
        data=_from_json(obj["data"], "data"),
        key=_field(obj, "key", what, optional=True),
        time=_parse_time(_field(obj, "time", what), f"{what}: 'time'"),
        source=_field(obj, "source", what),
        headers=headers,
        correlation_id=_field(obj, "correlation_id", what, optional=True),
        causation_id=_field(obj, "causation_id", what, optional=True),
    )


def _topic(topic: str, what: str) -> str:
    try:
        return validate_topic(topic)
    except InvalidTopicError as exc:
        raise DecodeError(f"{what}: 'topic' is not valid: {exc}") from exc


def _build(what: str, **fields: Any) -> Event:
    # Event's own checks (topic rules, non-empty id...) apply to decoded events
    # too; their errors become DecodeErrors that say which event was refused.
    try:
        return Event(**fields)
    except (ValueError, TypeError) as exc:
        raise DecodeError(f"{what} is not a valid event: {exc}") from exc


# --- JSON ----------------------------------------------------------------------------


@attrs.frozen(slots=True)
class JsonCodec:
    """reactor's own JSON encoding: exact round trip of every event field.

    See the module docstring for the tags used for non-JSON values in ``data``.

    Thread-safety: stateless; share freely.
    """

    name: ClassVar[str] = "json"
    content_type: ClassVar[str] = "application/json"

    def encode(self, event: Event) -> bytes:
        """Return ``event`` as UTF-8 JSON.

        Args:
            event: the event to encode.

        Returns:
            The encoded bytes.

        Raises:
            TypeError: ``event.data`` holds a value without a JSON form (an Enum,
                an attrs or dataclass instance); the message names its path.
        """
        try:
            obj = _event_to_json(event)
        except _Unencodable as exc:
            raise _unencodable_error(exc, "JsonCodec") from None
        return _dumps(obj).encode("utf-8")

    def decode(self, data: bytes) -> Event:
        """Return the event that :meth:`encode` wrote into ``data``.

        Args:
            data: bytes from :meth:`encode`.

        Returns:
            The event, equal to the one encoded.

        Raises:
            DecodeError: ``data`` is not such an encoding; the message says why.
        """
        obj = _load_object(data, "JSON event")
        return _decode_guarded(lambda: _event_from_json(obj, "JSON event"), "JSON event")


def _decode_guarded(decode: Callable[[], Event], what: str) -> Event:
    # The last line of defence for "decode raises only DecodeError": a
    # hostile payload may trip something we did not think of.
    try:
        return decode()
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(f"{what} could not be decoded: {type(exc).__name__}: {exc}") from exc


# --- CloudEvents ---------------------------------------------------------------------

_CE_EXTENSION_NAME = re.compile(r"[a-z0-9]{1,20}")
# Context attributes (required and optional) and our own extensions: a header
# with one of these names cannot be an extension attribute of its own.
_CE_TAKEN = frozenset(
    {
        "specversion",
        "id",
        "source",
        "type",
        "time",
        "datacontenttype",
        "data",
        "data_base64",
        "partitionkey",
        "correlationid",
        "causationid",
        "reactorheaders",
    }
)
_JSON_CONTENT = re.compile(r"(?:application|text)/(?:[\w.+-]+\+)?json(?:\s*;.*)?", re.IGNORECASE)


@attrs.frozen(slots=True)
class CloudEventsCodec:
    """CloudEvents 1.0, JSON structured mode (``application/cloudevents+json``).

    See the module docstring for how event fields map to attributes.

    Thread-safety: stateless; share freely.
    """

    name: ClassVar[str] = "cloudevents"
    content_type: ClassVar[str] = "application/cloudevents+json"

    def encode(self, event: Event) -> bytes:
        """Return ``event`` as a structured-mode CloudEvent.

        Args:
            event: the event to encode.

        Returns:
            UTF-8 JSON bytes.

        Raises:
            TypeError: ``event.data`` is not plain JSON (nor top-level bytes);
                the message names the path of the offending value.
        """
        ce: dict[str, Any] = {
            "specversion": "1.0",
            "id": event.id,
            "source": event.source,
            "type": event.topic,
            "time": _format_time(event.time),
        }
        data = event.data
        if type(data) is bytes:
            ce["datacontenttype"] = "application/octet-stream"
            ce["data_base64"] = base64.b64encode(data).decode("ascii")
        elif data is not None:
            ce["datacontenttype"] = "application/json"
            try:
                ce["data"] = _to_json(data, False)
            except _Unencodable as exc:
                raise _unencodable_error(exc, "CloudEventsCodec") from None
        if event.key is not None:
            ce["partitionkey"] = event.key
        if event.correlation_id is not None:
            ce["correlationid"] = event.correlation_id
        if event.causation_id is not None:
            ce["causationid"] = event.causation_id
        others = {}
        for name, value in event.headers.items():
            if name not in _CE_TAKEN and _CE_EXTENSION_NAME.fullmatch(name):
                ce[name] = value
            else:
                others[name] = value
        if others:
            ce["reactorheaders"] = _dumps(others)
        return _dumps(ce).encode("utf-8")

    def decode(self, data: bytes) -> Event:
        """Return the event in a structured-mode CloudEvent, ours or another tool's.

        Args:
            data: UTF-8 JSON bytes of one CloudEvent.

        Returns:
            The event.

        Raises:
            DecodeError: ``data`` is not a CloudEvent this codec accepts; the
                message names the attribute at fault.
        """
        ce = _load_object(data, "CloudEvent")
        return _decode_guarded(lambda: _event_from_cloudevent(ce), "CloudEvent")


def _ce_required(ce: Mapping[str, Any], name: str) -> str:
    if name not in ce:
        raise DecodeError(f"CloudEvent is missing required attribute {name!r}")
    value = ce[name]
    if not isinstance(value, str) or not value:
        raise DecodeError(
            f"CloudEvent attribute {name!r} must be a non-empty string, got {value!r}"
        )
    return value


def _ce_optional(ce: Mapping[str, Any], name: str) -> str | None:
    # JSON null means "absent" for an optional attribute.
    value = ce.get(name)
    if value is not None and not isinstance(value, str):
        raise DecodeError(f"CloudEvent attribute {name!r} must be a string, got {value!r}")
    return value


def _event_from_cloudevent(ce: dict[str, Any]) -> Event:
    specversion = _ce_required(ce, "specversion")
    if specversion != "1.0":
        raise DecodeError(
            f"CloudEvent attribute 'specversion' is {specversion!r}; only '1.0' is supported"
        )
    event_id = _ce_required(ce, "id")
    source = _ce_required(ce, "source")
    topic = _ce_required(ce, "type")
    try:
        validate_topic(topic)
    except InvalidTopicError as exc:
        raise DecodeError(
            f"CloudEvent attribute 'type' is not a valid reactor topic: {exc}"
        ) from exc
    if ce.get("time") is not None:
        when = _parse_time(ce["time"], "CloudEvent attribute 'time'")
    else:
        when = datetime.now(_UTC)
    content_type = _ce_optional(ce, "datacontenttype")

    if "data" in ce and "data_base64" in ce:
        raise DecodeError("CloudEvent has both 'data' and 'data_base64'; it may have only one")
    if "data_base64" in ce:
        encoded = _ce_optional(ce, "data_base64")
        try:
            data: Any = base64.b64decode(encoded or "", validate=True)
        except (binascii.Error, ValueError) as exc:
            raise DecodeError(f"CloudEvent attribute 'data_base64' is not base64: {exc}") from exc
    elif "data" in ce:
        data = ce["data"]
        # JSON data is used as parsed (CloudEvents data has no tags: a
        # '__reactor__' key is just a key); the Event freezes it.
        if not (content_type is None or _JSON_CONTENT.fullmatch(content_type)) and not isinstance(
            data, str
        ):
            # Non-JSON content arrives as a JSON string; anything else is malformed.
            raise DecodeError(
                f"CloudEvent attribute 'data' must be a string for datacontenttype "
                f"{content_type!r}, got {_json_kind(data)}"
            )
    else:
        data = None

    headers: dict[str, str] = {}
    if "reactorheaders" in ce:
        raw = _ce_optional(ce, "reactorheaders") or ""
        try:
            packed = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise DecodeError(
                f"CloudEvent attribute 'reactorheaders' is not a JSON object string: {exc}"
            ) from exc
        if not isinstance(packed, dict) or not all(isinstance(v, str) for v in packed.values()):
            raise DecodeError(
                "CloudEvent attribute 'reactorheaders' must hold a JSON object of strings"
            )
        headers.update(packed)
    for name, value in ce.items():
        if name in _CE_TAKEN:
            continue
        if isinstance(value, str):
            headers[name] = value
        elif isinstance(value, bool):  # CloudEvents' canonical string form
            headers[name] = "true" if value else "false"
        elif isinstance(value, int):
            headers[name] = str(value)
        elif value is not None:
            raise DecodeError(
                f"CloudEvent extension attribute {name!r} must be a string, integer or "
                f"boolean, got {_json_kind(value)}"
            )

    return _build(
        "CloudEvent",
        id=event_id,
        topic=topic,
        data=data,
        key=_ce_optional(ce, "partitionkey"),
        time=when,
        source=source,
        headers=headers,
        correlation_id=_ce_optional(ce, "correlationid"),
        causation_id=_ce_optional(ce, "causationid"),
    )
