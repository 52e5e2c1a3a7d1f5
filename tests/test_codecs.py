"""JSON and CloudEvents codecs: exact round trips, interop, and undecodable bytes."""

from __future__ import annotations

import enum
import inspect
import json
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import reactor
from reactor import CloudEventsCodec, Codec, Event, FrozenDict, JsonCodec, messages
from reactor.errors import DecodeError, UsageError
from reactor.messages import jsontext
from reactor.messages.jsonvalues import format_time, parse_time

# Every codec test runs on both JSON libraries; orjson's runs are skipped where
# it is not installed (it comes with the redis and test extras).
try:
    import orjson  # noqa: F401 - only to know whether it is there
except ImportError:
    HAS_ORJSON = False
else:
    HAS_ORJSON = True
LIBRARIES = [
    "stdlib",
    pytest.param(
        "orjson", marks=pytest.mark.skipif(not HAS_ORJSON, reason="orjson is not installed")
    ),
]


@pytest.fixture(params=LIBRARIES)
def library(request: pytest.FixtureRequest) -> str:
    """The JSON library the codecs of a test write and read with."""
    return str(request.param)


@pytest.fixture(params=["json", "cloudevents"])
def codec(request: pytest.FixtureRequest, library: str) -> Codec:
    """Each codec, on each JSON library."""
    kind = JsonCodec if request.param == "json" else CloudEventsCodec
    return kind(json=library)


@pytest.fixture
def json_codec(library: str) -> JsonCodec:
    return JsonCodec(json=library)


@pytest.fixture
def ce_codec(library: str) -> CloudEventsCodec:
    return CloudEventsCodec(json=library)


class Color(enum.Enum):
    RED = 1


CodecType = type[JsonCodec] | type[CloudEventsCodec]


def full_event(data: Any = None, **overrides: Any) -> Event:
    fields: dict[str, Any] = {
        "key": "customer-7",
        "source": "web",
        "headers": {"traceparent": "00-abc", "X-Tenant": "acme", "type": "clash"},
        "causation_id": "parent-id",
        "correlation_id": "flow-id",
    }
    fields.update(overrides)
    return Event.create("orders.created", data, **fields)


def test_the_codecs_satisfy_the_protocol(codec: Codec) -> None:
    assert isinstance(codec, Codec)
    assert (JsonCodec.name, JsonCodec.content_type) == ("json", "application/json")
    assert CloudEventsCodec().name == "cloudevents"
    assert CloudEventsCodec().content_type == "application/cloudevents+json"


def test_the_messages_package_is_no_second_face() -> None:
    # reactor's __init__ is the one curated face; the layer package re-exports nothing.
    public = {
        name
        for name, value in vars(messages).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert messages.__all__ == []
    assert public == set()
    for name in ("CloudEventsCodec", "Codec", "Event", "FrozenDict", "JsonCodec", "freeze"):
        assert name in reactor.__all__


@pytest.mark.parametrize(
    "data",
    [None, 1, "s", 1.5, -0.0, True, [1, [2, {"a": None}]], {"a": {"b": [1.25, "x"]}}, {}, []],
    ids=repr,
)
def test_round_trip_of_json_data(codec: Codec, data: Any) -> None:
    e = full_event(data)
    assert codec.decode(codec.encode(e)) == e


def test_round_trip_with_minimal_fields(codec: Codec) -> None:
    e = Event.create("$system.actor.started")
    assert codec.decode(codec.encode(e)) == e
    bare = attrs.evolve(e, correlation_id=None)
    assert codec.decode(codec.encode(bare)) == bare


def test_json_round_trips_tagged_values(json_codec: JsonCodec) -> None:
    inner = Event.create("inner.event", {"n": 1})
    data = {
        "bytes": b"\x00\xff",
        "decimal": Decimal("1.10"),
        "aware": datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=-3))),
        "naive": datetime(2024, 1, 2, 3, 4, 5),
        "date": date(2024, 1, 2),
        "time": time(1, 2, 3, 4),
        "delta": timedelta(days=-1, seconds=5, microseconds=7),
        "uuid": UUID(int=99),
        "complex": complex(1, float("inf")),
        "inf": float("-inf"),
        "set": {1, "a", (1, 2)},
        "int keys": {1: "one", (2, 3): "tuple", None: "none"},
        "tag clash": {"__reactor__": "bytes", "b64": "not really"},
        "event": inner,
    }
    e = full_event(data)
    decoded = json_codec.decode(json_codec.encode(e))
    assert decoded == e
    assert type(decoded.data["decimal"]) is Decimal
    assert decoded.data["event"] == inner
    assert str(decoded.data["decimal"]) == "1.10"


