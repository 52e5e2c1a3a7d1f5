"""JSON text for the codecs: JSON values to compact UTF-8 bytes and back, by orjson or the stdlib.

Two implementations, one behaviour. ``orjson`` (in the ``redis`` extra) is used
when it can be imported, the standard library's :mod:`json` otherwise or when a
codec is made with ``json="stdlib"``. Bytes written by either are read by
either to the same values, and an input is accepted or refused alike:

- orjson refuses a few things the stdlib handles (integers beyond 64 bits and
  lone surrogates on encode; ``NaN`` and ``Infinity``, lone surrogate escapes,
  numbers past a double's range, very deep nesting and anything malformed on
  decode): each of those goes to the stdlib, which decides, and whose error
  message says why;
- orjson would read an integer beyond 64 bits as a float without a word, so
  bytes holding a run of 19 or more digits are read by the stdlib.

Thread-safety: every function here is safe to call from any thread.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

import attrs

from reactor.errors import DecodeError, UsageError

try:
    import orjson
except ImportError:  # an optional extra: the stdlib path does the same work, slower
    orjson = None  # type: ignore[assignment]

__all__ = [
    "JSON_LIBRARIES",
    "JsonText",
    "json_kind",
    "json_text",
    "load_object",
    "quote",
    "stdlib_dumps",
]

JSON_LIBRARIES: Final = ("auto", "orjson", "stdlib")

# A str as JSON text, quotes included, non-ASCII left as it is (C, from the stdlib):
# the codecs write their fixed attributes around it.
quote: Final[Callable[[str], str]] = json.encoder.encode_basestring

# --- the stdlib path -----------------------------------------------------------------

# No circular check: the codecs hand over trees they have just built.
_encoder = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, check_circular=False, separators=(",", ":")
)
stdlib_dumps: Callable[[Any], str] = _encoder.encode
# JSONEncoder.encode() makes a new C encoder on every call; this one is made
# once, with the same settings, and reused (it holds no state between calls).
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
if _c_make_encoder is not None:
    _c_encode = _c_make_encoder(
        None,  # markers: no circular check
        _encoder.default,  # raises TypeError naming the type, as json.dumps does
        json.encoder.encode_basestring,  # ensure_ascii=False
        None,  # indent
        ":",
        ",",
        False,  # sort_keys
        False,  # skipkeys
        False,  # allow_nan
    )

    def stdlib_dumps(obj: Any) -> str:
        return "".join(_c_encode(obj, 0))


# json.loads() strips whitespace with two regex matches around the scanner;
# the text we write has none, so the scanner alone is tried first.
_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # set in __init__, not in typeshed


def _stdlib_loads(data: bytes) -> Any:
    text = data.decode("utf-8")
    try:
        obj, end = _scan(text, 0)
    except StopIteration:  # leading whitespace, or not JSON: json.loads says which
        return json.loads(text)
    if end == len(text):
        return obj
    return json.loads(text)  # trailing whitespace is fine, anything else is "Extra data"


# --- the orjson path -----------------------------------------------------------------

# Every byte to " " but digits to "0": a run of 19 zeros is a long number somewhere.
_DIGITS: Final = bytes(0x30 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))
_LONG_NUMBER: Final = b"0" * 19


def _orjson_dumps(obj: Any) -> str:
    try:
        return orjson.dumps(obj).decode("utf-8")
    except orjson.JSONEncodeError:  # an int past 64 bits, a lone surrogate: the stdlib decides
        return stdlib_dumps(obj)


def _orjson_loads(data: bytes) -> Any:
    if _LONG_NUMBER not in data.translate(_DIGITS):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # the stdlib accepts it (NaN, a lone surrogate...) or says what is wrong
    return _stdlib_loads(data)


# --- choosing ------------------------------------------------------------------------


@attrs.frozen(slots=True)
class JsonText:
    """A pair of functions: JSON value to compact JSON text, and UTF-8 bytes to JSON value.

    ``dumps`` raises what :func:`json.dumps` raises; ``loads`` raises
    ``UnicodeDecodeError``, :class:`json.JSONDecodeError`, ``ValueError`` or
    ``RecursionError`` (see :func:`load_object` for their DecodeError forms).
    """

    library: str
    dumps: Callable[[Any], str]
    loads: Callable[[bytes], Any]


_STDLIB: Final = JsonText("stdlib", stdlib_dumps, _stdlib_loads)
_ORJSON: Final = None if orjson is None else JsonText("orjson", _orjson_dumps, _orjson_loads)


def json_text(library: str) -> JsonText:
    """The JSON implementation named by ``library``: ``"auto"``, ``"orjson"`` or ``"stdlib"``.

    ``"auto"`` is orjson when it is installed, else the stdlib.

    Raises:
        UsageError: ``library`` is not one of those, or is ``"orjson"`` and
            orjson is not installed.
    """
    if library == "stdlib":
        return _STDLIB
    if library == "auto":
        return _STDLIB if _ORJSON is None else _ORJSON
    if library == "orjson":
        if _ORJSON is None:
            raise UsageError(
                "json='orjson' needs orjson: pip install 'reactor-actors[redis]' "
                "(or orjson), or use json='auto'"
            )
        return _ORJSON
    raise UsageError(f"json={library!r} is not a JSON library; use one of {JSON_LIBRARIES}")


def load_object(data: Any, what: str, loads: Callable[[bytes], Any]) -> dict[str, Any]:
    """Parse ``data`` as a UTF-8 JSON object, or raise DecodeError saying why not.

    Args:
        data: the bytes (a ``bytearray`` or ``memoryview`` is copied).
        what: how to name the input in an error, e.g. ``"CloudEvent"``.
        loads: the parser, from :func:`json_text`.

    Raises:
        DecodeError: ``data`` is not bytes, not UTF-8, not JSON, or not an object.
    """
    if type(data) is not bytes:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise DecodeError(f"{what}: expected bytes, got {type(data).__name__}")
        data = bytes(data)
    try:
        obj = loads(data)
    except UnicodeDecodeError as exc:
        raise DecodeError(
            f"{what}: bytes are not UTF-8 ({exc.reason} at byte {exc.start})"
        ) from exc
    except json.JSONDecodeError as exc:
        raise DecodeError(
            f"{what}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from exc
    except (ValueError, RecursionError) as exc:  # e.g. an int too long, or nesting too deep
        raise DecodeError(f"{what}: not decodable JSON ({exc})") from exc
    if type(obj) is not dict:
        raise DecodeError(f"{what}: expected a JSON object, got a JSON {json_kind(obj)}")
    return obj


def json_kind(value: Any) -> str:
    """JSON's name for the type of a parsed value: ``"object"``, ``"array"``, ..."""
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
