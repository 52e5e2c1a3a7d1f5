"""Schema versions and upcasters: consumers see only the current shape of a topic's data.

Versions travel in a header through both codecs. Upcasters run before a consumer's
handler on every backend; on the durable ones that covers whatever is read back
from the log: events written by an earlier system with no upcasters at all, a
replay, a redrive. An upcaster that fails dead-letters that event alone, as stored.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest

from reactor import (
    CloudEventsCodec,
    DecodeError,
    Event,
    JsonCodec,
    Topology,
    TopologyError,
    UpcastError,
)
from reactor.messages.event import SCHEMA_VERSION
from reactor.messages.upcasting import Upcasters
from reactor.testing import Recorder

pytestmark = pytest.mark.timeout(60)


# -- versions --------------------------------------------------------------------------


def test_an_event_is_version_1_unless_told_and_version_1_is_never_written() -> None:
    plain = Event.create("order.placed", {"n": 1})
    assert plain.version == 1
    assert SCHEMA_VERSION not in plain.headers
    assert Event.create("order.placed", version=1).headers == {}
    third = Event.create("order.placed", {"n": 1}, version=3, headers={"trace": "t"})
    assert (third.version, dict(third.headers)) == (3, {"trace": "t", SCHEMA_VERSION: "3"})
    assert third.derive("order.billed").version == 1  # a version describes one topic's data
    assert third.derive("order.billed", version=2).version == 2
    assert attrs.evolve(third, headers={}).version == 1


@pytest.mark.parametrize(
    ("version", "error"),
    [(0, ValueError), (-2, ValueError), (True, TypeError), ("2", TypeError), (2.0, TypeError)],
)
def test_a_bad_version_is_refused(version: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="version"):
        Event.create("order.placed", version=version)


@pytest.mark.parametrize("header", ["0", "-1", "two", "", "01", "1.5", "²"])
def test_a_bad_version_header_is_refused(header: str) -> None:
    with pytest.raises(ValueError, match=SCHEMA_VERSION):
        Event.create("order.placed", headers={SCHEMA_VERSION: header})


@pytest.mark.parametrize("codec", [JsonCodec(), CloudEventsCodec()], ids=["json", "cloudevents"])
def test_versions_round_trip_through_the_codecs(codec: Any) -> None:
    for event in (
        Event.create("order.placed", {"n": 1}),
        Event.create("order.placed", {"n": 1}, version=7, headers={"schemaversion": "mine"}),
    ):
        back = codec.decode(codec.encode(event))
        assert back == event
        assert back.version == event.version


def test_cloudevents_carry_the_version_as_an_integer_attribute() -> None:
    codec = CloudEventsCodec()
    text = codec.encode(Event.create("order.placed", {"n": 1}, version=12)).decode()
    assert '"schemaversion":12' in text
    assert "schemaversion" not in codec.encode(Event.create("order.placed")).decode()
    other = b'{"specversion":"1.0","id":"x","source":"s","type":"order.placed"'
    assert codec.decode(other + b',"schemaversion":"4"}').version == 4  # its string form
    assert codec.decode(other + b',"schemaversion":4}').version == 4
    for bad in (b"0", b"true", b'"v2"', b"1.5", b"null"):
        with pytest.raises(DecodeError, match="schemaversion"):
            codec.decode(other + b',"schemaversion":' + bad + b"}")


def test_a_json_event_with_a_bad_version_header_is_a_decode_error() -> None:
    codec = JsonCodec()
    text = codec.encode(Event.create("order.placed", version=2)).replace(b'"2"', b'"zero"')
    with pytest.raises(DecodeError, match=SCHEMA_VERSION):
        codec.decode(text)


# -- upcasters ------------------------------------------------------------------------


def add_currency(data: Mapping[str, Any]) -> dict[str, Any]:
    if data.get("poison"):
        raise KeyError("currency of a poisoned order")
    return {**data, "currency": "EUR"}


def to_cents(data: Mapping[str, Any]) -> dict[str, Any]:
    return {**data, "cents": data["amount"] * 100}


_CHAIN = {"order.placed": {1: add_currency, 2: to_cents}}


def _seen(recorder: Recorder) -> list[tuple[int, dict[str, Any]]]:
    return sorted(
        ((e.version, dict(e.data)) for e in recorder.events), key=lambda seen: seen[1]["amount"]
    )


def test_memory_consumers_see_events_of_older_versions_upcast() -> None:
    """Nothing is read back on memory, but an older publisher's events are upcast alike."""
    recorder = Recorder()
    topo = Topology("shop")
    topo.channel("orders", upcasters=_CHAIN)
    topo.consumer("billing", recorder, channel="orders")
    with topo.start() as system:
        system.publish("orders", "order.placed", {"amount": 1})
        system.publish("orders", "order.placed", {"amount": 2, "currency": "USD"}, version=2)
        system.publish("orders", "order.placed", {"amount": 3, "currency": "GBP", "cents": 1})
        system.publish("orders", "order.placed", {"amount": 4}, version=3)
        system.publish("orders", "order.placed", {"amount": 5}, version=9)  # newer: as it is
        system.publish("orders", "order.paid", {"amount": 6})  # a topic without upcasters
        system.wait_idle(timeout=10)
    assert _seen(recorder) == [
        (3, {"amount": 1, "currency": "EUR", "cents": 100}),
        (3, {"amount": 2, "currency": "USD", "cents": 200}),
        (3, {"amount": 3, "currency": "EUR", "cents": 300}),  # version 1: upcast in full
        (3, {"amount": 4}),
        (9, {"amount": 5}),
        (1, {"amount": 6}),
    ]


