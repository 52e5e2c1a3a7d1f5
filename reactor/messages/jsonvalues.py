"""Python values to JSON values and back, for the codecs: tags, times, reactor's envelope.

What each value becomes is tabled in :mod:`reactor.messages.codecs`. Both codecs
are written over these functions: ``to_json`` with ``tagged=False`` is the
CloudEvents rule (plain JSON or a ``TypeError``), with ``tagged=True`` it is
:class:`~reactor.JsonCodec`'s (every value :func:`~reactor.freeze` keeps, but
Enum members and attrs or dataclass instances, which would need their class
rebuilt from bytes: exactly what pickle does wrong).

The hot paths are a flat mapping of strings and numbers, one way and the other;
they cost one type check per value here, and nested values take the general path.

Every decoding failure is a :class:`~reactor.errors.DecodeError` naming what
was wrong and where (``data['items'][2]``).
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
from typing import Any, Final
from uuid import UUID

from reactor.errors import DecodeError, InvalidTopicError
from reactor.messages.event import Event
from reactor.messages.freeze import FrozenDict, freeze
from reactor.messages.jsontext import json_kind, quote, stdlib_dumps
from reactor.messages.topics import validate_topic

__all__ = [
    "TAG",
    "Unencodable",
    "build_event",
    "checked_topic",
    "event_from_json",
    "event_text",
    "format_time",
    "from_json",
    "parse_time",
    "to_json",
    "unencodable_error",
]

TAG: Final = "__reactor__"
FORMAT_VERSION: Final = 1
# Values that are their own JSON form. Not float: a float must be finite.
_PLAIN: Final[frozenset[type]] = frozenset({str, int, bool, type(None)})


# --- encoding ------------------------------------------------------------------------


class Unencodable(Exception):
    """A value cannot be encoded; ``segments`` collects its path on the way up."""

    def __init__(self, value: Any, why: str) -> None:
        super().__init__(why)
        self.value = value
        self.why = why
        self.segments: list[str] = []


def unencodable_error(exc: Unencodable, codec: str) -> TypeError:
    """The ``TypeError`` a codec raises for ``exc``: the value's path, type and what to do."""
    path = "data" + "".join(reversed(exc.segments))
    t = type(exc.value)
    return TypeError(f"{codec} cannot encode {path}, a {t.__module__}.{t.__qualname__}: {exc.why}")


def _tagged(value: Any, t: type) -> dict[str, Any] | None:  # noqa: PLR0911 - one per tag
    """Return the tagged form of a non-JSON scalar, or None if it has none."""
    if t is bytes:
        return {TAG: "bytes", "b64": base64.b64encode(value).decode("ascii")}
    if t is Decimal:
        return {TAG: "decimal", "value": str(value)}
    if t is datetime or t is date or t is time:
        return {TAG: t.__name__, "value": value.isoformat()}
    if t is timedelta:
        return {
            TAG: "timedelta",
            "days": value.days,
            "seconds": value.seconds,
            "microseconds": value.microseconds,
        }
    if t is UUID:
        return {TAG: "uuid", "value": str(value)}
    if t is complex:
        return {TAG: "complex", "real": _float(value.real), "imag": _float(value.imag)}
    if t is float:
        return {TAG: "float", "value": repr(value)}
    return None


def _float(value: float) -> Any:
    return value if math.isfinite(value) else {TAG: "float", "value": repr(value)}


def to_json(value: Any, tagged: bool) -> Any:  # noqa: PLR0911 - one return per JSON type
    """Convert frozen ``value`` into what ``json`` can write (tagged or plain JSON).

    Raises:
        Unencodable: ``value`` or a part of it has no form under this rule.
    """
    t = type(value)
    if t in _PLAIN:
        return value
    if t is float and math.isfinite(value):
        return value
    if t is FrozenDict or t is dict or isinstance(value, Mapping):
        out: dict[str, Any] = {}
        plain = _PLAIN
        for k, v in value.items():
            if type(k) is not str or k == TAG:
                if tagged:
                    return _map_to_json(value)
                if type(k) is not str:
                    raise Unencodable(
                        value, f"key {k!r} is not a str (JSON object keys are strings)"
                    )
            if type(v) in plain:
                out[k] = v
                continue
            try:
                out[k] = to_json(v, tagged)
            except Unencodable as exc:
                exc.segments.append(f"[{k!r}]")
                raise
        return out
    if t is tuple or t is list or isinstance(value, (tuple, list)):
        return _items_to_json(value, tagged)
    if tagged:
        if t is frozenset or t is set:
            return {TAG: "set", "items": _items_to_json(value, tagged)}
        if t is Event:
            # Rare enough to go through text: the envelope is written in one place.
            return {TAG: "event", "value": json.loads(event_text(value, stdlib_dumps))}
        tag = _tagged(value, t)
        if tag is not None:
            return tag
        raise Unencodable(
            value,
            "JsonCodec writes JSON types, bytes, Decimal, datetime, date, time, "
            "timedelta, UUID, complex, frozenset and Event; convert it to one of those",
        )
    raise Unencodable(
        value,
        "CloudEvents data must be plain JSON (mappings with str keys, lists, "
        "str, int, finite float, bool, None) or top-level bytes; convert it first",
    )