def test_json_refuses_unencodable_values_naming_the_path(json_codec: JsonCodec) -> None:
    e = Event.create("a", {"items": [1, {"color": Color.RED}]})
    with pytest.raises(TypeError, match=r"data\['items'\]\[1\]\['color'\].*Color"):
        json_codec.encode(e)


def test_cloudevents_layout(ce_codec: CloudEventsCodec) -> None:
    e = full_event({"n": 1})
    ce = json.loads(ce_codec.encode(e))
    assert ce["specversion"] == "1.0"
    assert ce["id"] == e.id
    assert ce["source"] == "web"
    assert ce["type"] == "orders.created"
    assert ce["time"].endswith("Z")
    assert ce["datacontenttype"] == "application/json"
    assert ce["data"] == {"n": 1}
    assert ce["partitionkey"] == "customer-7"
    assert ce["correlationid"] == "flow-id"
    assert ce["causationid"] == "parent-id"
    assert ce["traceparent"] == "00-abc"  # a valid extension name: its own attribute
    # Not valid extension names (upper case, or taken): packed into one extension.
    assert json.loads(ce["reactorheaders"]) == {"X-Tenant": "acme", "type": "clash"}
    assert "X-Tenant" not in ce


def test_cloudevents_bytes_data_uses_data_base64(ce_codec: CloudEventsCodec) -> None:
    e = full_event(b"\x00binary")
    ce = json.loads(ce_codec.encode(e))
    assert ce["datacontenttype"] == "application/octet-stream"
    assert "data" not in ce
    assert ce_codec.decode(ce_codec.encode(e)) == e


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"when": date(2024, 1, 1)}, r"data\['when'\]"),
        ([1, b"x"], r"data\[1\]"),
        ({1: "a"}, r"data.*not a str"),
        ({"x": float("nan")}, r"data\['x'\]"),
    ],
)
def test_cloudevents_refuses_non_json_data(
    ce_codec: CloudEventsCodec, data: Any, path: str
) -> None:
    with pytest.raises(TypeError, match=path):
        ce_codec.encode(Event.create("a", data))


def ce_bytes(**attributes: Any) -> bytes:
    base: dict[str, Any] = {"specversion": "1.0", "id": "1", "source": "/tool", "type": "a.b"}
    base.update(attributes)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


def test_cloudevents_from_other_tools(ce_codec: CloudEventsCodec) -> None:
    codec = ce_codec
    e = codec.decode(
        ce_bytes(
            time="2024-05-01T14:00:00.123456789+02:00",
            data={"x": [1]},
            subject="orders/1",
            comexampleint=42,
            comexamplebool=True,
            comexamplenull=None,
        )
    )
    assert e.time == datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert e.time.tzinfo is UTC
    assert e.data == {"x": (1,)}
    assert e.key is None
    assert e.correlation_id is None
    assert e.causation_id is None
    assert e.headers == {"subject": "orders/1", "comexampleint": "42", "comexamplebool": "true"}
    # Re-encoding keeps what an Event can hold.
    assert codec.decode(codec.encode(e)) == e

    assert codec.decode(ce_bytes(time="2024-05-01t12:00:00z")).time == datetime(
        2024, 5, 1, 12, tzinfo=UTC
    )
    assert codec.decode(ce_bytes(datacontenttype="text/plain", data="hi")).data == "hi"
    assert codec.decode(ce_bytes(datacontenttype="application/json", data="hi")).data == "hi"
    assert codec.decode(ce_bytes(data={"__reactor__": "bytes"})).data == {"__reactor__": "bytes"}
    assert codec.decode(ce_bytes(partitionkey=None)).key is None