def test_events_stored_at_version_1_are_read_back_at_version_3(durable: str) -> None:
    url = durable
    old = Topology("shop")  # yesterday's system: no versions, no upcasters
    old.channel("orders", backend=url)
    old.consumer("audit", lambda e: None, channel="orders", pattern="nothing.yet")
    with old.start() as system:
        for amount in (1, 2):
            system.publish("orders", "order.placed", {"amount": amount})
        system.publish("orders", "order.placed", {"amount": 3, "currency": "USD"}, version=2)
    recorder = Recorder()
    new = Topology("shop")
    new.channel("orders", backend=url, upcasters=_CHAIN)
    new.consumer("billing", recorder, channel="orders")
    with new.start() as system:
        recorder.wait_for_count(3, timeout=10)
        system.publish("orders", "order.placed", {"amount": 4})  # a version-1 publisher now
        system.wait_idle(timeout=10)
    assert _seen(recorder) == [
        (3, {"amount": 1, "currency": "EUR", "cents": 100}),
        (3, {"amount": 2, "currency": "EUR", "cents": 200}),
        (3, {"amount": 3, "currency": "USD", "cents": 300}),
        (3, {"amount": 4, "currency": "EUR", "cents": 400}),
    ]


def test_a_replay_hands_the_log_upcast_again(tmp_path: Path) -> None:
    recorder = Recorder()
    topo = Topology("shop")
    topo.channel("orders", backend=f"sqlite:///{tmp_path / 'orders.db'}", upcasters=_CHAIN)
    topo.consumer("billing", recorder, channel="orders")
    with topo.start() as system:
        system.publish("orders", "order.placed", {"amount": 1})
        recorder.wait_for_count(1, timeout=10)
        system.replay("orders", "billing")
        recorder.wait_for_count(2, timeout=10)
        system.wait_idle(timeout=10)
    assert [e.version for e in recorder.events] == [3, 3]
    assert recorder.events[0] == recorder.events[1]


class _Switch:
    """An upcaster that fails on poisoned orders until it is fixed."""

    def __init__(self) -> None:
        self.fixed = False

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        if data.get("poison") and not self.fixed:
            raise KeyError("currency of a poisoned order")
        return {**data, "currency": "EUR"}


def test_a_raising_upcaster_dead_letters_that_event_alone_as_stored(backend: str) -> None:
    recorder = Recorder()
    upcaster = _Switch()
    topo = Topology("shop")
    topo.channel("orders", backend=backend, upcasters={"order.placed": {1: upcaster}})
    topo.consumer("billing", recorder, channel="orders", max_deliveries=5)
    with topo.start() as system:
        system.publish("orders", "order.placed", {"amount": 1})
        poisoned = system.publish("orders", "order.placed", {"amount": 2, "poison": True})
        system.publish("orders", "order.placed", {"amount": 3})
        system.wait_idle(timeout=10)
        (letter,) = system.dead_letters("orders")
        assert system.state == "running"
        assert [e.data["amount"] for e in recorder.events] == [1, 3]
        # No retry: an upcaster makes the same of the same data every time.
        assert (letter.error_type, letter.attempts) == ("UpcastError", 1)
        assert letter.event == poisoned  # as stored: version 1, nothing lost
        for part in ("_Switch", "'order.placed'", "version 1 to 2", "KeyError", poisoned.id):
            assert part in letter.message
        assert "Traceback" in letter.traceback
        upcaster.fixed = True
        assert system.redrive("orders") == 1
        recorder.wait_for_count(3, timeout=10)
        system.wait_idle(timeout=10)
    last = recorder.events[-1]
    assert (last.id, last.version, last.data["currency"]) == (poisoned.id, 2, "EUR")