def _items_to_json(value: Any, tagged: bool) -> list[Any]:
    out = []
    for i, v in enumerate(value):
        try:
            out.append(to_json(v, tagged))
        except Unencodable as exc:
            exc.segments.append(f"[{i}]")
            raise
    return out


def _map_to_json(value: Mapping[Any, Any]) -> dict[str, Any]:
    items = []
    for k, v in value.items():
        try:
            items.append([to_json(k, True), to_json(v, True)])
        except Unencodable as exc:
            exc.segments.append(f"[{k!r}]")
            raise
    return {TAG: "map", "items": items}


# "YYYY-MM-DDTHH:MM:SS" by Unix second: events come in bursts within one second,
# and formatting the date and the offset is most of what isoformat() costs.
_SECONDS: dict[int, str] = {}
# Below 2**32 a float timestamp resolves a microsecond, so int() is the right second.
_CACHED_UNTIL: Final = 2.0**32


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with microseconds and ``Z``, as both codecs write ``Event.time``."""
    if value.tzinfo is not UTC:  # Event.time is UTC already; other callers may differ
        value = value.astimezone(UTC)
    stamp = value.timestamp()
    if not 0 <= stamp < _CACHED_UNTIL:
        return value.isoformat(timespec="microseconds")[:-6] + "Z"  # "+00:00" -> "Z"
    second = int(stamp)
    prefix = _SECONDS.get(second)
    if prefix is None:
        if len(_SECONDS) >= 256:
            _SECONDS.clear()  # benign race: another thread may clear it too
        prefix = _SECONDS[second] = value.isoformat(timespec="seconds")[:19]
    return f"{prefix}.{value.microsecond:06d}Z"


def event_text(event: Event, dumps: Callable[[Any], str]) -> str:
    """reactor's own envelope of ``event`` as JSON text, with ``data`` tagged.

    The fixed keys are written around the values (``dumps`` writes ``data`` and
    the headers): the same JSON as a dict through ``dumps``, for half the work.

    Raises:
        Unencodable: ``event.data`` holds a value without a tagged form.
    """
    key, correlation_id, causation_id = event.key, event.correlation_id, event.causation_id
    headers = event.headers
    return (
        f'{{"v":{FORMAT_VERSION},"id":{quote(event.id)},"topic":{quote(event.topic)},'
        f'"time":"{format_time(event.time)}","source":{quote(event.source)},'
        f'"key":{"null" if key is None else quote(key)},'
        f'"correlation_id":{"null" if correlation_id is None else quote(correlation_id)},'
        f'"causation_id":{"null" if causation_id is None else quote(causation_id)},'
        f'"headers":{dumps(dict(headers.items())) if headers else "{}"},'
        f'"data":{dumps(to_json(event.data, True))}}}'
    )


# --- decoding ------------------------------------------------------------------------

_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,  # \d would otherwise accept any Unicode digit
)
# What format_time writes: fromisoformat reads it as it is, in UTC.
_OURS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", re.ASCII)


def parse_time(value: Any, what: str) -> datetime:
    """An RFC 3339 timestamp (``Z`` or any offset, any fraction) as a UTC datetime.

    Raises:
        DecodeError: ``value`` is not such a timestamp; the message starts with ``what``.
    """
    if type(value) is str and _OURS.fullmatch(value) is not None:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass  # the 13th month, say: the full path below names it
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
        return datetime.fromisoformat(text).astimezone(UTC)
    except ValueError as exc:
        raise DecodeError(f"{what} is not a valid time ({exc}): {value!r}") from exc


def from_json(value: Any, path: str) -> Any:
    """Undo ``to_json``'s tags; plain JSON containers are left for :func:`freeze`.

    A container with nothing to untag is returned as it is (freeze copies it).
    """
    t = type(value)
    if t is dict:
        if TAG in value:
            return _untag(value, path)
        for v in value.values():
            if type(v) is dict or type(v) is list:
                return {k: from_json(v, f"{path}[{k!r}]") for k, v in value.items()}
        return value
    if t is list:
        for v in value:
            if type(v) is dict or type(v) is list:
                return [from_json(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value
    return value


def _tag_field(obj: Mapping[str, Any], name: str, kind: type, path: str) -> Any:
    value = obj.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DecodeError(
            f"tagged value at {path} ({obj.get(TAG)!r}) needs {name!r} as a "
            f"{kind.__name__}, got {value!r}"
        )
    return value


def _untag(obj: dict[str, Any], path: str) -> Any:
    tag = obj[TAG]
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
    return frozenset(freeze(from_json(v, f"{path}[{i}]")) for i, v in enumerate(items))


def _untag_map(obj: dict[str, Any], path: str) -> FrozenDict[Any, Any]:
    out: dict[Any, Any] = {}
    for i, pair in enumerate(_tag_field(obj, "items", list, path)):
        if not isinstance(pair, list) or len(pair) != 2:
            raise DecodeError(f"'map' item {i} at {path} must be a [key, value] pair")
        key = freeze(from_json(pair[0], f"{path}[{i}][0]"))
        out[key] = from_json(pair[1], f"{path}[{key!r}]")
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
    "event": lambda o, p: event_from_json(_tag_field(o, "value", dict, p), f"{p} event"),
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
        raise DecodeError(f"{what}: {name!r} must be a string, got {json_kind(value)} {value!r}")
    return value


def event_from_json(obj: dict[str, Any], what: str) -> Event:
    """The event in reactor's envelope ``obj``.

    Raises:
        DecodeError: ``obj`` is not such an envelope; the message starts with ``what``.
    """
    get: Callable[..., Any] = obj.get
    event_id, topic, source, when = get("id"), get("topic"), get("source"), get("time")
    key, correlation_id, causation_id = get("key"), get("correlation_id"), get("causation_id")
    headers = get("headers", _NO_HEADERS)
    if not (
        get("v") == FORMAT_VERSION
        and "data" in obj
        and type(event_id) is str
        and type(topic) is str
        and type(source) is str
        and type(when) is str
        and type(key) in _STRING_OR_NULL
        and type(correlation_id) in _STRING_OR_NULL
        and type(causation_id) in _STRING_OR_NULL
        and type(headers) is dict
        and all(type(v) is str for v in headers.values())
    ):
        _refuse_envelope(obj, what)  # always raises, naming the first field at fault
    return build_event(
        what,
        event_id,
        checked_topic(topic, f"{what}: 'topic' is not valid"),
        from_json(obj["data"], "data"),
        key,
        parse_time(when, f"{what}: 'time'"),
        source,
        headers,
        correlation_id,
        causation_id,
    )


_STRING_OR_NULL: Final = frozenset({str, type(None)})
_NO_HEADERS: Final[dict[str, str]] = {}


def _refuse_envelope(obj: dict[str, Any], what: str) -> None:
    if obj.get("v") != FORMAT_VERSION:
        raise DecodeError(
            f"{what}: format version 'v' is {obj.get('v')!r}; this reactor reads version "
            f"{FORMAT_VERSION} (was it written by CloudEventsCodec or a newer reactor?)"
        )
    if "data" not in obj:
        raise DecodeError(f"{what} is missing 'data'")
    headers = obj.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise DecodeError(f"{what}: 'headers' must be an object of strings, got {headers!r}")
    for name in ("id", "topic", "time", "source"):
        _field(obj, name, what)
    for name in ("key", "correlation_id", "causation_id"):
        _field(obj, name, what, optional=True)
    raise AssertionError("_refuse_envelope found nothing to refuse")  # pragma: no cover


def checked_topic(value: str, problem: str) -> str:
    """``value`` if it is a valid topic; else a DecodeError ``"{problem}: {why}"``."""
    try:
        return validate_topic(value)
    except InvalidTopicError as exc:
        raise DecodeError(f"{problem}: {exc}") from exc


def build_event(  # noqa: PLR0917 - the nine fields of an event, in their order
    what: str,
    id: str,
    topic: str,
    data: Any,
    key: str | None,
    time: datetime,
    source: str,
    headers: Mapping[str, str],
    correlation_id: str | None,
    causation_id: str | None,
) -> Event:
    """The decoded event, with every check of ``Event``'s own (a failure is a DecodeError)."""
    # Event.create runs the same checks as Event(), by its faster path; it can
    # only be used when the flow id is given, since it fills in a missing one.
    try:
        if correlation_id is not None:
            return Event.create(
                topic,
                data,
                key=key,
                source=source,
                headers=headers or None,
                correlation_id=correlation_id,
                causation_id=causation_id,
                id=id,
                time=time,
            )
        return Event(
            id=id,
            topic=topic,
            data=data,
            key=key,
            time=time,
            source=source,
            headers=headers,
            correlation_id=None,
            causation_id=causation_id,
        )
    except (ValueError, TypeError) as exc:
        raise DecodeError(f"{what} is not a valid event: {exc}") from exc