def test_cloudevent_without_time_gets_the_decode_time(ce_codec: CloudEventsCodec) -> None:
    before = datetime.now(UTC)
    e = ce_codec.decode(ce_bytes())
    assert before <= e.time <= datetime.now(UTC)


CE_ERRORS = [
    (b"\xff\xfe", "not UTF-8"),
    (b"{not json", "not JSON"),
    (b"[1, 2]", "JSON array"),
    (b"", "not JSON"),
    (ce_bytes(id=...), "missing required attribute 'id'"),
    (ce_bytes(source=...), "'source'"),
    (ce_bytes(type=...), "'type'"),
    (ce_bytes(specversion=...), "'specversion'"),
    (ce_bytes(specversion="0.3"), "'specversion' is '0.3'"),
    (ce_bytes(id=""), "'id'"),
    (ce_bytes(id=7), "'id'"),
    (ce_bytes(type="com.example/created"), "'type'"),
    (ce_bytes(type="orders.#"), "'type'"),
    (ce_bytes(time="yesterday"), "'time'"),
    (ce_bytes(time="2024-05-01T12:00:00"), "'time'"),  # no offset
    (ce_bytes(time="2024-13-01T12:00:00Z"), "'time'"),
    (ce_bytes(time=1714564800), "'time'"),
    (ce_bytes(partitionkey=7), "'partitionkey'"),
    (ce_bytes(data=1, data_base64="AA=="), "both 'data' and 'data_base64'"),
    (ce_bytes(data_base64="!!"), "'data_base64'"),
    (ce_bytes(datacontenttype="text/plain", data=[1]), "'data'"),
    (ce_bytes(comexample={"a": 1}), "'comexample'"),
    (ce_bytes(reactorheaders="{"), "'reactorheaders'"),
    (ce_bytes(reactorheaders='{"a": 1}'), "'reactorheaders'"),
]


@pytest.mark.parametrize(("raw", "reason"), CE_ERRORS, ids=[r for _, r in CE_ERRORS])
def test_cloudevents_decode_errors_say_what_is_wrong(
    ce_codec: CloudEventsCodec, raw: bytes, reason: str
) -> None:
    with pytest.raises(DecodeError) as info:
        ce_codec.decode(raw)
    assert reason in str(info.value)


def json_event_bytes(**changes: Any) -> bytes:
    obj = json.loads(JsonCodec().encode(full_event({"n": 1})))
    obj.update(changes)
    return json.dumps({k: v for k, v in obj.items() if v is not ...}).encode()


JSON_ERRORS = [
    (b"\x80", "not UTF-8"),
    (b"nope", "not JSON"),
    (b'"text"', "JSON string"),
    (b"1" * 5000, "JSON"),  # an int too long for Python to read
    (b"[" * 100_000, "JSON"),  # nesting too deep
    (json_event_bytes(v=2), "format version"),
    (json_event_bytes(v=...), "format version"),
    (json_event_bytes(id=...), "missing 'id'"),
    (json_event_bytes(data=...), "missing 'data'"),
    (json_event_bytes(topic="a b"), "'topic'"),
    (json_event_bytes(topic=None), "'topic'"),
    (json_event_bytes(time="2024"), "'time'"),
    (json_event_bytes(headers={"a": 1}), "'headers'"),
    (json_event_bytes(headers=[]), "'headers'"),
    (json_event_bytes(key=5), "'key'"),
    (json_event_bytes(source=""), "source"),
    (json_event_bytes(data={"__reactor__": "nope"}), "unknown tag 'nope'"),
    (json_event_bytes(data={"__reactor__": "bytes", "b64": "%%"}), "'bytes'"),
    (json_event_bytes(data={"__reactor__": "decimal", "value": "x"}), "'decimal'"),
    (json_event_bytes(data={"__reactor__": "set", "items": 3}), "'items'"),
    (json_event_bytes(data={"__reactor__": "map", "items": [[1]]}), "pair"),
    (json_event_bytes(data={"__reactor__": "float", "value": "1.5"}), "'float'"),
    (json_event_bytes(data={"__reactor__": "timedelta", "days": True}), "'days'"),
    (json_event_bytes(data={"__reactor__": "event", "value": {"v": 1}}), "missing"),
    (json_event_bytes(data={"__reactor__": "set", "items": [{"a": 1}, [1]]}), None),
]