@pytest.mark.parametrize(
    ("result", "says"),
    [
        ([("amount", 1)], "returned a list, not a dict"),
        ({"amount": 1, "handle": object()}, "cannot be made immutable"),
    ],
)
def test_an_upcaster_returning_no_dict_of_immutable_values_dead_letters_the_event(
    result: Any, says: str
) -> None:
    recorder = Recorder()
    topo = Topology("shop")
    topo.channel("orders", upcasters={"order.placed": {1: lambda data: result}})
    topo.consumer("billing", recorder, channel="orders")
    with topo.start() as system:
        system.publish("orders", "order.placed", {"amount": 1})
        system.publish("orders", "order.paid", {"amount": 2})
        system.wait_idle(timeout=10)
        (letter,) = system.dead_letters("orders")
    assert letter.error_type == "UpcastError"
    assert says in letter.message
    assert [e.topic for e in recorder.events] == ["order.paid"]


def test_batch_and_async_consumers_see_upcast_events() -> None:
    batches: list[list[Event]] = []
    awaited = Recorder()

    async def handle(event: Event) -> None:
        await asyncio.sleep(0)
        awaited(event)

    topo = Topology("shop")
    topo.channel("orders", upcasters=_CHAIN)
    topo.consumer("store", batches.append, channel="orders", batch_size=2, batch_timeout=0.05)
    topo.consumer("notify", handle, channel="orders")
    with topo.start() as system:
        for amount in (1, 2, 3):
            system.publish("orders", "order.placed", {"amount": amount})
        system.wait_idle(timeout=10)
    batched = [event for batch in batches for event in batch]
    for events in (batched, awaited.events):
        assert sorted(e.data["cents"] for e in events) == [100, 200, 300]
        assert {e.version for e in events} == {3}


def test_upcasters_chain_in_version_order_and_know_the_current_version() -> None:
    calls: list[str] = []

    def step(name: str) -> Any:
        def upcast(data: Mapping[str, Any]) -> dict[str, Any]:
            calls.append(name)
            return {**data, "path": [*data.get("path", ()), name]}

        return upcast

    upcasters = Upcasters.of("orders", {"t.x": {3: step("3"), 1: step("1"), 2: step("2")}})
    assert upcasters is not None
    assert (upcasters.current("t.x"), upcasters.current("t.other")) == (4, 1)
    event = Event.create("t.x", {"n": 1}, version=2, key="k")
    upcast = upcasters.upcast(event)
    assert calls == ["2", "3"]
    assert upcast.data == {"n": 1, "path": ("2", "3")}
    assert (upcast.id, upcast.key, upcast.time, upcast.version) == (event.id, "k", event.time, 4)
    assert Upcasters.of("orders", {}) is None
    with pytest.raises(UpcastError):
        Upcasters.of("orders", {"t.x": {1: lambda data: 1 / 0}}).upcast(  # type: ignore[union-attr]
            Event.create("t.x")
        )


# -- declarations ----------------------------------------------------------------------


def _problems(upcasters: Any) -> tuple[str, ...]:
    topo = Topology("shop")
    topo.channel("orders", upcasters=upcasters)
    with pytest.raises(TopologyError) as info:
        topo.validate()
    return info.value.problems


def test_a_gap_in_the_chain_is_one_clear_problem() -> None:
    (problem,) = _problems({"order.placed": {1: add_currency, 3: to_cents}})
    assert "channel 'orders'" in problem
    assert "no step for version 2" in problem
    (problem,) = _problems({"order.placed": {2: to_cents}})  # a chain starts at 1
    assert "no step for version 1" in problem


def test_a_version_below_1_and_a_non_callable_are_one_problem_each() -> None:
    problems = _problems({"order.placed": {0: add_currency, 1: "shop:add_currency"}})
    assert len(problems) == 2
    assert "version 0 is not a whole number >= 1" in problems[0]
    assert "for version 1 must be a function" in problems[1]
    (problem,) = _problems({"order.placed": {"1": add_currency}})
    assert "version '1' is not a whole number" in problem
    (problem,) = _problems({"order..placed": {1: add_currency}})
    assert "invalid topic" in problem
    (problem,) = _problems(["order.placed"])
    assert "upcasters must map a topic" in problem


