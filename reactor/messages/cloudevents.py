"""CloudEvents 1.0 attributes from an event and back, for :class:`~reactor.CloudEventsCodec`.

The mapping is tabled in :mod:`reactor.messages.codecs`. Decoding accepts what
other tools write (any offset in ``time``, no ``time`` at all, unknown
extensions); every refusal is a :class:`~reactor.errors.DecodeError` naming the
attribute.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from reactor.errors import DecodeError
from reactor.messages.event import SCHEMA_VERSION, Event
from reactor.messages.jsontext import json_kind, quote
from reactor.messages.jsonvalues import build_event, checked_topic, format_time, parse_time, to_json

__all__ = ["cloudevent_text", "event_from_cloudevent"]

_EXTENSION_NAME = re.compile(r"[a-z0-9]{1,20}")
# Context attributes (required and optional) and our own extensions: a header
# with one of these names cannot be an extension attribute of its own.
_TAKEN: Final = frozenset(
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
        "schemaversion",
    }
)
# The extension attribute of Event.version (the reactor-schema-version header): an
# Integer, so other tools can compare versions; absent for version 1.
_SCHEMA_VERSION: Final = "schemaversion"
_JSON_CONTENT = re.compile(r"(?:application|text)/(?:[\w.+-]+\+)?json(?:\s*;.*)?", re.IGNORECASE)
# The packed headers are a JSON string inside the event: the stdlib writes and reads it.
_pack = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def cloudevent_text(event: Event, dumps: Callable[[Any], str]) -> str:
    """The CloudEvent of ``event`` as JSON text; ``dumps`` writes ``data``.

    Raises:
        Unencodable: ``event.data`` is not plain JSON nor top-level bytes.
    """
    data = event.data
    if data is None:
        body = ""
    elif type(data) is bytes:
        encoded = base64.b64encode(data).decode("ascii")
        body = f',"datacontenttype":"application/octet-stream","data_base64":"{encoded}"'
    else:
        body = f',"datacontenttype":"application/json","data":{dumps(to_json(data, False))}'
    text = (
        f'{{"specversion":"1.0","id":{quote(event.id)},"source":{quote(event.source)},'
        f'"type":{quote(event.topic)},"time":"{format_time(event.time)}"{body}'
    )
    if event.key is not None:
        text += ',"partitionkey":' + quote(event.key)
    if event.correlation_id is not None:
        text += ',"correlationid":' + quote(event.correlation_id)
    if event.causation_id is not None:
        text += ',"causationid":' + quote(event.causation_id)
    if event.headers:
        others = {}
        for name, value in event.headers.items():
            if name == SCHEMA_VERSION:
                text += f',"{_SCHEMA_VERSION}":{value}'  # decimal digits: a JSON integer
            elif name not in _TAKEN and _EXTENSION_NAME.fullmatch(name):
                text += f',"{name}":{quote(value)}'  # the name is [a-z0-9]: nothing to escape
            else:
                others[name] = value
        if others:
            text += ',"reactorheaders":' + quote(_pack(others))
    return text + "}"


def _required(ce: Mapping[str, Any], name: str) -> str:
    value = ce.get(name)
    if type(value) is str and value:
        return value
    if name not in ce:
        raise DecodeError(f"CloudEvent is missing required attribute {name!r}")
    raise DecodeError(f"CloudEvent attribute {name!r} must be a non-empty string, got {value!r}")


def _optional(ce: Mapping[str, Any], name: str) -> str | None:
    # JSON null means "absent" for an optional attribute.
    value = ce.get(name)
    if value is not None and type(value) is not str:
        raise DecodeError(f"CloudEvent attribute {name!r} must be a string, got {value!r}")
    return value


def event_from_cloudevent(ce: dict[str, Any]) -> Event:
    """The event in the CloudEvent attributes ``ce``, ours or another tool's.

    Raises:
        DecodeError: ``ce`` is not a CloudEvent this codec accepts; the message
            names the attribute at fault.
    """
    get: Callable[[str], Any] = ce.get
    event_id, source, topic = get("id"), get("source"), get("type")
    key, correlation_id, causation_id = (
        get("partitionkey"),
        get("correlationid"),
        get("causationid"),
    )
    if not (
        get("specversion") == "1.0"
        and type(event_id) is str
        and type(source) is str
        and type(topic) is str
        and event_id
        and source
        and type(key) in _STRING_OR_NULL
        and type(correlation_id) in _STRING_OR_NULL
        and type(causation_id) in _STRING_OR_NULL
    ):
        _refuse_attributes(ce)  # always raises, naming the first attribute at fault
    when = get("time")
    return build_event(
        "CloudEvent",
        event_id,
        checked_topic(topic, "CloudEvent attribute 'type' is not a valid reactor topic"),
        _data(ce),
        key,
        datetime.now(UTC) if when is None else parse_time(when, "CloudEvent attribute 'time'"),
        source,
        _headers(ce),
        correlation_id,
        causation_id,
    )


_STRING_OR_NULL: Final = frozenset({str, type(None)})


def _refuse_attributes(ce: dict[str, Any]) -> None:
    specversion = _required(ce, "specversion")
    if specversion != "1.0":
        raise DecodeError(
            f"CloudEvent attribute 'specversion' is {specversion!r}; only '1.0' is supported"
        )
    for name in ("id", "source", "type"):
        _required(ce, name)
    for name in ("partitionkey", "correlationid", "causationid"):
        _optional(ce, name)
    raise AssertionError("_refuse_attributes found nothing to refuse")  # pragma: no cover


def _data(ce: dict[str, Any]) -> Any:
    content_type = _optional(ce, "datacontenttype")
    if "data_base64" in ce:
        if "data" in ce:
            raise DecodeError("CloudEvent has both 'data' and 'data_base64'; it may have only one")
        encoded = _optional(ce, "data_base64")
        try:
            return base64.b64decode(encoded or "", validate=True)
        except (binascii.Error, ValueError) as exc:
            raise DecodeError(f"CloudEvent attribute 'data_base64' is not base64: {exc}") from exc
    if "data" not in ce:
        return None
    data = ce["data"]
    # JSON data is used as parsed (CloudEvents data has no tags: a '__reactor__'
    # key is just a key); the Event freezes it.
    if (
        content_type is not None
        and content_type != "application/json"
        and not _JSON_CONTENT.fullmatch(content_type)
        and not isinstance(data, str)
    ):
        # Non-JSON content arrives as a JSON string; anything else is malformed.
        raise DecodeError(
            f"CloudEvent attribute 'data' must be a string for datacontenttype "
            f"{content_type!r}, got {json_kind(data)}"
        )
    return data


def _headers(ce: dict[str, Any]) -> dict[str, str]:
    headers: dict[str, str] = {}
    if "reactorheaders" in ce:
        raw = _optional(ce, "reactorheaders") or ""
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
    if _SCHEMA_VERSION in ce:
        headers[SCHEMA_VERSION] = _schema_version(ce[_SCHEMA_VERSION])
    if ce.keys() <= _TAKEN:  # the usual case: no extension attributes at all
        return headers
    for name, value in ce.items():
        if name in _TAKEN:
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
                f"boolean, got {json_kind(value)}"
            )
    return headers


def _schema_version(value: Any) -> str:
    """The ``reactor-schema-version`` header of a ``schemaversion`` attribute (an Integer >= 1).

    Its CloudEvents string form (``"2"``) is accepted too, as for any Integer attribute.
    """
    if type(value) is int and value >= 1:
        return str(value)
    if type(value) is str and value.isascii() and value.isdigit() and value[0] != "0":
        return value
    raise DecodeError(
        f"CloudEvent attribute {_SCHEMA_VERSION!r} must be an integer >= 1 (the event's "
        f"schema version), got {value!r}"
    )