@pytest.mark.parametrize(("raw", "reason"), JSON_ERRORS, ids=range(len(JSON_ERRORS)))
def test_json_decode_errors_say_what_is_wrong(
    json_codec: JsonCodec, raw: bytes, reason: str | None
) -> None:
    if reason is None:  # valid after all: set members are frozen before hashing
        assert json_codec.decode(raw).data == frozenset({FrozenDictOf(a=1), (1,)})
        return
    with pytest.raises(DecodeError) as info:
        json_codec.decode(raw)
    assert reason in str(info.value)


def FrozenDictOf(**items: Any) -> Any:
    return FrozenDict(items)


def test_non_bytes_input_is_a_decode_error(codec: Codec) -> None:
    with pytest.raises(DecodeError, match="expected bytes"):
        codec.decode("{}")  # type: ignore[arg-type]


# --- properties -------------------------------------------------------------------

words = st.text("abcXYZ019_-", min_size=1, max_size=5)
topics = st.lists(words, min_size=1, max_size=4).map(".".join)
ids = st.text(min_size=1, max_size=12)
json_data = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=15,
)
extra_data = st.recursive(
    json_data
    | st.binary(max_size=8)
    | st.decimals(allow_nan=False)
    | st.datetimes(timezones=st.none() | st.just(UTC))
    | st.dates()
    | st.times()
    | st.timedeltas()
    | st.uuids()
    | st.floats(allow_nan=False)
    | st.complex_numbers(allow_nan=False),
    lambda children: (
        st.lists(children, max_size=3)
        | st.frozensets(st.integers() | st.text(max_size=3), max_size=3)
        | st.dictionaries(
            st.integers() | st.text(max_size=5) | st.just("__reactor__"), children, max_size=3
        )
    ),
    max_leaves=15,
)
header_names = st.text(min_size=1, max_size=8) | st.sampled_from(["id", "type", "data", "ok"])
times = st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.just(UTC) | st.just(timezone(timedelta(hours=5, minutes=30))),
)


def events(data: st.SearchStrategy[Any]) -> st.SearchStrategy[Event]:
    return st.builds(
        Event.create,
        topic=topics,
        data=data,
        key=st.none() | st.text(max_size=8),
        source=ids,
        headers=st.dictionaries(header_names, st.text(max_size=8), max_size=4),
        correlation_id=st.none() | ids,
        causation_id=st.none() | ids,
        id=st.none() | ids,
        time=st.none() | times,
    )


@pytest.mark.parametrize("library", LIBRARIES)
@given(events(json_data))
def test_cloudevents_round_trip(library: str, event: Event) -> None:
    codec = CloudEventsCodec(json=library)
    assert codec.decode(codec.encode(event)) == event


@pytest.mark.parametrize("library", LIBRARIES)
@given(events(json_data | extra_data))
def test_json_round_trip(library: str, event: Event) -> None:
    codec = JsonCodec(json=library)
    decoded = codec.decode(codec.encode(event))
    assert decoded == event
    assert decoded.time.tzinfo is UTC