def test_the_decorator_declares_a_step_and_refuses_twice_and_unknown_channels() -> None:
    topo = Topology("shop")
    topo.channel("orders")

    @topo.upcaster("orders", "order.placed", version=1)
    def first(data: Mapping[str, Any]) -> dict[str, Any]:
        return {**data, "currency": "EUR"}

    assert topo.channels["orders"].upcasters == {"order.placed": {1: first}}
    with pytest.raises(TopologyError, match="has an upcaster for version 1 already"):
        topo.upcaster("orders", "order.placed", version=1)(first)
    with pytest.raises(TopologyError, match="unknown channel 'order'"):
        topo.upcaster("order", "order.placed", version=1)
    topo.validate()


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


_HANDLERS = """
    from reactor.testing import Recorder

    seen = Recorder()
    LIMIT = 10

    def v1_to_v2(data):
        return {**data, "currency": "EUR"}

    def v2_to_v3(data):
        return {**data, "cents": data["amount"] * 100}
"""


def test_a_toml_file_declares_upcasters_by_reference(tmp_path: Path) -> None:
    _write(tmp_path, "upcast_shop.py", _HANDLERS)
    path = _write(
        tmp_path,
        "shop.toml",
        """
        [channels.orders]
        max_event_size = 4096

        [channels.orders.upcasters."order.placed"]
        1 = "upcast_shop:v1_to_v2"
        2 = "upcast_shop:v2_to_v3"

        [consumers.billing]
        channel = "orders"
        handler = "upcast_shop:seen"
        """,
    )
    topo = Topology.from_toml(path)
    assert topo.channels["orders"].max_event_size == 4096
    seen = topo.consumers()[0].handler
    with topo.start() as system:
        system.publish("orders", "order.placed", {"amount": 2})
        system.wait_idle(timeout=10)
    assert [(e.version, dict(e.data)) for e in seen.events] == [
        (3, {"amount": 2, "currency": "EUR", "cents": 200})
    ]


def test_toml_upcaster_problems_are_reported_on_their_lines(tmp_path: Path) -> None:
    _write(tmp_path, "upcast_bad.py", _HANDLERS)
    path = _write(
        tmp_path,
        "shop.toml",
        """
        [channels.orders]
        max_event_size = 0

        [channels.orders.upcasters."order.placed"]
        1 = "upcast_bad:v1_to_v2"
        3 = "upcast_bad:v2_to_v3"

        [channels.orders.upcasters."order.paid"]
        1 = "upcast_bad:LIMIT"
        0 = "upcast_bad:v1_to_v2"
        2 = "upcast_bad:missing"
        3 = 5

        [channels.audit]
        upcasters = { "a.b" = "upcast_bad:v1_to_v2" }
        """,
    )
    with pytest.raises(TopologyError) as info:
        Topology.from_toml(path)
    problems = info.value.problems
    expected = [
        ("line 4:", "'order.placed' have no step for version 2"),
        ("line 9:", "for version 1 must be a function"),
        ("line 10:", "version 0 is not a whole number >= 1"),
        ("line 11:", "cannot resolve 'upcast_bad:missing'"),
        ("line 12:", "must be a 'module:function' reference, got 5"),
        ("line 15:", 'channels.audit.upcasters."a.b" must be a table'),
        ("line 2:", "max_event_size must be a positive integer"),
    ]
    assert len(problems) == len(expected), problems
    for (line, text), problem in zip(expected, sorted(problems, key=_line_then_text), strict=True):
        assert f"shop.toml: {line}" in problem
        assert text in problem


def _line_then_text(problem: str) -> tuple[int, str]:
    line = problem.split("line ", 1)[1].split(":", 1)[0]
    order = {"2": 99}  # the declaration's own checks come after the file's
    return (order.get(line, int(line)), problem)


def test_a_projection_folds_events_upcast_and_a_rebuild_folds_them_alike(tmp_path: Path) -> None:
    def total(state: Any, event: Event) -> Any:
        return state + event.data["cents"]  # only version 3 has cents

    url = f"sqlite:///{tmp_path / 'orders.db'}"
    old = Topology("shop")
    old.channel("orders", backend=url)
    with old.start() as system:
        system.publish("orders", "order.placed", {"amount": 1})
    new = Topology("shop")
    new.channel("orders", backend=url, upcasters=_CHAIN)
    new.projection("revenue", total, channel="orders", pattern="order.placed", initial=0)
    with new.start() as system:
        system.publish("orders", "order.placed", {"amount": 2, "currency": "USD"}, version=2)
        system.wait_idle(timeout=10)
        assert system.projection("revenue").state == 300
        assert system.rebuild_projection("revenue").state == 300