@pytest.mark.parametrize("kind", [JsonCodec, CloudEventsCodec])
@given(raw=st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_raise_decode_error(kind: CodecType, raw: bytes) -> None:
    assert _same_verdict(kind, raw) in (None, Event)


attribute_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12) | st.floats(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
known_names = st.sampled_from(
    [
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
        "v",
        "topic",
        "key",
        "headers",
        "correlation_id",
        "causation_id",
        "__reactor__",
        "items",
        "value",
        "b64",
    ]
)
plausible_values = (
    attribute_values
    | st.sampled_from(["1.0", "a.b", "2024-01-01T00:00:00Z", "AA==", "application/json"])
    | st.just(1)
)


@pytest.mark.parametrize("kind", [JsonCodec, CloudEventsCodec])
@given(obj=st.dictionaries(known_names | st.text(max_size=6), plausible_values, max_size=12))
def test_arbitrary_json_objects_decode_or_raise_decode_error(
    kind: CodecType, obj: dict[str, Any]
) -> None:
    _same_verdict(kind, json.dumps(obj).encode())


@pytest.mark.parametrize("kind", [JsonCodec, CloudEventsCodec])
@given(
    event=events(json_data), cut=st.integers(min_value=0, max_value=400), flip=st.integers(0, 255)
)
def test_damaged_encodings_decode_or_raise_decode_error(
    kind: CodecType, event: Event, cut: int, flip: int
) -> None:
    raw = bytearray(kind().encode(event))
    if raw:
        raw[cut % len(raw)] ^= flip
    for candidate in (bytes(raw), bytes(raw[:cut])):
        _same_verdict(kind, candidate)


# --- the two JSON libraries -----------------------------------------------------------

AVAILABLE = ["stdlib", "orjson"] if HAS_ORJSON else ["stdlib"]


def _outcome(codec: Codec, raw: bytes) -> Event | str:
    try:
        return codec.decode(raw)
    except DecodeError as exc:
        return f"DecodeError: {exc}"


def _same_verdict(kind: CodecType, raw: bytes) -> None:
    """Every JSON library decodes ``raw`` to the same event, or refuses it with the same words."""
    first, *others = [_outcome(kind(json=library), raw) for library in AVAILABLE]
    for other in others:
        same = other
        if isinstance(first, Event) and isinstance(other, Event) and first.time != other.time:
            # A CloudEvent without 'time' gets the decode time: the one field that may differ.
            assert json.loads(raw).get("time") is None
            same = attrs.evolve(other, time=first.time)
        assert same == first


@pytest.mark.parametrize("kind", [JsonCodec, CloudEventsCodec])
@given(event=events(json_data))
def test_each_library_reads_what_the_other_wrote(kind: CodecType, event: Event) -> None:
    for writer in AVAILABLE:
        raw = kind(json=writer).encode(event)
        for reader in AVAILABLE:
            assert kind(json=reader).decode(raw) == event


@given(event=events(json_data | extra_data))
def test_each_library_reads_what_the_other_wrote_with_tags(event: Event) -> None:
    for writer in AVAILABLE:
        raw = JsonCodec(json=writer).encode(event)
        for reader in AVAILABLE:
            assert JsonCodec(json=reader).decode(raw) == event


EDGE_NUMBERS = [
    2**64,  # past what orjson writes: the stdlib writes it
    2**64 - 1,
    2**63,
    -(2**63) - 1,
    10**30,
    -(10**40),
    1.7976931348623157e308,
    5e-324,
    -0.0,
    0.1,
    "1234567890123456789012345",  # a long run of digits in a string
]


@pytest.mark.parametrize("kind", [JsonCodec, CloudEventsCodec])
@pytest.mark.parametrize("number", EDGE_NUMBERS, ids=repr)
def test_edge_numbers_survive_every_library(kind: CodecType, number: Any) -> None:
    # orjson reads an integer past 64 bits as a float, silently: the codec must not.
    e = full_event({"n": number, "list": [number, {"deep": number}]})
    for writer in AVAILABLE:
        raw = kind(json=writer).encode(e)
        for reader in AVAILABLE:
            decoded = kind(json=reader).decode(raw)
            assert decoded == e
            assert type(decoded.data["n"]) is type(number)
            assert type(decoded.data["list"][1]["deep"]) is type(number)


FOREIGN = [
    ce_bytes(data={"x": 1}) + b"  \n",  # trailing whitespace
    b"  " + ce_bytes(data={"x": 1}),  # leading whitespace
    ce_bytes(data={"x": 1}) + b" x",  # extra data
    ce_bytes(data={"x": 1}).replace(b'"x": 1', b'"x": NaN'),  # the stdlib reads NaN
    ce_bytes(data={"x": 1}).replace(b'"x": 1', b'"x": -Infinity'),
    ce_bytes(data={"x": 1}).replace(b'"x": 1', b'"x": 1e400'),  # past a double
    ce_bytes(data={"x": 1}).replace(b'"x": 1', b'"x": "\\ud800"'),  # a lone surrogate
    ce_bytes(data={"x": 1}).replace(b'"x": 1', b'"x": 1, "x": 2'),  # the last one wins
    b"\xef\xbb\xbf" + ce_bytes(),  # a byte order mark
    ce_bytes(data={"x": "caf\u00e9"}),
    ce_bytes(data=[[[[[[[[1]]]]]]]]),
    b"[" * 2000 + b"]" * 2000,  # deeper than orjson reads
    ce_bytes(data={"x": 1}).replace(b'"x": 1', b'"x": 123456789012345678901234567890'),
    ce_bytes(id="12345678901234567890123"),
    b"{}",
    b"",
    b"\x00",
    b'{"specversion": "1.0",}',  # a trailing comma
]


@pytest.mark.parametrize("kind", [JsonCodec, CloudEventsCodec])
@pytest.mark.parametrize("raw", FOREIGN, ids=range(len(FOREIGN)))
def test_odd_input_gets_the_same_verdict_from_every_library(kind: CodecType, raw: bytes) -> None:
    _same_verdict(kind, raw)


def test_a_json_library_must_be_one_reactor_knows() -> None:
    with pytest.raises(UsageError, match=r"json='simplejson'.*'auto', 'orjson', 'stdlib'"):
        JsonCodec(json="simplejson")
    assert JsonCodec(json="stdlib") == JsonCodec(json="stdlib")
    assert "json='stdlib'" in repr(CloudEventsCodec(json="stdlib"))


def test_orjson_asked_for_but_missing_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(jsontext, "_ORJSON", None)
    with pytest.raises(UsageError, match=r"orjson.*pip install"):
        CloudEventsCodec(json="orjson")
    # "auto" falls back to the stdlib, and the bytes are the same format.
    e = full_event({"n": 1})
    assert CloudEventsCodec(json="auto").decode(CloudEventsCodec(json="stdlib").encode(e)) == e


@pytest.mark.skipif(not HAS_ORJSON, reason="orjson is not installed")
def test_auto_uses_orjson_when_it_is_installed() -> None:
    assert jsontext.json_text("auto").library == "orjson"


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    )
    | st.sampled_from(
        [  # the last microsecond of a second, where a float timestamp could round up
            datetime(2026, 11, 29, 23, 59, 59, 999_999, tzinfo=UTC),
            datetime(2106, 2, 7, 6, 28, 15, 999_999, tzinfo=UTC),  # just below 2**32 s
            datetime(2106, 2, 7, 6, 28, 16, 0, tzinfo=UTC),
            datetime(1970, 1, 1, 0, 0, 0, 999_999, tzinfo=UTC),
        ]
    )
)
def test_times_are_written_in_utc_to_the_microsecond(when: datetime) -> None:
    expected = when.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    assert format_time(when) == expected
    assert format_time(when) == expected  # the second time from the cache of seconds
    assert parse_time(expected, "t") == when
